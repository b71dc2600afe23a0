"""CoxPH takes scikit-survival's target convention, so scikit-learn's model selection runs it unchanged."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import survival


def _structured(event, time):
    from sksurv.util import Surv

    return Surv.from_arrays(np.asarray(event).astype(bool), np.asarray(time, dtype=float))


def test_target_forms_give_the_same_fit(synthetic_survival):
    X, time, event, _ = synthetic_survival
    reference = survival.CoxPH().fit(X, time, event).coef_
    forms = {
        "structured": _structured(event, time),
        "frame": pd.DataFrame({"status": event, "days": time}),
        "array": np.c_[event, time],
    }
    for name, y in forms.items():
        model = survival.CoxPH().fit(X, y)
        np.testing.assert_allclose(model.coef_, reference, rtol=1e-12, err_msg=name)
        assert model.score(X, y) == pytest.approx(model.score(X, time, event)), name


def test_target_errors_name_the_convention(synthetic_survival):
    X, time, event, _ = synthetic_survival
    with pytest.raises(ValueError, match="holds no event"):
        survival.CoxPH().fit(X, time)
    with pytest.raises(ValueError, match="swapped"):
        survival.CoxPH().fit(X, np.c_[time, event])
    with pytest.raises(ValueError, match="two columns"):
        survival.CoxPH().fit(X, pd.DataFrame({"e": event, "t": time, "z": time}))


def test_grid_search_cross_val_score_and_pipeline(synthetic_survival):
    from sklearn.model_selection import GridSearchCV, KFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, time, event, _ = synthetic_survival
    y = _structured(event, time)
    folds = KFold(3, shuffle=True, random_state=0)
    search = GridSearchCV(survival.CoxPH(), {"alpha": [0.0, 1e4], "ties": ["efron", "breslow"]}, cv=folds)
    search.fit(X, y)
    # A huge penalty shrinks the coefficients towards 0 but keeps their ranking, so the C-index barely moves;
    # the search must still have scored every candidate with our C-index on held-out folds.
    scores = search.cv_results_["mean_test_score"]
    assert np.all((scores > 0.6) & (scores < 0.85))
    by_hand = [
        survival.CoxPH(**search.best_params_)
        .fit(X[tr], time[tr], event[tr])
        .score(X[te], time[te], event[te])
        for tr, te in folds.split(X)
    ]
    assert search.best_score_ == pytest.approx(np.mean(by_hand))
    assert search.best_estimator_.coef_.shape == (3,)

    cv = cross_val_score(survival.CoxPH(), X, y, cv=folds)
    assert cv.shape == (3,) and np.all(cv > 0.6)

    pipe = make_pipeline(StandardScaler(), survival.CoxPH()).fit(X, y)
    np.testing.assert_allclose(
        pipe[-1].coef_, survival.CoxPH().fit(X, time, event).coef_ * X.std(0), rtol=1e-6
    )
    assert pipe.score(X, y) == pytest.approx(survival.CoxPH().fit(X, time, event).score(X, time, event))

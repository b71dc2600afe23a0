"""MILEstimator keeps scikit-learn's contract: common checks, cross_val_score, GridSearchCV."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.utils.estimator_checks import check_estimator, estimator_checks_generator

import mil
from tests.mil.synthetic_bags import synthetic_bags

SMALL = {"epochs": 5, "batch_size": 8, "lr": 3e-3, "model_kwargs": {"embed_dim": 16}}

# scikit-learn's common checks pass 2-D arrays, which MILEstimator reads as bags of one tile each, so they all
# apply (`test_scikit_learn_common_checks`, marked slow: about a minute of CPU). What is specific to bags (lists of
# (n_i, d) arrays of different lengths, attention) is tested below. The default run keeps the API checks:
API_CHECKS = {
    "check_no_attributes_set_in_init",
    "check_parameters_default_constructible",
    "check_get_params_invariance",
    "check_set_params",
    "check_dont_overwrite_parameters",
    "check_estimators_unfitted",
    "check_n_features_in_after_fitting",
    "check_fit_idempotent",
    "check_estimators_nan_inf",
    "check_classifiers_regression_target",
    "check_classifier_not_supporting_multiclass",
}
CHECKED = mil.MILEstimator(epochs=10, batch_size=8, lr=1e-2, model_kwargs={"embed_dim": 16})


def _data(n=40, seed=0):
    bags, y = synthetic_bags("binary", n, seed)
    return bags, np.where(y.astype(int) == 1, "tumour", "normal")


def test_contract_params_and_fitted_attributes():
    est = mil.MILEstimator(model="mean", epochs=3)
    assert est.get_params()["model"] == "mean"
    assert clone(est.set_params(lr=1e-3)).lr == 1e-3
    bags, y = _data()
    assert est.fit(bags, y) is est
    assert list(est.classes_) == ["normal", "tumour"] and est.n_features_in_ == bags[0].shape[1]
    assert set(est.predict(bags)) <= {"normal", "tumour"}
    proba = est.predict_proba(bags)
    assert proba.shape == (40, 2) and np.allclose(proba.sum(axis=1), 1)
    assert est.decision_function(bags).shape == (40,)
    attention = est.attention(bags)
    assert [len(a) for a in attention] == [len(b) for b in bags]


def test_learns_and_scores():
    bags, y = _data(60)
    test_bags, test_y = _data(60, 1)
    est = mil.MILEstimator(validation_fraction=0.2, **{**SMALL, "epochs": 10, "lr": 1e-2}).fit(bags, y)
    # Ranking (AUC) is the learned part; the accuracy also depends on a threshold picked on 12 validation bags.
    assert roc_auc_score(test_y == "tumour", est.decision_function(test_bags)) >= 0.95
    assert est.score(test_bags, test_y) >= 0.8  # accuracy; 3 in 4 bags are positive


def test_cross_val_score_and_grid_search():
    bags, y = _data(48)
    scores = cross_val_score(mil.MILEstimator(**SMALL), bags, y, cv=3)
    assert scores.shape == (3,) and np.all((scores >= 0) & (scores <= 1))
    search = GridSearchCV(mil.MILEstimator(**SMALL), {"model": ["abmil", "max"]}, cv=2).fit(bags, y)
    assert search.best_params_["model"] in ("abmil", "max")
    assert search.predict(bags).shape == (48,)


@pytest.mark.parametrize("task", ["grade", "survival", "mutation", "multiclass"])
def test_other_tasks(task):
    bags, y = synthetic_bags(task, 40, 0)
    kwargs = {"grade": {"levels": 4}, "mutation": {"targets": ["a", "b"]}}.get(task)
    est = mil.MILEstimator(task=task, task_kwargs=kwargs, **SMALL).fit(bags, y)
    assert np.isfinite(est.score(bags, y))
    assert len(est.predict(bags)) == 40


def test_bad_input():
    bags, y = _data(10)
    est = mil.MILEstimator(**SMALL)
    with pytest.raises(ValueError, match="one class"):
        est.fit(bags, ["a"] * 10)
    with pytest.raises(ValueError, match="use task='multiclass'"):
        est.fit(bags, ["a", "b", "c"] * 3 + ["a"])
    est.fit(bags, y)
    with pytest.raises(ValueError, match="X has 3 features, but MILEstimator is expecting 8"):
        est.predict([np.zeros((4, 3))])


def _name(check) -> str:
    return getattr(check, "func", check).__name__


@pytest.mark.parametrize(
    "check",
    [c for _, c in estimator_checks_generator(CHECKED, mark="skip") if _name(c) in API_CHECKS],
    ids=_name,
)
def test_scikit_learn_api_checks(check):
    check(clone(CHECKED))


@pytest.mark.slow
def test_scikit_learn_common_checks():
    check_estimator(clone(CHECKED))


def test_empty_bags_skipped_in_fit_and_refused_in_predict():
    bags, y = _data(12)
    bags[4] = np.zeros((0, bags[0].shape[1]), np.float32)
    est = mil.MILEstimator(**{**SMALL, "epochs": 1})
    with pytest.warns(UserWarning, match=r"skipping 1 bag\(s\) without tiles: \[4\]"):
        est.fit(bags, y)
    assert est.predict(bags[:4]).shape == (4,)
    with pytest.raises(ValueError, match=r"bag\(s\) \[4\] have no tiles"):
        est.predict(bags)

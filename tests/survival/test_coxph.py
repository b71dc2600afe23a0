"""CoxPH against lifelines and scikit-survival on real data, both tie methods."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import survival


def _rossi_xy(rossi):
    return rossi.drop(columns=["week", "arrest"]), rossi["week"].to_numpy(), rossi["arrest"].to_numpy()


def test_efron_matches_lifelines(rossi):
    from lifelines import CoxPHFitter

    X, t, e = _rossi_xy(rossi)
    ref = CoxPHFitter().fit(rossi, "week", "arrest")
    model = survival.CoxPH(ties="efron").fit(X, t, e)
    np.testing.assert_allclose(model.coef_, ref.params_[X.columns].to_numpy(), rtol=1e-4)
    np.testing.assert_allclose(model.se_, ref.standard_errors_[X.columns].to_numpy(), rtol=1e-4)
    assert model.loglik_ == pytest.approx(ref.log_likelihood_, rel=1e-4)
    assert list(model.summary.index) == list(X.columns)
    np.testing.assert_allclose(model.summary["p"], ref.summary.loc[X.columns, "p"], rtol=1e-3)
    np.testing.assert_allclose(
        model.predict(X), ref.predict_log_partial_hazard(X).to_numpy(), rtol=1e-4, atol=1e-6
    )
    times = np.array([10.0, 30.0, 52.0])
    _, surv = model.predict_survival(X.iloc[:5], times)
    ref_surv = ref.predict_survival_function(X.iloc[:5], times=times).to_numpy().T
    np.testing.assert_allclose(surv, ref_surv, rtol=1e-3)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_matches_scikit_survival(rossi, ties):
    from sksurv.linear_model import CoxPHSurvivalAnalysis
    from sksurv.util import Surv

    X, t, e = _rossi_xy(rossi)
    y = Surv.from_arrays(e.astype(bool), t.astype(float))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = CoxPHSurvivalAnalysis(ties=ties, tol=1e-12, n_iter=200).fit(X.to_numpy(float), y)
    model = survival.CoxPH(ties=ties).fit(X, t, e)
    np.testing.assert_allclose(model.coef_, ref.coef_, rtol=1e-4)
    # sksurv reports the log-likelihood of its last iteration; compare through our own evaluation.
    data = survival.SortedSurvival.build(t.astype(float), e.astype(bool), ties)
    ll_ref = survival.partial_likelihood(
        data, (X.to_numpy(float) - X.to_numpy(float).mean(0)) @ ref.coef_
    ).loglik
    assert model.loglik_ == pytest.approx(ll_ref, rel=1e-4)


def test_breslow_and_efron_differ_with_ties(rossi):
    X, t, e = _rossi_xy(rossi)
    a = survival.CoxPH(ties="efron").fit(X, t, e)
    b = survival.CoxPH(ties="breslow").fit(X, t, e)
    assert a.loglik_ != pytest.approx(b.loglik_, rel=1e-6)


def test_score_is_harrell_c(rossi):
    X, t, e = _rossi_xy(rossi)
    model = survival.CoxPH().fit(X, t, e)
    assert model.score(X, t, e) == pytest.approx(survival.concordance_index(t, e, model.predict(X)))
    assert 0.6 < model.score(X, t, e) < 0.7


def test_recovers_true_coefficients(synthetic_survival):
    X, time, event, true = synthetic_survival
    model = survival.CoxPH().fit(X, time, event)
    lower, upper = model.confidence_intervals().T
    assert np.all((lower < true) & (true < upper))


def test_l2_penalty_shrinks(synthetic_survival):
    X, time, event, _ = synthetic_survival
    free = survival.CoxPH().fit(X, time, event)
    ridge = survival.CoxPH(alpha=50.0).fit(X, time, event)
    assert np.linalg.norm(ridge.coef_) < 0.8 * np.linalg.norm(free.coef_)
    # Optimality of the penalised problem: gradient of the log-likelihood equals alpha * beta.
    data = survival.SortedSurvival.build(time.astype(float), event.astype(bool), "efron")
    Xc = X - X.mean(0)
    grad = survival.partial_likelihood(data, Xc @ ridge.coef_, Xc).gradient
    np.testing.assert_allclose(grad, 50.0 * ridge.coef_, atol=1e-6)


def test_sklearn_contract(synthetic_survival):
    from sklearn.base import clone

    model = survival.CoxPH(ties="breslow", alpha=0.1)
    assert clone(model).get_params() == {
        "ties": "breslow",
        "alpha": 0.1,
        "tol": 1e-9,
        "max_iter": 100,
        "ci": 0.95,
    }
    with pytest.raises(RuntimeError, match="not fitted"):
        model.predict(np.zeros((2, 3)))
    X, time, event, _ = synthetic_survival
    assert model.fit(X, time, event) is model
    with pytest.raises(ValueError, match="3"):
        model.predict(np.zeros((2, 2)))


def test_information_is_minus_numeric_hessian(synthetic_survival):
    X, time, event, _ = synthetic_survival
    for ties in ("efron", "breslow"):
        data = survival.SortedSurvival.build(time.astype(float), event.astype(bool), ties)
        beta = np.array([0.3, -0.2, 0.1])
        pl = survival.partial_likelihood(data, X @ beta, X)
        eps = 1e-6
        numeric = np.zeros((3, 3))
        for j in range(3):
            d = np.zeros(3)
            d[j] = eps
            up = survival.partial_likelihood(data, X @ (beta + d), X).gradient
            down = survival.partial_likelihood(data, X @ (beta - d), X).gradient
            numeric[:, j] = (up - down) / (2 * eps)
        np.testing.assert_allclose(pl.information, -numeric, rtol=1e-5, atol=1e-6)


class TestBadInput:
    def test_negative_time(self):
        with pytest.raises(ValueError, match="negative"):
            survival.CoxPH().fit(np.ones((3, 1)), [1, -2, 3], [1, 0, 1])

    def test_nan_time(self):
        with pytest.raises(ValueError, match="NaN"):
            survival.CoxPH().fit(np.ones((3, 1)), [1, np.nan, 3], [1, 0, 1])

    def test_event_values(self):
        with pytest.raises(ValueError, match=r"0 \(censored\) or 1"):
            survival.CoxPH().fit(np.ones((3, 1)), [1, 2, 3], [1, 2, 1])

    def test_no_events(self):
        with pytest.raises(ValueError, match="no events"), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            survival.CoxPH().fit(np.arange(6.0)[:, None], np.arange(1, 7), np.zeros(6))

    def test_constant_covariate(self, synthetic_survival):
        X, time, event, _ = synthetic_survival
        X = np.c_[X, np.ones(len(X))]
        with pytest.raises(ValueError, match=r"constant covariate.*x3"):
            survival.CoxPH().fit(X, time, event)

    def test_collinear(self, synthetic_survival):
        import pandas as pd

        X, time, event, _ = synthetic_survival
        df = pd.DataFrame({"a": X[:, 0], "b": X[:, 1], "a_plus_b": X[:, 0] + X[:, 1]})
        with pytest.raises(ValueError, match="collinear.*a_plus_b"):
            survival.CoxPH().fit(df, time, event)
        survival.CoxPH(alpha=1.0).fit(df, time, event)  # a penalty makes it identifiable

    def test_mismatched_lengths(self):
        with pytest.raises(ValueError, match="X has 4 rows"):
            survival.CoxPH().fit(np.ones((4, 1)), [1, 2, 3], [1, 0, 1])
        with pytest.raises(ValueError, match="different lengths"):
            survival.concordance_index([1, 2], [1], [0.1, 0.2])

"""CoxPH refuses what has no finite estimate and warns when a fit does not converge, naming the covariates."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy.stats import rankdata

import survival


@pytest.fixture
def outcome():
    rng = np.random.default_rng(0)
    n = 200
    return rng, rng.exponential(1.0, n).round(2), rng.integers(0, 2, n)


def test_perfect_separation_is_named_with_the_remedy(outcome):
    rng, time, event = outcome
    X = pd.DataFrame({"age": rng.normal(60, 8, len(time)), "marker": event * 3.0})  # events all have marker 3
    with pytest.raises(ValueError, match=r"perfect separation.*highest 'marker'.*alpha"):
        survival.CoxPH().fit(X, time, event)
    marker = rankdata(time, method="min")  # the earlier the time, the lower the marker: a perfect order
    X["marker"] = (marker - marker.mean()) / marker.std()
    with pytest.raises(ValueError, match=r"lowest 'marker'"):
        survival.CoxPH().fit(X, time, event)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model = survival.CoxPH(alpha=0.1).fit(X, time, event)  # the remedy the message gives
    assert model.converged_ and np.isfinite(model.se_).all()


def test_quasi_separation_of_a_binary_covariate(outcome):
    rng, time, event = outcome
    treated = np.where(event == 1, 1.0, rng.integers(0, 2, len(time)))  # every event treated, not the reverse
    with pytest.raises(ValueError, match=r"perfect separation.*'treated'"):
        survival.CoxPH().fit(pd.DataFrame({"treated": treated}), time, event)


def test_separation_by_a_combination_warns_and_stops(outcome):
    rng, time, event = outcome
    order = -rankdata(time, method="min")
    a = rng.normal(0, 50, len(time))
    X = pd.DataFrame(
        {"a": a, "b": order - a, "noise": rng.normal(size=len(time))}
    )  # a + b orders every event
    with pytest.warns(survival.ConvergenceWarning, match=r"diverged.*involved: a, b\. .*alpha") as record:
        model = survival.CoxPH().fit(X, time, event)
    assert "noise" not in str(record[0].message)
    assert not model.converged_ and model.n_iter_ < model.max_iter


def test_near_singular_information_warns(outcome):
    rng, time, event = outcome
    a = rng.normal(size=len(time))
    X = pd.DataFrame(
        {"a": a, "a_copy": a + 1e-7 * rng.normal(size=len(time)), "c": rng.normal(size=len(time))}
    )
    with pytest.warns(
        survival.ConvergenceWarning, match=r"condition number is .*e\+1\d.*involved: a, a_copy\. "
    ):
        model = survival.CoxPH().fit(X, time, event)
    assert not model.converged_


def test_iteration_limit_warns(rossi):
    X = rossi.drop(columns=["week", "arrest"])
    with pytest.warns(survival.ConvergenceWarning, match="did not converge in 1 iterations"):
        survival.CoxPH(max_iter=1).fit(X, rossi.week, rossi.arrest)


def test_ordinary_data_fits_without_warnings(rossi, synthetic_survival):
    X, time, event, _ = synthetic_survival
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for ties in ("efron", "breslow"):
            model = survival.CoxPH(ties=ties).fit(
                rossi.drop(columns=["week", "arrest"]), rossi.week, rossi.arrest
            )
            assert model.converged_ and model.n_iter_ <= 10
        assert survival.CoxPH().fit(X, time, event).converged_


def test_constant_and_collinear_messages_give_the_remedy(synthetic_survival):
    X, time, event, _ = synthetic_survival
    with pytest.raises(ValueError, match=r"constant covariate.*x3.*alpha"):
        survival.CoxPH().fit(np.c_[X, np.ones(len(X))], time, event)
    with pytest.raises(ValueError, match=r"collinear.*x0, x1, x3.*alpha"):
        survival.CoxPH().fit(np.c_[X, X[:, 0] - 2 * X[:, 1]], time, event)

"""Concordance, Kaplan-Meier, log-rank and hazard ratios against lifelines and scikit-survival."""

from __future__ import annotations

import numpy as np
import pytest

import survival


@pytest.fixture
def rossi_risk(rossi):
    X = rossi.drop(columns=["week", "arrest"])
    risk = survival.CoxPH().fit(X, rossi.week, rossi.arrest).predict(X)
    return rossi.week.to_numpy(float), rossi.arrest.to_numpy(), risk


@pytest.mark.parametrize("decimals", [None, 1, 0])  # rounding makes tied risks
def test_harrell_matches_lifelines_and_sksurv(rossi_risk, decimals):
    from lifelines.utils import concordance_index as lifelines_ci
    from sksurv.metrics import concordance_index_censored

    time, event, risk = rossi_risk
    if decimals is not None:
        risk = np.round(risk, decimals)
    ours = survival.concordance_index(time, event, risk)
    assert ours == pytest.approx(lifelines_ci(time, -risk, event), abs=1e-9)
    assert ours == pytest.approx(concordance_index_censored(event.astype(bool), time, risk)[0], abs=1e-9)


def test_harrell_brute_force_small():
    rng = np.random.default_rng(3)
    time = rng.integers(1, 6, 40).astype(float)
    event = rng.integers(0, 2, 40)
    risk = rng.integers(0, 4, 40).astype(float)
    num = den = 0.0
    for i in range(40):
        for j in range(40):
            if event[i] and (time[i] < time[j] or (time[i] == time[j] and not event[j])):
                den += 1
                num += 1.0 if risk[i] > risk[j] else 0.5 if risk[i] == risk[j] else 0.0
    assert survival.concordance_index(time, event, risk) == pytest.approx(num / den, abs=1e-12)


@pytest.mark.parametrize("tau", [20.0, 45.0])
def test_uno_matches_sksurv(rossi_risk, tau):
    from sksurv.metrics import concordance_index_ipcw
    from sksurv.util import Surv

    time, event, risk = rossi_risk
    y = Surv.from_arrays(event.astype(bool), time)
    ref = concordance_index_ipcw(y, y, risk, tau=tau)[0]
    assert survival.concordance_index_ipcw(time, event, time, event, risk, tau=tau) == pytest.approx(
        ref, abs=1e-9
    )


def test_kaplan_meier_matches_lifelines(rossi):
    from lifelines import KaplanMeierFitter

    ref = KaplanMeierFitter().fit(rossi.week, rossi.arrest)
    km = survival.kaplan_meier(rossi.week, rossi.arrest)
    np.testing.assert_allclose(km.timeline, ref.survival_function_.index.to_numpy())
    np.testing.assert_allclose(km.survival, ref.survival_function_.iloc[:, 0].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(km.lower, ref.confidence_interval_.iloc[:, 0].to_numpy(), rtol=1e-6)
    np.testing.assert_allclose(km.upper, ref.confidence_interval_.iloc[:, 1].to_numpy(), rtol=1e-6)
    assert km.median == ref.median_survival_time_  # inf: fewer than half re-arrested


def test_kaplan_meier_median_and_lookup():
    km = survival.kaplan_meier([1, 2, 3, 4, 5, 6], [1, 1, 1, 1, 0, 0])
    assert km.median == 3.0
    np.testing.assert_allclose(km.survival_at([0.5, 1, 2.5, 10]), [1.0, 5 / 6, 4 / 6, 2 / 6])


def test_logrank_matches_lifelines(rossi):
    from lifelines.statistics import logrank_test as ll_two
    from lifelines.statistics import multivariate_logrank_test

    two = survival.logrank_test(rossi.week, rossi.arrest, rossi.fin)
    a, b = rossi[rossi.fin == 0], rossi[rossi.fin == 1]
    ref = ll_two(a.week, b.week, a.arrest, b.arrest)
    assert two.statistic == pytest.approx(ref.test_statistic, rel=1e-9)
    assert two.p_value == pytest.approx(ref.p_value, rel=1e-9)
    groups = rossi.age // 10
    multi = survival.logrank_test(rossi.week, rossi.arrest, groups)
    ref = multivariate_logrank_test(rossi.week, groups, rossi.arrest)
    assert multi.df == groups.nunique() - 1
    assert multi.statistic == pytest.approx(ref.test_statistic, rel=1e-8)


def test_logrank_needs_two_groups():
    with pytest.raises(ValueError, match="two groups"):
        survival.logrank_test([1, 2], [1, 1], ["a", "a"])


def test_hazard_ratio_matches_lifelines(rossi):
    from lifelines import CoxPHFitter

    hr = survival.hazard_ratio(rossi.week, rossi.arrest, rossi.fin)
    ref = CoxPHFitter().fit(rossi[["week", "arrest", "fin"]], "week", "arrest").summary.loc["fin"]
    assert hr.hazard_ratio == pytest.approx(ref["exp(coef)"], rel=1e-5)
    assert hr.lower == pytest.approx(ref["exp(coef) lower 95%"], rel=1e-5)
    assert hr.upper == pytest.approx(ref["exp(coef) upper 95%"], rel=1e-5)
    assert hr.p_value == pytest.approx(ref["p"], rel=1e-4)
    with pytest.raises(ValueError, match="single value"):
        survival.hazard_ratio([1, 2, 3], [1, 1, 1], [1, 1, 1])


def test_no_events_warns():
    with pytest.warns(UserWarning, match="no events"):
        survival.kaplan_meier([1, 2, 3], [0, 0, 0])

"""Risk groups and cross-validated risk: out-of-fold by construction, and less optimistic than in-sample."""

from __future__ import annotations

import numpy as np
import pytest

import survival


def test_stratified_folds_share_the_events():
    event = np.r_[np.ones(23), np.zeros(40)].astype(int)
    fold = survival.stratified_folds(event, 5, seed=3)
    assert sorted(np.unique(fold)) == [0, 1, 2, 3, 4]
    per_fold = np.bincount(fold, weights=event)
    assert per_fold.max() - per_fold.min() <= 1
    assert np.bincount(fold).max() - np.bincount(fold).min() <= 1
    assert np.array_equal(fold, survival.stratified_folds(event, 5, seed=3))
    assert not np.array_equal(fold, survival.stratified_folds(event, 5, seed=4))
    with pytest.raises(ValueError, match="at least 5 events"):
        survival.stratified_folds([1, 1, 0, 0, 0, 0], 5)


def test_risk_groups_cut_at_reference_quantiles():
    assert survival.risk_groups([1, 2, 3, 4], 2).tolist() == [0, 0, 1, 1]
    assert survival.risk_groups([0.0, 10.0], 2, reference=[1, 2, 3, 4, 5]).tolist() == [0, 1]
    assert survival.risk_groups(np.zeros(6), 3).tolist() == [2] * 6  # tied risks share one group
    with pytest.raises(ValueError, match="between 2 and 10"):
        survival.risk_groups([1, 2], 1)


def test_each_fold_is_predicted_by_a_model_that_did_not_see_it(synthetic_survival):
    X, time, event, _ = synthetic_survival
    cv = survival.cross_validated_risk(survival.CoxPH(), X, time, event, n_folds=4, n_groups=3, seed=1)
    for k in range(4):
        train, test = cv.fold != k, cv.fold == k
        model = survival.CoxPH().fit(X[train], time[train], event[train])
        np.testing.assert_allclose(cv.risk[test], model.predict(X[test]))
        expected = survival.risk_groups(model.predict(X[test]), 3, reference=model.predict(X[train]))
        assert np.array_equal(cv.group[test], expected)
        assert cv.fold_c_index[k] == pytest.approx(model.score(X[test], time[test], event[test]))
    assert cv.c_index == pytest.approx(survival.concordance_index(time, event, cv.risk))
    assert 0.65 < cv.c_index < 0.8  # real signal survives cross-validation


def test_cross_validation_removes_the_optimism_of_noise():
    rng = np.random.default_rng(0)
    n = 120
    X = rng.normal(size=(n, 10))  # no covariate has anything to do with the outcome
    time, event = rng.exponential(1.0, n), rng.random(n) < 0.7
    in_sample = survival.CoxPH().fit(X, time, event).score(X, time, event)
    cv = survival.cross_validated_risk(survival.CoxPH(), X, time, event, n_folds=5)
    assert in_sample > cv.c_index + 0.05 and cv.c_index < 0.5

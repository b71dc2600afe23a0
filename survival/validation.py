"""Risk groups and cross-validated risk: the figures a paper can report without in-sample optimism.

Cross-validated risk follows Simon et al. (2011, Briefings in Bioinformatics 12:203): each sample's risk comes
from a model fitted without its fold, and its risk group from cut points of that model's own training risks,
so no sample's group depends on its outcome.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from survival._checks import check_survival
from survival.concordance import concordance_index

__all__ = ["CrossValidatedRisk", "cross_validated_risk", "risk_groups", "stratified_folds"]


def risk_groups(risk, n_groups: int, reference=None) -> np.ndarray:
    """Group 0 (lowest risk) .. n_groups - 1 of each `risk`, cut at the quantiles of `reference` (default: the
    risks themselves). Tied risks share a group, so fewer groups than asked may be filled."""
    if not 2 <= n_groups <= 10:
        raise ValueError(f"the number of risk groups must be between 2 and 10, got {n_groups}")
    risk = np.asarray(risk, dtype=np.float64)
    reference = risk if reference is None else np.asarray(reference, dtype=np.float64)
    edges = np.quantile(reference, np.linspace(0, 1, n_groups + 1)[1:-1])
    return np.searchsorted(edges, risk, side="right")


def stratified_folds(event, n_folds: int, seed: int = 0) -> np.ndarray:
    """Fold index of each sample: events and censored samples are each shuffled and dealt round the folds, so
    every fold gets its share of events."""
    event = np.asarray(event).astype(bool)
    if not 2 <= n_folds <= len(event):
        raise ValueError(f"the number of folds must be between 2 and the number of samples, got {n_folds}")
    if n_folds > event.sum():
        raise ValueError(f"{n_folds} folds need at least {n_folds} events, got {int(event.sum())}")
    rng = np.random.default_rng(seed)
    fold = np.empty(len(event), dtype=np.int64)
    offset = 0
    for members in (np.flatnonzero(event), np.flatnonzero(~event)):
        members = rng.permutation(members)
        fold[members] = (np.arange(len(members)) + offset) % n_folds
        offset += len(members)
    return fold


@dataclass(frozen=True)
class CrossValidatedRisk:
    """Out-of-fold risk (log partial hazard from the model that did not see the sample), its risk group, fold,
    the C-index of each fold and of the pooled out-of-fold risks."""

    risk: np.ndarray
    group: np.ndarray
    fold: np.ndarray
    fold_c_index: np.ndarray  # NaN for a fold without comparable pairs
    c_index: float


def cross_validated_risk(estimator, X, time, event, n_folds: int = 5, n_groups: int = 2,
                         seed: int = 0) -> CrossValidatedRisk:  # fmt: skip
    """K-fold out-of-fold risk and groups for a scikit-learn style survival estimator (e.g. `CoxPH`), refitted
    by `sklearn.base.clone` on each training part with `fit(X, time, event)`."""
    from sklearn.base import clone

    time, event = check_survival(time, event)
    X = X if hasattr(X, "iloc") else np.asarray(X)  # a frame keeps its column names for the fold models
    if len(X) != len(time):
        raise ValueError(f"X has {len(X)} rows but time has {len(time)}")
    rows = X.iloc if hasattr(X, "iloc") else X
    fold = stratified_folds(event, n_folds, seed)
    risk = np.empty(len(time))
    group = np.empty(len(time), dtype=np.int64)
    fold_c = np.full(n_folds, np.nan)
    for k in range(n_folds):
        train, test = fold != k, fold == k
        model = clone(estimator).fit(rows[train], time[train], event[train])
        risk[test] = model.predict(rows[test])
        group[test] = risk_groups(risk[test], n_groups, reference=model.predict(rows[train]))
        try:
            fold_c[k] = concordance_index(time[test], event[test], risk[test])
        except ValueError:  # no comparable pair in this fold
            pass
    return CrossValidatedRisk(risk, group, fold, fold_c, concordance_index(time, event, risk))

"""Concordance: Harrell's C and Uno's IPCW C. Higher risk means an earlier event.

Comparable pairs follow lifelines and scikit-survival: an event at time t_i is compared with every sample that
lasted longer (t_j > t_i) and with samples censored at the same time; tied risks count one half. Counting uses
a Fenwick tree over risk ranks, O(n log n).
"""

from __future__ import annotations

import numpy as np

from survival._checks import check_survival
from survival.kaplan_meier import kaplan_meier

__all__ = ["concordance_index", "concordance_index_ipcw"]


def _pair_counts(time: np.ndarray, event: np.ndarray, risk: np.ndarray):
    """Per event sample: comparable partners with lower, equal and higher risk (arrays over all samples)."""
    n = len(time)
    ranks = np.unique(risk, return_inverse=True)[1] + 1
    size = int(ranks.max())
    tree = [0] * (size + 1)

    def add(i: int) -> None:
        while i <= size:
            tree[i] += 1
            i += i & -i

    def prefix(i: int) -> int:
        total = 0
        while i > 0:
            total += tree[i]
            i -= i & -i
        return total

    lower = np.zeros(n)
    equal = np.zeros(n)
    higher = np.zeros(n)
    order = np.argsort(-time, kind="stable")
    inserted = 0
    i = 0
    while i < n:
        j = i
        while j < n and time[order[j]] == time[order[i]]:
            j += 1
        group = order[i:j]
        for k in group[~event[group]]:  # censored at this time: comparable with this time's events
            add(int(ranks[k]))
            inserted += 1
        for k in group[event[group]]:
            r = int(ranks[k])
            below, upto = prefix(r - 1), prefix(r)
            lower[k], equal[k], higher[k] = below, upto - below, inserted - upto
        for k in group[event[group]]:
            add(int(ranks[k]))
            inserted += 1
        i = j
    return lower, equal, higher


def concordance_index(time, event, risk) -> float:
    """Harrell's C-index: the fraction of comparable pairs whose higher-risk member had the event first."""
    time, event, risk = check_survival(time, event, risk, names=("risk",))
    risk = np.asarray(risk, dtype=np.float64)
    if np.isnan(risk).any():
        raise ValueError("risk has NaN values")
    lower, equal, higher = _pair_counts(time, event, risk)
    comparable = (lower + equal + higher).sum()
    if comparable == 0:
        raise ValueError(
            "no comparable pairs: the C-index needs at least one event before another sample's time"
        )
    return float((lower.sum() + 0.5 * equal.sum()) / comparable)


def concordance_index_ipcw(train_time, train_event, time, event, risk, tau: float | None = None) -> float:
    """Uno's C: concordance weighted by the inverse squared censoring survival G(t_i)^-2, for events before `tau`.

    The censoring distribution is the Kaplan-Meier estimate of the training data with events and censorings
    swapped. `tau` (default: the largest training time) must lie where G is positive.
    """
    train_time, train_event = check_survival(train_time, train_event)
    time, event, risk = check_survival(time, event, risk, names=("risk",))
    risk = np.asarray(risk, dtype=np.float64)
    censoring = kaplan_meier(train_time, ~train_event, reverse_ties=True)
    tau = float(train_time.max()) if tau is None else float(tau)
    g = censoring.survival_at(time)
    use = event & (time < tau)
    if (g[use] <= 0).any():
        raise ValueError("censoring survival is zero before tau: choose a smaller tau (truncation time)")
    weights = np.zeros(len(time))
    weights[use] = 1.0 / g[use] ** 2
    lower, equal, higher = _pair_counts(time, event, risk)
    comparable = (weights * (lower + equal + higher)).sum()
    if comparable == 0:
        raise ValueError("no comparable pairs before tau")
    return float((weights * (lower + 0.5 * equal)).sum() / comparable)

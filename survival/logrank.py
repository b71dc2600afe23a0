"""Log-rank test for two or more groups (chi-square with groups - 1 degrees of freedom)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from survival._checks import check_survival

__all__ = ["LogRankResult", "logrank_test"]


@dataclass(frozen=True)
class LogRankResult:
    statistic: float
    df: int
    p_value: float
    groups: tuple
    observed: np.ndarray
    expected: np.ndarray


def logrank_test(time, event, groups) -> LogRankResult:
    """Test equality of survival across `groups` (one label per sample)."""
    time, event, groups = check_survival(time, event, groups, names=("groups",))
    labels, g = np.unique(groups, return_inverse=True)
    if len(labels) < 2:
        raise ValueError(f"the log-rank test needs at least two groups, got {len(labels)}")
    times, t_index = np.unique(time, return_inverse=True)
    k, m = len(labels), len(times)
    deaths = np.zeros((m, k))
    totals = np.zeros((m, k))
    np.add.at(deaths, (t_index, g), event.astype(float))
    np.add.at(totals, (t_index, g), 1.0)
    at_risk = totals[::-1].cumsum(axis=0)[::-1]  # per group, samples with time >= t
    n = at_risk.sum(axis=1)
    d = deaths.sum(axis=1)
    keep = (d > 0) & (n > 0)
    at_risk, n, d, deaths = at_risk[keep], n[keep], d[keep], deaths[keep]
    frac = at_risk / n[:, None]
    expected = (d[:, None] * frac).sum(axis=0)
    observed = deaths.sum(axis=0)
    factor = np.where(n > 1, d * (n - d) / np.maximum(n - 1, 1), 0.0)
    cov = np.einsum("t,ti,tj->ij", factor, frac, -frac)
    cov[np.diag_indices(k)] += (factor[:, None] * frac).sum(axis=0)
    diff = (observed - expected)[:-1]
    statistic = float(diff @ np.linalg.pinv(cov[:-1, :-1]) @ diff)
    return LogRankResult(
        statistic=statistic,
        df=k - 1,
        p_value=float(stats.chi2.sf(statistic, k - 1)),
        groups=tuple(labels.tolist()),
        observed=observed,
        expected=expected,
    )

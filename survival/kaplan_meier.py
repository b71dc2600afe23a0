"""Kaplan-Meier survival with Greenwood variance, log(-log) confidence intervals and median survival."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from survival._checks import check_survival

__all__ = ["KaplanMeier", "kaplan_meier"]


@dataclass(frozen=True)
class KaplanMeier:
    """Survival S(t) as a right-continuous step function on `timeline` (0 and every observed time)."""

    timeline: np.ndarray
    survival: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    at_risk: np.ndarray
    events: np.ndarray
    censored: np.ndarray
    median: float  # first time with S(t) <= 0.5; inf if never reached

    def survival_at(self, t) -> np.ndarray:
        """S at times `t` (step function, right-continuous)."""
        index = np.searchsorted(self.timeline, np.asarray(t, dtype=np.float64), side="right") - 1
        return self.survival[np.clip(index, 0, None)]


def kaplan_meier(time, event, alpha: float = 0.05, reverse_ties: bool = False) -> KaplanMeier:
    """Kaplan-Meier estimate with (1 - alpha) pointwise intervals (Greenwood, log(-log) transform, as lifelines).

    `reverse_ties` is for estimating a censoring distribution (events and censorings swapped): samples whose
    original event happened at a time still count as at risk of censoring there.
    """
    time, event = check_survival(time, event)
    times, inverse = np.unique(time, return_inverse=True)
    events = np.bincount(inverse, weights=event.astype(float), minlength=len(times))
    totals = np.bincount(inverse, minlength=len(times)).astype(float)
    at_risk = len(time) - np.r_[0, np.cumsum(totals)[:-1]]
    if reverse_ties:
        # Censoring distribution: an original event tied with a censoring happened first, so it is not at risk
        # of being censored at that time.
        at_risk = at_risk - (totals - events)
    hazard = np.where(at_risk > 0, events / np.maximum(at_risk, 1), 0.0)
    surv = np.cumprod(1.0 - hazard)
    with np.errstate(divide="ignore", invalid="ignore"):
        green = np.cumsum(np.where(at_risk > events, events / (at_risk * (at_risk - events)), 0.0))
        z = stats.norm.ppf(1 - alpha / 2)
        log_s = np.log(surv)
        se = np.sqrt(green) / np.abs(log_s)
        lower = np.exp(-np.exp(np.log(-log_s) + z * se))
        upper = np.exp(-np.exp(np.log(-log_s) - z * se))
    lower = np.where(np.isfinite(lower), lower, np.where(surv > 0, 1.0, 0.0))
    upper = np.where(np.isfinite(upper), upper, np.where(surv > 0, 1.0, 0.0))
    below = np.flatnonzero(surv <= 0.5)
    median = float(times[below[0]]) if len(below) else float("inf")
    prepend = times[0] > 0
    timeline = np.r_[0.0, times] if prepend else times

    def pad(a: np.ndarray, value: float) -> np.ndarray:
        return np.r_[value, a] if prepend else a

    return KaplanMeier(
        timeline=timeline,
        survival=pad(surv, 1.0),
        lower=pad(lower, 1.0),
        upper=pad(upper, 1.0),
        at_risk=pad(at_risk, float(len(time))),
        events=pad(events, 0.0),
        censored=pad(totals - events, 0.0),
        median=median,
    )

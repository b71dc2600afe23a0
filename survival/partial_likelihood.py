"""Cox partial likelihood in numpy with Breslow or Efron ties: value, gradient and information in O(n p^2).

Samples are sorted once by time; risk-set sums are reverse cumulative sums read at the first index of each
distinct time; tied events are expanded into their Efron terms l = 0..d-1. The Hessian's risk-set part is a
single weighted X^T diag(q) X, so no per-time p x p sums are built.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["PartialLikelihood", "SortedSurvival", "partial_likelihood"]

TIES = ("efron", "breslow")


@dataclass(frozen=True)
class SortedSurvival:
    """Survival data sorted by ascending time with its distinct-time structure (computed once per fit)."""

    order: np.ndarray
    time: np.ndarray
    event: np.ndarray
    starts: np.ndarray  # first sorted index of each distinct time
    group: np.ndarray  # distinct-time index of each sorted sample
    deaths: np.ndarray  # events at each distinct time
    # Expanded Efron terms: one per event; `term_group` its distinct time, `term_c` = l / d.
    term_group: np.ndarray
    term_c: np.ndarray

    @classmethod
    def build(cls, time: np.ndarray, event: np.ndarray, ties: str) -> SortedSurvival:
        if ties not in TIES:
            raise ValueError(f"ties must be one of {TIES}, got {ties!r}")
        order = np.argsort(time, kind="stable")
        t, e = time[order], event[order].astype(bool)
        new = np.r_[True, t[1:] != t[:-1]]
        starts = np.flatnonzero(new)
        group = np.cumsum(new) - 1
        deaths = np.add.reduceat(e.astype(np.int64), starts)
        term_group = np.repeat(np.arange(len(starts)), deaths)
        if ties == "efron":
            first = np.cumsum(deaths) - deaths
            l_index = np.arange(len(term_group)) - np.repeat(first, deaths)
            term_c = l_index / np.repeat(np.maximum(deaths, 1), deaths)
        else:
            term_c = np.zeros(len(term_group))
        return cls(order, t, e, starts, group, deaths, term_group, term_c)


@dataclass(frozen=True)
class PartialLikelihood:
    """Log partial likelihood; gradient (p,) and information (p, p) = minus the Hessian, when X was given."""

    loglik: float
    gradient: np.ndarray | None = None
    information: np.ndarray | None = None


def _reverse_cumsum(a: np.ndarray) -> np.ndarray:
    return np.cumsum(a[::-1], axis=0)[::-1]


def partial_likelihood(
    data: SortedSurvival, eta: np.ndarray, X: np.ndarray | None = None
) -> PartialLikelihood:
    """Partial likelihood of linear predictors `eta` (original order); with `X` (n, p) also derivatives."""
    eta_s = eta[data.order]
    shift = eta_s.max()
    w = np.exp(eta_s - shift)
    s0_risk = _reverse_cumsum(w)[data.starts]
    s0_dead = np.add.reduceat(w * data.event, data.starts)
    g, c = data.term_group, data.term_c
    den = s0_risk[g] - c * s0_dead[g]
    loglik = float(eta_s[data.event].sum() - (np.log(den) + shift).sum())
    if X is None:
        return PartialLikelihood(loglik)
    xs = X[data.order]
    wx = w[:, None] * xs
    s1_risk = _reverse_cumsum(wx)[data.starts]
    s1_dead = np.add.reduceat(wx * data.event[:, None], data.starts)
    numer = s1_risk[g] - c[:, None] * s1_dead[g]
    gradient = xs[data.event].sum(axis=0) - (numer / den[:, None]).sum(axis=0)
    # Information = sum over terms of S2 / den - v v^T with v = numer / den. The S2 part, written per sample:
    # a sample in the risk set of every distinct time up to its own gets the summed 1/den of those terms;
    # an event sample also carries -c/den of its own time's terms.
    inv = np.bincount(g, weights=1.0 / den, minlength=len(data.starts))
    risk_weight = np.cumsum(inv)[data.group]
    dead_weight = np.bincount(g, weights=-c / den, minlength=len(data.starts))[data.group] * data.event
    q = w * (risk_weight + dead_weight)
    v = numer / den[:, None]
    information = (xs * q[:, None]).T @ xs - v.T @ v
    return PartialLikelihood(loglik, gradient, information)

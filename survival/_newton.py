"""Newton-Raphson for the Cox partial likelihood with checked convergence, and the design checks that come
before it (constant, collinear and separating covariates). Each problem names the covariates and the remedy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from survival.partial_likelihood import SortedSurvival

__all__ = ["ConvergenceWarning", "NewtonResult", "check_design", "newton_raphson", "convergence_problem"]

REMEDY = "set a penalty alpha > 0 (CoxPH(alpha=0.1); `survival fit --alpha 0.1`) or drop the covariate(s)"
STEP_TOL = 1e-6  # converged when the largest step is under this, in standard deviations of its covariate
MAX_STEP = 5.0  # cap on one step, in standard deviations (log hazard ratio per SD), as a trust region
STALL_STEPS = 3  # iterations with a flat likelihood but large steps before the fit is called diverging
CONDITION_LIMIT = 1e12  # condition number of the standardised information beyond which it is singular


class ConvergenceWarning(UserWarning):
    """A fit stopped without a trustworthy optimum (diverging coefficients, singular information)."""


@dataclass(frozen=True)
class NewtonResult:
    beta: np.ndarray
    loglik: float
    gradient: np.ndarray
    information: np.ndarray
    n_iter: int
    converged: bool
    diverging: bool  # the likelihood stopped rising while the steps stayed large
    last_step: np.ndarray  # the last full Newton step, in standard deviations of each covariate
    last_change: float  # the last change of the log-likelihood


def check_design(data: SortedSurvival, Xc: np.ndarray, names: list[str], scale: np.ndarray) -> None:
    """Raise ValueError for constant, collinear or separating covariates (an unpenalised fit has no finite
    maximum for them). `Xc` is centred; `scale` its standard deviations."""
    constant = [n for n, s in zip(names, scale, strict=True) if s == 0]
    if constant:
        raise ValueError(
            f"constant covariate(s) {constant}: their coefficient is not identifiable; drop them, or {REMEDY}"
        )
    rank = np.linalg.matrix_rank(Xc / scale)
    if rank < Xc.shape[1]:
        raise ValueError(
            f"covariates are collinear (rank {rank} < {Xc.shape[1]}): {_collinear_hint(Xc / scale, names)}; "
            f"drop one, or {REMEDY}"
        )
    separating = separating_covariates(data, Xc, names, scale)
    if separating:
        raise ValueError(
            "perfect separation: " + "; ".join(separating) + ". The partial likelihood rises for ever as the "
            f"coefficient grows (no finite estimate, hazard ratio -> 0 or infinity): {REMEDY}"
        )


def separating_covariates(
    data: SortedSurvival, Xc: np.ndarray, names: list[str], scale: np.ndarray
) -> list[str]:
    """Covariates that order every event against its risk set: each event's value is the highest (or lowest)
    among the samples still at risk at its time, strictly above (below) some of them. Such a covariate makes
    the likelihood monotone in its coefficient whatever the others are."""
    xs = Xc[data.order]
    first_at_risk = data.starts[data.group]  # risk set of a sample = sorted rows from its time's first row on
    risk_max = np.maximum.accumulate(xs[::-1], axis=0)[::-1][first_at_risk][data.event]
    risk_min = np.minimum.accumulate(xs[::-1], axis=0)[::-1][first_at_risk][data.event]
    xe = xs[data.event]
    eps = 1e-9 * scale
    high = (xe >= risk_max - eps).all(axis=0) & (xe > risk_min + eps).any(axis=0)
    low = (xe <= risk_min + eps).all(axis=0) & (xe < risk_max - eps).any(axis=0)
    found = []
    for j, name in enumerate(names):
        if high[j] or low[j]:
            side = "highest" if high[j] else "lowest"
            found.append(f"every event has the {side} {name!r} of the samples still at risk")
    return found


def newton_raphson(evaluate: Callable, p: int, scale: np.ndarray, tol: float, max_iter: int) -> NewtonResult:
    """Maximise `evaluate(beta) -> (loglik, gradient, information)` from beta = 0 with step halving.

    Converged when the log-likelihood changes by less than `tol` (relative) and the largest full Newton step
    is under STEP_TOL standard deviations of its covariate. Diverging when the likelihood stops changing while
    the Newton steps stay above 1e-3 SD for STALL_STEPS iterations (coefficients running off to infinity), or
    when no point along the Newton direction is finite.
    """
    scale = np.where(scale > 0, scale, 1.0)
    beta = np.zeros(p)
    with np.errstate(all="ignore"):  # overflow on the way out of a separated fit shows as a non-finite value
        ll, grad, info = evaluate(beta)
        stalled = 0
        change, newton = np.inf, np.full(p, np.inf)
        for n_iter in range(1, max_iter + 1):
            step = _solve(info, grad)
            newton = step * scale  # the full Newton step in SD units: large while the optimum is far
            largest = np.max(np.abs(newton), initial=0.0)
            if largest > MAX_STEP:
                step = step * (MAX_STEP / largest)
            for _ in range(40):  # halve until the likelihood does not decrease
                new = evaluate(beta + step)
                finite = np.isfinite(new[0]) and np.isfinite(new[1]).all() and np.isfinite(new[2]).all()
                if finite and new[0] >= ll - 1e-12 * abs(ll):
                    break
                step = step / 2
            else:  # no point along the Newton direction is finite and no worse: diverging numerically
                return NewtonResult(beta, ll, grad, info, n_iter, False, True, newton, 0.0)
            change = new[0] - ll
            beta = beta + step
            ll, grad, info = new
            flat = abs(change) < tol * max(1.0, abs(ll))
            if flat and largest < STEP_TOL:
                return NewtonResult(beta, ll, grad, info, n_iter, True, False, newton, change)
            stalled = stalled + 1 if flat and largest > 1e-3 else 0
            if stalled >= STALL_STEPS:
                return NewtonResult(beta, ll, grad, info, n_iter, False, True, newton, change)
    return NewtonResult(beta, ll, grad, info, max_iter, False, False, newton, change)


def convergence_problem(result: NewtonResult, names: list[str], scale: np.ndarray) -> str | None:
    """Why the fit is not trustworthy (step size, log-likelihood change, information condition), naming the
    covariates involved and the remedy; None when it is."""
    scale = np.where(scale > 0, scale, 1.0)
    standardised = result.information * np.outer(scale, scale)
    with np.errstate(all="ignore"):
        condition = float(np.linalg.cond(standardised)) if np.isfinite(standardised).all() else np.inf
    if result.converged and condition < CONDITION_LIMIT:
        return None
    if result.diverging:
        what = (
            f"diverged after {result.n_iter} iterations: the log-likelihood stopped rising (change "
            f"{result.last_change:.2g}) while the coefficients kept growing (last Newton step "
            f"{np.max(np.abs(result.last_step)):.2g} SD)"
        )
        involved = _largest(result.last_step, names)
    elif not result.converged:
        what = (
            f"did not converge in {result.n_iter} iterations (last log-likelihood change "
            f"{result.last_change:.2g}, last step {np.max(np.abs(result.last_step), initial=0.0):.2g} SD)"
        )
        involved = _largest(result.last_step, names)
    else:
        what = (
            f"converged to a point where the information matrix is near singular (condition {condition:.2g})"
        )
        involved = _largest(np.linalg.eigh(standardised)[1][:, 0], names)
    return (
        f"CoxPH {what}; the Hessian condition number is {condition:.2g}. Covariate(s) involved: "
        f"{', '.join(involved)}. This happens when covariates are nearly collinear, or when a combination of "
        f"them separates events from the samples still at risk (monotone likelihood): coefficients and standard "
        f"errors are not reliable; {REMEDY}."
    )


def _solve(info: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Newton direction; least squares where the information is singular (a separating direction)."""
    try:
        step = np.linalg.solve(info, grad)
        if np.isfinite(step).all():
            return step
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(info, grad, rcond=None)[0]


def _largest(vector: np.ndarray, names: list[str]) -> list[str]:
    magnitude = np.nan_to_num(np.abs(vector), nan=0.0)
    if not magnitude.any():
        return list(names)
    return [names[i] for i in np.flatnonzero(magnitude >= 0.1 * magnitude.max())]


def _collinear_hint(X: np.ndarray, names: list[str]) -> str:
    """Names of covariates in the null space of X (those that can be written from the others)."""
    _, sing, vt = np.linalg.svd(X, full_matrices=False)
    null = vt[sing < sing.max() * 1e-10]
    if len(null) == 0:
        return "numerically rank deficient"
    involved = [names[i] for i in np.flatnonzero(np.abs(null).max(axis=0) > 1e-6)]
    return "involving " + ", ".join(involved)

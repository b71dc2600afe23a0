"""CoxPH: a scikit-learn style Cox proportional hazards estimator (Newton-Raphson with step halving)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator

from survival._checks import check_survival, split_target
from survival._newton import ConvergenceWarning, check_design, convergence_problem, newton_raphson
from survival.concordance import concordance_index
from survival.partial_likelihood import SortedSurvival, partial_likelihood

__all__ = ["CoxPH"]


class CoxPH(BaseEstimator):
    """Cox proportional hazards regression.

    `ties`: "efron" or "breslow". `alpha`: L2 penalty, 0.5 * alpha * ||beta||^2 subtracted from the log partial
    likelihood (on the covariates as given). Fitted: `coef_`, `se_`, `loglik_`, `n_iter_`, `converged_`,
    `summary`, baseline cumulative hazard (Breslow) at the mean covariates.

    Without a penalty, constant, collinear and perfectly separating covariates are refused with a ValueError
    naming them. A fit that diverges or ends at a near-singular information matrix warns with a
    `survival.ConvergenceWarning` naming the covariates involved, and sets `converged_` to False.

    `predict` gives the log partial hazard relative to the training mean (as lifelines); `score` is Harrell's
    C-index. `fit` and `score` take scikit-survival's target `y` = (event, time), so `GridSearchCV`,
    `cross_val_score` and a `Pipeline` work, or `time, event` apart.
    """

    def __init__(self, ties: str = "efron", alpha: float = 0.0, tol: float = 1e-9, max_iter: int = 100,
                 ci: float = 0.95):  # fmt: skip
        self.ties = ties
        self.alpha = alpha
        self.tol = tol
        self.max_iter = max_iter
        self.ci = ci

    # -- fitting --------------------------------------------------------------------------------------------
    def _design(self, X) -> tuple[np.ndarray, list[str]]:
        if isinstance(X, pd.DataFrame):
            names = [str(c) for c in X.columns]
            X = X.to_numpy(dtype=np.float64)
        else:
            X = np.asarray(X, dtype=np.float64)
            if X.ndim == 1:
                X = X[:, None]
            names = [f"x{i}" for i in range(X.shape[1])]
        if X.ndim != 2:
            raise ValueError(f"X must be 2-D (n_samples, n_covariates), got shape {X.shape}")
        if not np.isfinite(X).all():
            raise ValueError("X has NaN or infinite values")
        return X, names

    def fit(self, X, y, event=None) -> CoxPH:
        """Fit on `X` (n, p) and the target: `fit(X, y)` with y = (event, time) as scikit-survival takes it (a
        structured array, a two-column frame or an (n, 2) array), or `fit(X, time, event)`."""
        X, names = self._design(X)
        time, event = split_target(y, event)
        time, event = check_survival(time, event, X, names=("X",))[:2]
        if not event.any():
            raise ValueError("no events: a Cox model cannot be fitted when every sample is censored")
        if self.alpha < 0:
            raise ValueError(f"alpha must be >= 0, got {self.alpha}")
        self.mean_ = X.mean(axis=0)
        Xc = X - self.mean_
        scale = Xc.std(axis=0)
        data = SortedSurvival.build(time, event, self.ties)
        if self.alpha == 0:
            check_design(data, Xc, names, scale)
        penalty = self.alpha

        def evaluate(b):
            pl = partial_likelihood(data, Xc @ b, Xc)
            ll = pl.loglik - 0.5 * penalty * b @ b
            return ll, pl.gradient - penalty * b, pl.information + penalty * np.eye(len(b))

        result = newton_raphson(evaluate, X.shape[1], scale, self.tol, self.max_iter)
        self.coef_ = result.beta
        self.n_iter_ = result.n_iter
        self.feature_names_in_ = names
        self.loglik_ = float(result.loglik)
        self.information_ = result.information
        self.se_ = _standard_errors(result.information)
        problem = convergence_problem(result, names, scale)
        self.converged_ = problem is None
        if problem is not None:
            warnings.warn(problem, ConvergenceWarning, stacklevel=2)
        self.loglik_null_ = partial_likelihood(data, np.zeros(len(time))).loglik
        self._baseline(Xc @ self.coef_, data)
        return self

    def _baseline(self, eta: np.ndarray, data: SortedSurvival) -> None:
        """Breslow baseline cumulative hazard at the mean covariates."""
        w = np.exp(eta[data.order])
        risk = np.cumsum(w[::-1])[::-1][data.starts]
        times = data.time[data.starts]
        self.baseline_time_ = times
        self.baseline_cumulative_hazard_ = np.cumsum(data.deaths / risk)

    # -- prediction -----------------------------------------------------------------------------------------
    def _check_fitted(self) -> None:
        if not hasattr(self, "coef_"):
            raise RuntimeError("this CoxPH is not fitted yet: call fit(X, y) or fit(X, time, event) first")

    def predict(self, X) -> np.ndarray:
        """Log partial hazard (X - training mean) @ coef_: higher means higher risk."""
        self._check_fitted()
        X, _ = self._design(X)
        if X.shape[1] != len(self.coef_):
            raise ValueError(f"X has {X.shape[1]} covariates, the model was fitted with {len(self.coef_)}")
        return (X - self.mean_) @ self.coef_

    def predict_survival(self, X, times=None) -> tuple[np.ndarray, np.ndarray]:
        """(times, S) with S of shape (n_samples, len(times)): S(t | x) = exp(-H0(t) exp(eta))."""
        eta = self.predict(X)
        times = self.baseline_time_ if times is None else np.asarray(times, dtype=np.float64)
        index = np.searchsorted(self.baseline_time_, times, side="right") - 1
        h0 = np.where(index >= 0, self.baseline_cumulative_hazard_[np.clip(index, 0, None)], 0.0)
        return times, np.exp(-np.exp(eta)[:, None] * h0[None, :])

    def score(self, X, y, event=None) -> float:
        """Harrell's C-index of the predictions; the target as `fit` takes it."""
        time, event = split_target(y, event)
        return concordance_index(time, event, self.predict(X))

    @property
    def summary(self) -> pd.DataFrame:
        """Per covariate, as lifelines' summary: coef, exp(coef) (the hazard ratio), se(coef), confidence limits
        of coef and of exp(coef) at level `ci`, z and the Wald p-value."""
        self._check_fitted()
        z = self.coef_ / self.se_
        q = stats.norm.ppf(0.5 + self.ci / 2)
        pct = round(self.ci * 100)
        lower, upper = self.coef_ - q * self.se_, self.coef_ + q * self.se_
        with np.errstate(over="ignore"):
            return pd.DataFrame(
                {
                    "coef": self.coef_,
                    "exp(coef)": np.exp(self.coef_),
                    "se(coef)": self.se_,
                    f"coef lower {pct}%": lower,
                    f"coef upper {pct}%": upper,
                    f"exp(coef) lower {pct}%": np.exp(lower),
                    f"exp(coef) upper {pct}%": np.exp(upper),
                    "z": z,
                    "p": 2 * stats.norm.sf(np.abs(z)),
                },
                index=pd.Index(self.feature_names_in_, name="covariate"),
            )

    def confidence_intervals(self) -> np.ndarray:
        """(p, 2) lower and upper limits of the coefficients at level `ci`."""
        pct = round(self.ci * 100)
        return self.summary[[f"coef lower {pct}%", f"coef upper {pct}%"]].to_numpy()


def _standard_errors(information: np.ndarray) -> np.ndarray:
    """sqrt(diag(information^-1)); NaN where the information is singular (the fit has warned)."""
    try:
        variance = np.diag(np.linalg.inv(information))
    except np.linalg.LinAlgError:
        return np.full(len(information), np.nan)
    with np.errstate(invalid="ignore"):
        return np.where(variance >= 0, np.sqrt(np.abs(variance)), np.nan)

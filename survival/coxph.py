"""CoxPH: a scikit-learn style Cox proportional hazards estimator (Newton-Raphson with step halving)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from scipy import stats
from sklearn.base import BaseEstimator

from survival._checks import check_survival, split_target
from survival.concordance import concordance_index
from survival.partial_likelihood import SortedSurvival, partial_likelihood

__all__ = ["CoxPH"]


class CoxPH(BaseEstimator):
    """Cox proportional hazards regression.

    `ties`: "efron" or "breslow". `alpha`: L2 penalty, 0.5 * alpha * ||beta||^2 subtracted from the log partial
    likelihood (on the covariates as given). Fitted: `coef_`, `se_`, `loglik_`, `n_iter_`, `summary`, baseline
    cumulative hazard (Breslow) at the mean covariates. `predict` gives the log partial hazard relative to the
    training mean (as lifelines); `score` is Harrell's C-index.
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
        if self.alpha == 0:
            constant = [n for n, s in zip(names, Xc.std(axis=0), strict=True) if s == 0]
            if constant:
                raise ValueError(
                    f"constant covariate(s) {constant}: drop them (their coefficient is not identifiable)"
                )
            rank = np.linalg.matrix_rank(Xc)
            if rank < Xc.shape[1]:
                raise ValueError(
                    f"covariates are collinear (rank {rank} < {Xc.shape[1]}): {_collinear_hint(Xc, names)}; "
                    "drop one or set alpha > 0"
                )
        data = SortedSurvival.build(time, event, self.ties)
        beta = np.zeros(X.shape[1])
        penalty = self.alpha

        def evaluate(b):
            pl = partial_likelihood(data, Xc @ b, Xc)
            ll = pl.loglik - 0.5 * penalty * b @ b
            return ll, pl.gradient - penalty * b, pl.information + penalty * np.eye(len(b))

        ll, grad, info = evaluate(beta)
        converged = False
        self.n_iter_ = 0
        while self.n_iter_ < self.max_iter:
            self.n_iter_ += 1
            step = np.linalg.solve(info, grad)
            for _ in range(30):  # step halving until the likelihood does not decrease
                new_beta = beta + step
                new_ll, new_grad, new_info = evaluate(new_beta)
                if np.isfinite(new_ll) and new_ll >= ll - 1e-12 * abs(ll):
                    break
                step = step / 2
            delta = abs(new_ll - ll)
            beta, ll, grad, info = new_beta, new_ll, new_grad, new_info
            if delta < self.tol * max(1.0, abs(ll)) and np.max(np.abs(step)) < 1e-6:
                converged = True
                break
        if not converged:
            warnings.warn(f"CoxPH did not converge in {self.max_iter} iterations", stacklevel=2)
        self.coef_ = beta
        self.feature_names_in_ = names
        self.loglik_ = float(ll)
        self.information_ = info
        self.se_ = np.sqrt(np.diag(np.linalg.inv(info)))
        self.loglik_null_ = partial_likelihood(data, np.zeros(len(time))).loglik
        self._baseline(Xc @ beta, data)
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
        """coef, exp(coef), se, z, p and confidence limits per covariate."""
        self._check_fitted()
        z = self.coef_ / self.se_
        q = stats.norm.ppf(0.5 + self.ci / 2)
        pct = round(self.ci * 100)
        return pd.DataFrame(
            {
                "coef": self.coef_,
                "exp(coef)": np.exp(self.coef_),
                "se(coef)": self.se_,
                f"coef lower {pct}%": self.coef_ - q * self.se_,
                f"coef upper {pct}%": self.coef_ + q * self.se_,
                "z": z,
                "p": 2 * stats.norm.sf(np.abs(z)),
            },
            index=pd.Index(self.feature_names_in_, name="covariate"),
        )

    def confidence_intervals(self) -> np.ndarray:
        """(p, 2) lower and upper limits of the coefficients at level `ci`."""
        s = self.summary
        return s.iloc[:, 3:5].to_numpy()


def _collinear_hint(X: np.ndarray, names: list[str]) -> str:
    """Names of covariates in the null space of X (those that can be written from the others)."""
    _, sing, vt = np.linalg.svd(X, full_matrices=False)
    null = vt[sing < sing.max() * 1e-10]
    if len(null) == 0:
        return "numerically rank deficient"
    involved = [names[i] for i in np.flatnonzero(np.abs(null).max(axis=0) > 1e-6)]
    return "involving " + ", ".join(involved)

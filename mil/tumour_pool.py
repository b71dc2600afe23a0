"""Tumour-pooled read-outs: a slide's trait read from the tiles a tumour model scores highest.

Mutation labels are about what the tumour looks like (and what surrounds it), on a minority of a slide's tiles.
A MIL model trained on a few dozen mutation labels must find that tumour itself; a cancer model, trained on every
slide's cancer label, already has. `pool_tumour_tiles` averages the features of the `fraction` of a slide's
tiles with the highest tumour scores (at least one tile) into one slide vector; `TumourPooledLogistic` fits one
L2-regularised logistic regression per 0/1 target on those vectors (standardised, balanced class weights;
slides whose target is missing, NaN, are skipped for that target). With spatial-context features
(`mil.SpatialContext`) the vector also holds the tumour tiles' neighbourhoods (e.g. lymphocytes around them).
The fitted state is plain numbers (`to_dict` / `from_dict`, JSON), no pickle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["TumourPoolConfig", "TumourPooledLogistic", "pool_tumour_tiles", "top_tiles"]


@dataclass(frozen=True)
class TumourPoolConfig:
    """`fraction`: the share of a slide's tiles pooled (those with the highest tumour scores, at least one);
    `C`: the inverse L2 strength of the logistic regressions (scikit-learn's `C`, on standardised vectors)."""

    fraction: float = 0.1
    C: float = 0.05

    def __post_init__(self):
        if not 0 < self.fraction <= 1:
            raise ValueError(f"the pooled tumour fraction must be in (0, 1], got {self.fraction}")
        if not self.C > 0:
            raise ValueError(f"C (inverse regularisation strength) must be positive, got {self.C}")


def top_tiles(scores: np.ndarray, fraction: float) -> np.ndarray:
    """The indices of the ceil(`fraction` * N) highest of `scores` (N,) (at least one; ties broken by tile
    order), highest first: the tiles `pool_tumour_tiles` averages, and a tumour-pooled model's "High attention"
    tiles in `mil predict`."""
    scores = np.asarray(scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0:
        raise ValueError(f"scores must have shape (N,) with N >= 1, got {scores.shape}")
    if not np.isfinite(scores).all():
        raise ValueError("tumour scores must be finite")
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, math.ceil(fraction * len(scores) - 1e-9))
    return np.argsort(-scores, kind="stable")[:n]


def pool_tumour_tiles(features: np.ndarray, scores: np.ndarray, fraction: float) -> np.ndarray:
    """`features` (N, D) of one slide's tiles and their tumour `scores` (N,) -> (D,) float64: the mean features
    of the tiles `top_tiles(scores, fraction)` picks."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"features must have shape (N, D) with N >= 1, got {features.shape}")
    if np.shape(scores) != (len(features),):
        raise ValueError(f"scores must have shape (N,) = ({len(features)},), got {np.shape(scores)}")
    return features[top_tiles(scores, fraction)].mean(axis=0)


class TumourPooledLogistic:
    """One logistic regression per target on slide vectors (`pool_tumour_tiles`), with scikit-learn's
    fit / predict_proba contract: `fit(X (n, D), y (n, T) with NaN for unknown)`, `predict_proba(X) -> (n, T)`
    probabilities of 1 (not an (n, 2) pair: one column per target)."""

    def __init__(self, C: float = 0.05):
        self.C = C

    def fit(self, X, y) -> TumourPooledLogistic:
        from sklearn.linear_model import LogisticRegression

        X = np.asarray(X, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if y.ndim == 1:
            y = y[:, None]
        if X.ndim != 2 or y.shape[0] != len(X):
            raise ValueError(
                f"X must be (n, D) and y (n,) or (n, T) with the same n, got {X.shape} and {y.shape}"
            )
        if not np.isfinite(X).all():
            raise ValueError("slide vectors must be finite")
        self.mean_, self.scale_, self.coef_, self.intercept_ = [], [], [], []
        for t in range(y.shape[1]):
            known = np.isfinite(y[:, t])
            values = np.unique(y[known, t])
            if not set(values) <= {0.0, 1.0} or len(values) < 2:
                raise ValueError(
                    f"target {t} needs both 0 and 1 among its known values, got {values.tolist()}"
                )
            mean = X[known].mean(axis=0)
            scale = X[known].std(axis=0)
            scale[scale == 0] = 1.0
            model = LogisticRegression(C=self.C, class_weight="balanced", max_iter=5000)
            model.fit((X[known] - mean) / scale, y[known, t].astype(int))
            self.mean_.append(mean)
            self.scale_.append(scale)
            self.coef_.append(model.coef_[0].copy())
            self.intercept_.append(float(model.intercept_[0]))
        return self

    def decision_function(self, X) -> np.ndarray:
        """(n, T) log-odds of each target."""
        if not hasattr(self, "coef_"):
            raise ValueError("TumourPooledLogistic is not fitted; call fit first")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != len(self.mean_[0]):
            raise ValueError(f"X must have shape (n, {len(self.mean_[0])}), got {X.shape}")
        return np.column_stack([((X - m) / s) @ c + b for m, s, c, b in
                                zip(self.mean_, self.scale_, self.coef_, self.intercept_, strict=True)])  # fmt: skip

    def predict_proba(self, X) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-self.decision_function(X)))

    def to_dict(self) -> dict:
        return {"C": self.C, "mean": [m.tolist() for m in self.mean_], "scale": [s.tolist() for s in self.scale_],
                "coef": [c.tolist() for c in self.coef_], "intercept": list(self.intercept_)}  # fmt: skip

    @classmethod
    def from_dict(cls, state: dict) -> TumourPooledLogistic:
        model = cls(float(state["C"]))
        model.mean_ = [np.asarray(m, dtype=np.float64) for m in state["mean"]]
        model.scale_ = [np.asarray(s, dtype=np.float64) for s in state["scale"]]
        model.coef_ = [np.asarray(c, dtype=np.float64) for c in state["coef"]]
        model.intercept_ = [float(b) for b in state["intercept"]]
        return model

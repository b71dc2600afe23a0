"""`MILEstimator`: a MIL model and task behind scikit-learn's estimator contract, for bags held in memory.

`X` is a list of bags, each an `(n_i, d)` array, or a 3-D array `(n_bags, n_tiles, d)` of equal-size bags. A
2-D array `(n, d)` is read as n bags of one tile each (so scikit-learn's common checks, which pass 2-D arrays,
can run; a one-tile bag is an ordinary MLP sample).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.model_selection import train_test_split
from sklearn.utils import ClassifierTags, TargetTags
from sklearn.utils.multiclass import type_of_target
from sklearn.utils.validation import check_array, check_is_fitted, column_or_1d

from mil.models import create_model
from mil.tasks import create_task
from mil.train import FitConfig, fit, predict_logits

__all__ = ["MILEstimator"]

_CLASSIFIERS = ("binary", "multiclass")


class MILEstimator(BaseEstimator):
    """A registered MIL model (`model`, `model_kwargs`) trained for a task (`task`, `task_kwargs`).

    Classification tasks ("binary", "multiclass") take any labels (`classes_`) and behave as scikit-learn
    classifiers: `predict` gives labels, `predict_proba` (n, n_classes), `score` the accuracy. "grade" predicts
    levels and scores the quadratic weighted kappa; "mutation" predicts 0/1 per target and scores the macro AUC;
    "survival" takes y (n, 2) = (time, event), predicts the log-risk and scores Harrell's C-index.
    `validation_fraction` > 0 holds out that share of the bags (stratified) for early stopping with `patience`.
    The training settings are those of `mil.FitConfig`.
    """

    def __init__(self, model: str = "abmil", task: str = "binary", model_kwargs: dict | None = None,
                 task_kwargs: dict | None = None, epochs: int = 30, lr: float = 5e-4, weight_decay: float = 1e-4,
                 batch_size: int = 1, max_tiles: int | None = None, patience: int = 10,
                 validation_fraction: float = 0.0, schedule: str = "cosine", device: str = "cpu", seed: int = 0,
                 progress: bool = False, standardize: bool = True):  # fmt: skip
        self.model = model
        self.task = task
        self.model_kwargs = model_kwargs
        self.task_kwargs = task_kwargs
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_tiles = max_tiles
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.schedule = schedule
        self.device = device
        self.seed = seed
        self.progress = progress
        self.standardize = standardize

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        if self.task in _CLASSIFIERS:
            tags.estimator_type = "classifier"
            tags.classifier_tags = ClassifierTags(multi_class=self.task == "multiclass")
        elif self.task == "mutation":
            tags.target_tags = TargetTags(required=True, multi_output=True)
        tags.non_deterministic = self.device != "cpu"
        return tags

    def _bags(self, X, reset: bool) -> tuple[list[np.ndarray], list[int]]:
        """The bags of `X` with tiles, as float32 arrays, and the positions of those without (fit skips them)."""
        table = isinstance(X, (list, tuple)) and len(X) > 0 and np.ndim(X[0]) == 1
        if table or isinstance(X, np.ndarray) and X.ndim == 2 or not isinstance(X, (list, tuple, np.ndarray)):
            X = check_array(X, dtype=np.float32)
            bags = [row[None] for row in X]
        elif isinstance(X, np.ndarray) and X.ndim == 3:
            bags = list(np.asarray(X, dtype=np.float32))
        else:
            bags = list(X)
        if not bags:
            raise ValueError("no bags given")
        empty = [i for i, bag in enumerate(bags) if np.ndim(bag) == 2 and np.shape(bag)[0] == 0]
        if empty and not reset:
            raise ValueError(f"bag(s) {empty[:20]} have no tiles: there is nothing to predict from")
        if len(empty) == len(bags):
            raise ValueError("no bag has any tile")
        if empty:
            warnings.warn(f"skipping {len(empty)} bag(s) without tiles: {empty[:20]} (positions in X)",
                          stacklevel=3)  # fmt: skip
        skip = set(empty)
        bags = [check_array(bag, dtype=np.float32) for i, bag in enumerate(bags) if i not in skip]
        dim = bags[0].shape[1]
        if reset:
            self.n_features_in_ = dim
        elif dim != self.n_features_in_:
            raise ValueError(f"X has {dim} features, but MILEstimator is expecting {self.n_features_in_} "
                             "features as input (features per tile)")  # fmt: skip
        return bags, empty

    def _config(self) -> FitConfig:
        return FitConfig(epochs=self.epochs, lr=self.lr, weight_decay=self.weight_decay, batch_size=self.batch_size,
                         max_tiles=self.max_tiles, patience=self.patience, schedule=self.schedule,
                         device=self.device, seed=self.seed, progress=self.progress,
                         standardize=self.standardize)  # fmt: skip

    def fit(self, X, y):
        """Train on bags `X` with labels `y`; returns self. Bags without tiles are skipped with a warning."""
        bags, empty = self._bags(X, reset=True)
        y = np.asarray(y)
        if len(y) != len(bags) + len(empty):
            raise ValueError(f"{len(bags) + len(empty)} bags but {len(y)} labels")
        y = np.delete(y, empty, axis=0)
        task = create_task(self.task, **(self.task_kwargs or {}))
        target = y
        if self.task in _CLASSIFIERS:
            y = column_or_1d(y, warn=True)
            kind = type_of_target(y)
            if kind == "continuous":
                raise ValueError("Unknown label type: continuous; classification tasks take class labels")
            self.classes_, target = np.unique(y, return_inverse=True)
            if len(self.classes_) < 2:
                raise ValueError(f"y has one class ({self.classes_[0]!r}); a classifier needs at least two")
            if self.task == "binary" and len(self.classes_) > 2:
                raise ValueError(f"Only binary classification is supported by task='binary'; y has "
                                 f"{len(self.classes_)} classes: use task='multiclass'")  # fmt: skip
        task.fit_labels(target)
        train, val = (bags, target), None
        if self.validation_fraction > 0:
            strata = task.strata(task.encode(target))
            fit_index, val_index = train_test_split(np.arange(len(bags)), test_size=self.validation_fraction,
                                                    random_state=self.seed, stratify=strata)  # fmt: skip
            train = ([bags[i] for i in fit_index], target[fit_index])
            val = ([bags[i] for i in val_index], target[val_index])
        kwargs = {**task.model_kwargs(), **(self.model_kwargs or {})}
        torch.manual_seed(self.seed)  # the initialisation too, so that a refit repeats the fit
        self.model_ = create_model(self.model, bags[0].shape[1], task.n_outputs, **kwargs)
        self.history_ = fit(self.model_, task, train, val, self._config())
        self.task_ = task
        return self

    def decision_function(self, X) -> np.ndarray:
        """The model's logits: (n,) for one output (binary, survival), else (n, K)."""
        check_is_fitted(self)
        bags, _ = self._bags(X, reset=False)
        logits = predict_logits(self.model_, (bags, np.zeros(len(bags))), self.device)
        return logits[:, 0] if logits.shape[1] == 1 else logits

    def _prediction(self, X) -> np.ndarray:
        logits = self.decision_function(X)
        return self.task_.predict(logits[:, None] if logits.ndim == 1 else logits)

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (n, n_classes) for binary, multiclass and grade; per target (n, T) for mutation."""
        check_is_fitted(self)
        if self.task == "survival":
            raise AttributeError("a survival MILEstimator has no probabilities; use predict (log-risk)")
        p = self._prediction(X)
        return np.column_stack([1 - p, p]) if self.task == "binary" else p

    def predict(self, X) -> np.ndarray:
        """Labels (classification, grade), 0/1 per target (mutation) or log-risk (survival)."""
        check_is_fitted(self)
        decided = self.task_.decide(self._prediction(X))
        if self.task in _CLASSIFIERS:
            return self.classes_[np.asarray(decided, dtype=int)]
        return decided

    def score(self, X, y) -> float:
        """Accuracy (classification), quadratic weighted kappa (grade), macro AUC (mutation), C-index (survival)."""
        check_is_fitted(self)
        y = np.asarray(y)
        if self.task in _CLASSIFIERS:
            return float(np.mean(self.predict(X) == y))
        target = self.task_.encode(y)
        return float(self.task_.metrics(target, self._prediction(X))[self.task_.monitor])

    def attention(self, X) -> list[np.ndarray]:
        """Each bag's `instance_scores`, an (n_i, K or 1) array (attention weights or per-tile scores)."""
        check_is_fitted(self)
        bags, _ = self._bags(X, reset=False)
        return predict_logits(self.model_, (bags, np.zeros(len(bags))), self.device, attention=True)[1]

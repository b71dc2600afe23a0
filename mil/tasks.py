"""MIL tasks: label parsing, output size, loss, predictions and metrics for one kind of slide label.

One training loop serves all of them (`mil.fit`). A task learns its label map from the training labels
(`fit_labels`), turns labels into a float array (`encode`, which lists the offending rows of bad labels), gives
the loss of a model's logits and the metrics of its predictions. `predict` turns logits (n, K) into what the
metrics use: probabilities (binary (n,), multiclass and grade (n, classes), mutation (n, targets)) or the
log-risk (survival (n,), higher means an earlier event).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    roc_auc_score,
    roc_curve,
)

from survival import concordance_index, concordance_index_ipcw, cox_loss, hazard_ratio, logrank_test

__all__ = [
    "BinaryTask",
    "GradeTask",
    "MultiClassTask",
    "MutationTask",
    "SurvivalTask",
    "Task",
    "create_task",
    "list_tasks",
    "register_task",
    "task_from_state",
]

_TASKS: dict[str, Callable[..., Task]] = {}


def register_task(fn: Callable[..., Task]) -> Callable[..., Task]:
    """Register a task factory under its function name."""
    _TASKS[fn.__name__] = fn
    return fn


def list_tasks() -> list[str]:
    return sorted(_TASKS)


def create_task(name: str, **kwargs) -> Task:
    """A new (unfitted) task: "binary", "multiclass", "grade", "mutation" or "survival"."""
    if name not in _TASKS:
        raise ValueError(f"unknown MIL task {name!r}; registered: {list_tasks()}")
    return _TASKS[name](**kwargs)


def _rows(bad: np.ndarray, ids: Sequence | None, values) -> str:
    index = np.flatnonzero(bad)
    names = [
        f"{ids[i]!s} ({values[i]!r})" if ids is not None else f"row {i} ({values[i]!r})" for i in index[:20]
    ]
    more = f" and {len(index) - 20} more" if len(index) > 20 else ""
    return ", ".join(names) + more


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC, NaN when only one class is present."""
    if len(np.unique(y)) < 2:
        return float("nan")
    return float(roc_auc_score(y, p))


class Task:
    """Base of the tasks. `monitor` names the validation metric for early stopping (higher is better)."""

    name = ""
    monitor = ""
    # Whether the loss and metrics mask missing (NaN) label values: then a slide needs only one known value
    # (`BagDataset(allow_missing=)`, `slidestream mil train`); else a missing value leaves the slide out.
    masks_missing = False
    kwargs: dict

    def fit_labels(self, y, ids: Sequence | None = None) -> Task:
        """Learn the label map (and class weights) from training labels."""
        self.encode(y, ids)
        return self

    @property
    def n_outputs(self) -> int:
        raise NotImplementedError

    def encode(self, y, ids: Sequence | None = None) -> np.ndarray:
        raise NotImplementedError

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def predict(self, logits: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def metrics(self, target: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
        """Scalar metrics of predictions against encoded targets (the ones logged each epoch)."""
        raise NotImplementedError

    def evaluate(self, target: np.ndarray, prediction: np.ndarray) -> dict:
        """`metrics` plus the evaluation-only figures (confusion matrix, hazard ratio); JSON-able."""
        return self.metrics(target, prediction)

    def decide(self, prediction: np.ndarray) -> np.ndarray:
        """Predicted labels in the caller's label space."""
        raise NotImplementedError

    def finalize(self, target: np.ndarray, prediction: np.ndarray) -> None:
        """Settle what is chosen on validation (the binary threshold); default: nothing."""

    def instance_labels(self, target: torch.Tensor) -> torch.Tensor | None:
        """Each bag's class for models with an instance loss (CLAM), or None when the task has no classes."""
        return None

    def strata(self, target: np.ndarray) -> np.ndarray:
        """Labels to stratify folds by."""
        return np.asarray(target).astype(int)

    def model_kwargs(self) -> dict:
        """Keyword arguments the task needs from the model (the survival task's Cox head)."""
        return {}

    def columns(self) -> list[str]:
        """Names of the columns of `predict`'s output, for prediction tables."""
        raise NotImplementedError

    def fold_problem(self, target: np.ndarray) -> str | None:
        """Why a test fold with these encoded targets cannot be evaluated (e.g. no positive slide), or None."""
        return None

    def state(self) -> dict:
        """JSON-able description: name, kwargs and what was learned; `task_from_state` rebuilds it."""
        return {"name": self.name, "kwargs": self.kwargs, "learned": self._learned()}

    def _learned(self) -> dict:
        return {}

    def _restore(self, learned: dict) -> None:
        pass


def task_from_state(state: dict) -> Task:
    task = create_task(state["name"], **state["kwargs"])
    task._restore(state.get("learned", {}))
    return task


def _as_1d(y, what: str) -> np.ndarray:
    values = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, dtype=object)
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.ndim != 1:
        raise ValueError(f"{what} labels must have shape (n,), got {values.shape}")
    return values


def _is_missing(v) -> bool:
    return v is None or (isinstance(v, float) and np.isnan(v))


class BinaryTask(Task):
    """Positive (1) / negative (0) slides: BCE with an optional positive weight, AUC, balanced accuracy.

    `class_weight`: None, "balanced" (positive weight = negatives / positives in training) or a float. The
    operating threshold on the probability is chosen on validation (Youden's J) by `finalize`; 0.5 before.
    """

    name = "binary"
    monitor = "auc"

    def __init__(self, class_weight: str | float | None = None):
        self.kwargs = {"class_weight": class_weight}
        self.class_weight = class_weight
        self.pos_weight_: float | None = None
        self.threshold_ = 0.5

    @property
    def n_outputs(self) -> int:
        return 1

    def encode(self, y, ids=None) -> np.ndarray:
        values = _as_1d(y, "binary")
        bad = np.array([_is_missing(v) or v not in (0, 1) for v in values], dtype=bool)
        if bad.any():
            raise ValueError(f"binary labels must be 0 or 1; offending: {_rows(bad, ids, values)}")
        return values.astype(np.float32)

    def fit_labels(self, y, ids=None) -> BinaryTask:
        target = self.encode(y, ids)
        pos = float(target.sum())
        if self.class_weight == "balanced":
            self.pos_weight_ = (len(target) - pos) / pos if pos else 1.0
        elif self.class_weight is not None:
            self.pos_weight_ = float(self.class_weight)
        return self

    def loss(self, logits, target):
        weight = None if self.pos_weight_ is None else torch.tensor(self.pos_weight_, device=logits.device)
        return F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), pos_weight=weight)

    def predict(self, logits):
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)[:, 0]))

    def decide(self, prediction):
        return (prediction >= self.threshold_).astype(int)

    def metrics(self, target, prediction):
        decided = self.decide(prediction)
        return {
            "auc": _auc(target, prediction),
            "balanced_accuracy": float(balanced_accuracy_score(target, decided)) if len(set(target)) > 1 else float("nan"),
            "accuracy": float(accuracy_score(target, decided)),
        }  # fmt: skip

    def finalize(self, target, prediction):
        if len(np.unique(target)) == 2:
            fpr, tpr, thresholds = roc_curve(target, prediction)
            best = int(np.argmax(tpr - fpr))
            self.threshold_ = float(np.clip(thresholds[best], 0.0, 1.0))

    def instance_labels(self, target):
        return target.long()

    def columns(self):
        return ["probability"]

    def fold_problem(self, target):
        missing = [name for value, name in ((1, "positive"), (0, "negative")) if not (target == value).any()]
        return f"no {' and no '.join(missing)} slide" if missing else None

    def _learned(self):
        return {"pos_weight": self.pos_weight_, "threshold": self.threshold_}

    def _restore(self, learned):
        self.pos_weight_ = learned.get("pos_weight")
        self.threshold_ = learned.get("threshold", 0.5)


class MultiClassTask(Task):
    """One class per slide among K: cross-entropy, macro one-vs-rest AUC, accuracy, confusion matrix.

    The classes are the sorted distinct training labels (`classes_`); a label never seen in training is an error.
    `class_weight="balanced"` weighs each class by n / (K * count).
    """

    name = "multiclass"
    monitor = "auc"

    def __init__(self, class_weight: str | None = None):
        self.kwargs = {"class_weight": class_weight}
        self.class_weight = class_weight
        self.classes_: list | None = None
        self.weight_: list[float] | None = None

    @property
    def n_outputs(self) -> int:
        if self.classes_ is None:
            raise RuntimeError(
                "the multiclass task has no classes yet: call fit_labels on the training labels"
            )
        return len(self.classes_)

    def fit_labels(self, y, ids=None) -> MultiClassTask:
        values = _as_1d(y, "multiclass")
        bad = np.array([_is_missing(v) for v in values], dtype=bool)
        if bad.any():
            raise ValueError(f"multiclass labels are missing; offending: {_rows(bad, ids, values)}")
        self.classes_ = sorted({v.item() if isinstance(v, np.generic) else v for v in values})
        if len(self.classes_) < 2:
            raise ValueError(f"a multiclass task needs at least two classes, got {self.classes_}")
        if self.class_weight == "balanced":
            counts = np.bincount(self.encode(values).astype(int), minlength=len(self.classes_))
            self.weight_ = (len(values) / (len(self.classes_) * counts)).tolist()
        return self

    def encode(self, y, ids=None):
        values = _as_1d(y, "multiclass")
        index = {c: i for i, c in enumerate(self.classes_ or [])}
        codes = np.array([index.get(v.item() if isinstance(v, np.generic) else v, -1) for v in values])
        if (codes < 0).any():
            raise ValueError(f"labels outside the training classes {self.classes_}: "
                             f"{_rows(codes < 0, ids, values)}")  # fmt: skip
        return codes.astype(np.float32)

    def loss(self, logits, target):
        weight = None if self.weight_ is None else torch.tensor(self.weight_, device=logits.device)
        return F.cross_entropy(logits, target.long(), weight=weight)

    def predict(self, logits):
        z = np.asarray(logits, dtype=np.float64)
        z = np.exp(z - z.max(axis=1, keepdims=True))
        return z / z.sum(axis=1, keepdims=True)

    def decide(self, prediction):
        return np.asarray(self.classes_, dtype=object)[prediction.argmax(axis=1)]

    def metrics(self, target, prediction):
        target = target.astype(int)
        aucs = [_auc(target == k, prediction[:, k]) for k in range(prediction.shape[1])]
        finite = [a for a in aucs if np.isfinite(a)]
        return {"auc": float(np.mean(finite)) if finite else float("nan"),
                "accuracy": float(accuracy_score(target, prediction.argmax(axis=1)))}  # fmt: skip

    def evaluate(self, target, prediction):
        labels = list(range(prediction.shape[1]))
        matrix = confusion_matrix(target.astype(int), prediction.argmax(axis=1), labels=labels)
        return {**self.metrics(target, prediction), "confusion_matrix": matrix.tolist(),
                "classes": [str(c) for c in self.classes_]}  # fmt: skip

    def instance_labels(self, target):
        return target.long()

    def columns(self):
        return [f"p_{c}" for c in self.classes_]

    def fold_problem(self, target):
        missing = [c for k, c in enumerate(self.classes_) if not (target == k).any()]
        return f"no slide of class(es) {missing}" if missing else None

    def _learned(self):
        return {"classes": self.classes_, "weight": self.weight_}

    def _restore(self, learned):
        self.classes_, self.weight_ = learned.get("classes"), learned.get("weight")


GRADE_LINKS = ("corn", "cumulative", "regression")


class GradeTask(Task):
    """Ordered grades (Gleason / ISUP grade group 0-5, or any ordered labels) with an ordinal head.

    `levels`: the number of grades (labels 0..levels-1) or the ordered labels themselves. The model gives
    levels - 1 logits. `link="corn"` (Shi et al. 2023): logit k is the log-odds of P(grade > k | grade >= k),
    each learned on the slides that reached grade k, with any head. `link="cumulative"` (proportional odds,
    McCullagh 1980): logit k = s - t_k is the log-odds of P(grade > k) for one slide score s and ordered
    thresholds; the loss is the negative log-likelihood of the grade, and the model needs the cumulative-link
    head (`model_kwargs()` gives `head="cumulative"`). `link="regression"`: one output, the grade's position
    s (0 for the first level), learned by a Huber loss and read as P(grade > k) = sigmoid(s - k - 0.5), so the
    predicted grade is s rounded to a level; on weak evidence it regresses to the middle grades rather than
    collapsing to the most frequent one. `predict` gives the class probabilities (n, levels);
    the predicted grade is the number of cumulative probabilities P(grade > k) above 0.5. Metrics: quadratic
    weighted kappa (monitored), accuracy, mean absolute error in grade steps.
    """

    name = "grade"
    monitor = "qwk"

    def __init__(self, levels: int | Sequence = 6, link: str = "corn"):
        if link not in GRADE_LINKS:
            raise ValueError(f"link must be one of {GRADE_LINKS}, got {link!r}")
        self.kwargs = {"levels": levels if isinstance(levels, int) else list(levels), "link": link}
        self.levels = list(range(levels)) if isinstance(levels, int) else list(levels)
        self.link = link
        if len(self.levels) < 2:
            raise ValueError(f"a grade task needs at least two levels, got {self.levels}")

    @property
    def n_outputs(self) -> int:
        return 1 if self.link == "regression" else len(self.levels) - 1

    def encode(self, y, ids=None):
        values = _as_1d(y, "grade")
        index = {v: i for i, v in enumerate(self.levels)}
        codes = np.array([-1 if _is_missing(v) else index.get(v.item() if isinstance(v, np.generic) else v, -1)
                          for v in values])  # fmt: skip
        if (codes < 0).any():
            raise ValueError(f"grades outside {self.levels}: {_rows(codes < 0, ids, values)}")
        return codes.astype(np.float32)

    def loss(self, logits, target):
        if self.link == "cumulative":
            return _cumulative_link_loss(logits, target.long())
        if self.link == "regression":
            return F.huber_loss(logits[:, 0], target.float())
        target = target.long()
        losses, count = [], 0
        for k in range(logits.shape[1]):
            at_risk = target >= k  # CORN: task k is learned on the slides that reached grade k
            if at_risk.any():
                losses.append(F.binary_cross_entropy_with_logits(
                    logits[at_risk, k], (target[at_risk] > k).float(), reduction="sum"))  # fmt: skip
                count += int(at_risk.sum())
        return torch.stack(losses).sum() / count

    def predict(self, logits):
        logits = np.asarray(logits, dtype=np.float64)
        if self.link == "regression":  # P(grade > k) for the thresholds k + 0.5 between the levels
            logits = logits[:, :1] - (np.arange(len(self.levels) - 1) + 0.5)
        sigmoid = 1.0 / (1.0 + np.exp(-logits))
        if self.link in (
            "cumulative",
            "regression",
        ):  # P(grade > k) directly; already decreasing with the cumulative head
            above = np.minimum.accumulate(sigmoid, axis=1)
        else:  # CORN: chain the conditional probabilities
            above = np.cumprod(sigmoid, axis=1)
        upper = np.concatenate([np.ones((len(above), 1)), above], axis=1)
        lower = np.concatenate([above, np.zeros((len(above), 1))], axis=1)
        return upper - lower

    def model_kwargs(self):
        return {"head": "cumulative"} if self.link == "cumulative" else {}

    def _grade(self, prediction):
        above = 1.0 - np.cumsum(prediction, axis=1)[:, :-1]
        return (above > 0.5).sum(axis=1)

    def decide(self, prediction):
        return np.asarray(self.levels, dtype=object)[self._grade(prediction)]

    def metrics(self, target, prediction):
        target, grade = target.astype(int), self._grade(prediction)
        same = len(np.unique(np.concatenate([target, grade]))) < 2
        return {"qwk": 1.0 if same else float(cohen_kappa_score(target, grade, weights="quadratic")),
                "accuracy": float(accuracy_score(target, grade)),
                "mae": float(np.abs(target - grade).mean())}  # fmt: skip

    def evaluate(self, target, prediction):
        labels = list(range(len(self.levels)))
        matrix = confusion_matrix(target.astype(int), self._grade(prediction), labels=labels)
        return {**self.metrics(target, prediction), "confusion_matrix": matrix.tolist()}

    def columns(self):
        return [f"p_{level}" for level in self.levels]

    def fold_problem(self, target):
        return "all slides have the same grade" if len(np.unique(target)) < 2 else None


def _cumulative_link_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean negative log-likelihood of grades `target` (n,) under a cumulative logit model, `logits` (n, K) with
    logit k = s - t_k decreasing in k: P(grade = k) = sigmoid(l_{k-1}) - sigmoid(l_k), computed in log space as
    log sigmoid(l_{k-1}) + log sigmoid(-l_k) + log(1 - exp(l_k - l_{k-1}))."""
    if logits.shape[1] > 1 and bool((logits[:, 1:] > logits[:, :-1]).any()):
        raise ValueError("the cumulative-link grade task needs logits decreasing in k (P(grade > k)); build the "
                         "model with head='cumulative' (task.model_kwargs())")  # fmt: skip
    k, top = target[:, None], logits.shape[1]
    below = logits.gather(1, k.clamp(max=top - 1))[:, 0]  # l_k
    above = logits.gather(1, (k - 1).clamp(min=0))[:, 0]  # l_{k-1}
    zero = torch.zeros_like(below)
    log_p = (torch.where(target < top, F.logsigmoid(-below), zero)
             + torch.where(target > 0, F.logsigmoid(above), zero)
             + torch.where((target > 0) & (target < top),
                           torch.log(-torch.expm1((below - above).clamp(max=-1e-6))), zero))  # fmt: skip
    return -log_p.mean()


class MutationTask(Task):
    """Several binary targets per slide (e.g. TP53, KRAS, EGFR, MSI); NaN marks a missing label (masked BCE).

    `targets`: the target names (their order is the column order of the labels). Metrics: AUC per target
    (`auc_<name>`) and their mean (`auc`, monitored). `class_weight="balanced"` weighs each target's positives
    by its negatives / positives in training.
    """

    name = "mutation"
    masks_missing = True
    monitor = "auc"

    def __init__(self, targets: Sequence[str] = ("target",), class_weight: str | None = None):
        self.targets = [str(t) for t in targets]
        if not self.targets:
            raise ValueError("a mutation task needs at least one target")
        self.kwargs = {"targets": self.targets, "class_weight": class_weight}
        self.class_weight = class_weight
        self.pos_weight_: list[float] | None = None

    @property
    def n_outputs(self) -> int:
        return len(self.targets)

    def encode(self, y, ids=None):
        if isinstance(y, pd.DataFrame) and set(self.targets) <= set(y.columns):
            y = y[self.targets]
        values = np.asarray(y.to_numpy() if isinstance(y, (pd.Series, pd.DataFrame)) else y, dtype=np.float64)
        if values.ndim == 1 and len(self.targets) == 1:
            values = values[:, None]
        if values.ndim != 2 or values.shape[1] != len(self.targets):
            raise ValueError(f"mutation labels must have shape (n, {len(self.targets)}) for targets "
                             f"{self.targets}, got {values.shape}")  # fmt: skip
        bad = ~(np.isnan(values) | (values == 0) | (values == 1)).all(axis=1)
        if bad.any():
            raise ValueError(f"mutation labels must be 0, 1 or NaN (missing); offending: "
                             f"{_rows(bad, ids, [v.tolist() for v in values])}")  # fmt: skip
        return values.astype(np.float32)

    def fit_labels(self, y, ids=None):
        target = self.encode(y, ids)
        if self.class_weight == "balanced":
            pos = np.nansum(target, axis=0)
            neg = (~np.isnan(target)).sum(axis=0) - pos
            self.pos_weight_ = np.where(pos > 0, neg / np.maximum(pos, 1), 1.0).tolist()
        return self

    def loss(self, logits, target):
        known = ~torch.isnan(target)
        weight = None if self.pos_weight_ is None else torch.tensor(self.pos_weight_, device=logits.device)
        losses = F.binary_cross_entropy_with_logits(logits, torch.nan_to_num(target), pos_weight=weight,
                                                    reduction="none")  # fmt: skip
        return (losses * known).sum() / known.sum().clamp_min(1)

    def predict(self, logits):
        return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float64)))

    def decide(self, prediction):
        return (prediction >= 0.5).astype(int)

    def metrics(self, target, prediction):
        out = {}
        for k, name in enumerate(self.targets):
            known = ~np.isnan(target[:, k])
            out[f"auc_{name}"] = _auc(target[known, k], prediction[known, k])
        finite = [v for v in out.values() if np.isfinite(v)]
        return {"auc": float(np.mean(finite)) if finite else float("nan"), **out}

    def strata(self, target):
        """Each slide's rarest positive target (fewest positive slides), or "none": folds then spread the
        positives of every target, not only of the first (often an auxiliary one, e.g. cancer, whose strata
        leave a rare mutation's few positives to chance). A stratum of one slide joins "none"."""
        target = np.asarray(target, dtype=np.float64).reshape(len(target), -1)
        positive = target == 1
        rarest_first = np.argsort(positive.sum(axis=0), kind="stable")
        ordered = positive[:, rarest_first]
        strata = np.where(ordered.any(axis=1), ordered.argmax(axis=1), len(rarest_first))
        values, counts = np.unique(strata, return_counts=True)
        strata[np.isin(strata, values[counts < 2])] = len(rarest_first)
        return strata

    def columns(self):
        return [f"p_{t}" for t in self.targets]

    def fold_problem(self, target):
        missing = [t for k, t in enumerate(self.targets) if not (target[:, k] == 1).any()]
        return f"no positive slide for target(s) {missing}" if missing else None

    def _learned(self):
        return {"pos_weight": self.pos_weight_}

    def _restore(self, learned):
        self.pos_weight_ = learned.get("pos_weight")


class SurvivalTask(Task):
    """Time to event: labels (n, 2) = (time, event 0/1); `survival.CoxHead` + `survival.cox_loss` (Efron ties).

    Metrics: Harrell's C-index (`c_index`, monitored) and, with a `horizon`, Uno's C truncated there
    (`c_index_uno`, censoring from the training labels). `evaluate` adds the hazard ratio of predicted high risk
    (above the median predicted risk) over low risk with its 95% CI and the log-rank p-value, from `survival`.
    A Cox loss needs several slides per step: the auto plan sets the batch size accordingly.
    """

    name = "survival"
    monitor = "c_index"

    def __init__(self, horizon: float | None = None, ties: str = "efron"):
        self.kwargs = {"horizon": horizon, "ties": ties}
        self.horizon, self.ties = horizon, ties
        self.train_: list[list[float]] | None = None

    @property
    def n_outputs(self) -> int:
        return 1

    def encode(self, y, ids=None):
        values = np.asarray(y.to_numpy() if isinstance(y, pd.DataFrame) else y, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != 2:
            raise ValueError(f"survival labels must have shape (n, 2) = (time, event), got {values.shape}")
        time, event = values[:, 0], values[:, 1]
        bad = np.isnan(time) | (time < 0) | ~np.isin(event, (0, 1))
        if bad.any():
            raise ValueError("survival labels need a non-negative time and an event of 0 or 1; offending: "
                             + _rows(bad, ids, [tuple(v) for v in values.tolist()]))  # fmt: skip
        return values.astype(np.float32)

    def fit_labels(self, y, ids=None):
        self.train_ = self.encode(y, ids).tolist()
        return self

    def loss(self, logits, target):
        return cox_loss(logits[:, 0], target[:, 0], target[:, 1].long(), ties=self.ties)

    def predict(self, logits):
        return np.asarray(logits, dtype=np.float64)[:, 0]

    def decide(self, prediction):
        return prediction

    def metrics(self, target, prediction):
        time, event = target[:, 0], target[:, 1].astype(bool)
        out = {"c_index": float("nan")}
        try:
            out["c_index"] = concordance_index(time, event, prediction)
        except ValueError:
            pass  # no comparable pair (e.g. no event): NaN
        if self.horizon is not None and self.train_ is not None:
            train = np.asarray(self.train_)
            try:
                out["c_index_uno"] = concordance_index_ipcw(
                    train[:, 0], train[:, 1].astype(bool), time, event, prediction, tau=self.horizon
                )
            except ValueError:
                out["c_index_uno"] = float("nan")
        return out

    def evaluate(self, target, prediction):
        out = dict(self.metrics(target, prediction))
        time, event = target[:, 0], target[:, 1].astype(bool)
        high = prediction > np.median(prediction)
        if 0 < high.sum() < len(high) and event.any():
            try:
                hr = hazard_ratio(time, event, high)
            except ValueError:  # perfect separation (small folds): no finite hazard ratio, the C-index stands
                return {**out, "logrank_p": logrank_test(time, event, high).p_value}
            out.update(hazard_ratio=hr.hazard_ratio, hazard_ratio_lower=hr.lower, hazard_ratio_upper=hr.upper,
                       hazard_ratio_p=hr.p_value,
                       logrank_p=logrank_test(time, event, high).p_value)  # fmt: skip
        return out

    def strata(self, target):
        time, event = target[:, 0], target[:, 1].astype(int)
        quartile = np.searchsorted(np.quantile(time, [0.25, 0.5, 0.75]), time, side="right")
        return event * 4 + quartile

    def model_kwargs(self):
        return {"head": "cox"}

    def columns(self):
        return ["risk"]

    def fold_problem(self, target):
        return "no event (every slide censored)" if not (target[:, 1] == 1).any() else None

    def _learned(self):
        return {"train": self.train_}

    def _restore(self, learned):
        self.train_ = learned.get("train")


@register_task
def binary(**kwargs) -> BinaryTask:
    return BinaryTask(**kwargs)


@register_task
def multiclass(**kwargs) -> MultiClassTask:
    return MultiClassTask(**kwargs)


@register_task
def grade(**kwargs) -> GradeTask:
    return GradeTask(**kwargs)


@register_task
def mutation(**kwargs) -> MutationTask:
    return MutationTask(**kwargs)


@register_task
def survival(**kwargs) -> SurvivalTask:
    return SurvivalTask(**kwargs)

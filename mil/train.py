"""The one MIL training loop (`fit`), its plan from the data (`plan`), prediction and patient-grouped
cross-validation with a fold ensemble.

Bags are in memory: `InMemoryBags` (features (n_i, D) per slide, labels, slide ids, patient groups), or anything
`as_bags` turns into it: a `mil.BagDataset`, a `(bags, y)` or `(bags, y, ids)` tuple.
"""

from __future__ import annotations

import copy
import json
import math
import os
import random
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import StratifiedGroupKFold
from tqdm.auto import tqdm

from mil.bags import BagDataset
from mil.features import resolve_device
from mil.models import MILModel, create_model
from mil.scaling import FeatureScale
from mil.tasks import Task, create_task
from wsi.atomic import atomic_file

__all__ = [
    "CVResult",
    "FitConfig",
    "InMemoryBags",
    "as_bags",
    "cross_validate",
    "fit",
    "plan",
    "predict_logits",
    "write_json",
]


@dataclass(frozen=True)
class InMemoryBags:
    """Slides as bags in memory: `features` one float32 (n_i, D) tensor per slide, raw `labels` (one entry or row
    per slide, parsed by the task), `ids` slide ids, `groups` patient ids (default: the slide ids)."""

    features: list
    labels: object
    ids: list
    groups: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    @property
    def dim(self) -> int:
        return int(next((f for f in self.features if len(f)), self.features[0]).shape[1])

    def subset(self, index: Sequence[int]) -> InMemoryBags:
        index = list(index)
        return InMemoryBags([self.features[i] for i in index], _take(self.labels, index),
                            [self.ids[i] for i in index], self.groups[index])  # fmt: skip


def _take(labels, index: list[int]):
    if isinstance(labels, (pd.Series, pd.DataFrame)):
        return labels.iloc[index]
    return np.asarray(labels)[index]


def as_bags(data, ids: Sequence[str] | None = None, groups: Sequence | None = None,
            drop_empty: bool = True) -> InMemoryBags:  # fmt: skip
    """`InMemoryBags` from a `BagDataset`, a `(bags, y)` / `(bags, y, ids)` tuple or `InMemoryBags`.

    Bags are (n_i, D) arrays or tensors. Bags without tiles are dropped with a warning naming them (kept, still
    with the warning, when not `drop_empty`: prediction gives them NaN); bags whose feature dimension differs
    from the first one's are an error naming both.
    """
    if isinstance(data, InMemoryBags):
        return data
    if isinstance(data, BagDataset):
        items = [data[i] for i in range(len(data))]
        features, labels = [b.features for b in items], data.labels
        ids, groups = list(data.slide_ids), data.groups
    elif isinstance(data, tuple) and len(data) in (2, 3):
        features, labels = list(data[0]), data[1]
        if len(data) == 3:
            ids = data[2]
    else:
        raise TypeError("bags must be InMemoryBags, a mil.BagDataset, or a (bags, y) or (bags, y, ids) tuple, "
                        f"got {type(data).__name__}")  # fmt: skip
    ids = [str(i) for i in (ids if ids is not None else range(len(features)))]
    if len(labels) != len(features) or len(ids) != len(features):
        raise ValueError(f"{len(features)} bags but {len(labels)} labels and {len(ids)} ids")
    groups = np.asarray(groups if groups is not None else ids).astype(str)
    tensors = []
    for slide_id, bag in zip(ids, features, strict=True):
        bag = torch.as_tensor(np.asarray(bag, dtype=np.float32) if not torch.is_tensor(bag) else bag).float()
        if bag.dim() != 2:
            raise ValueError(f"bag {slide_id}: features must have shape (n_tiles, D), got {tuple(bag.shape)}")
        tensors.append(bag)
    empty = [i for i, bag in enumerate(tensors) if bag.shape[0] == 0]
    if empty:
        what = "skipping" if drop_empty else "no prediction (NaN) for"
        warnings.warn(
            f"{what} {len(empty)} bag(s) without tiles: {[ids[i] for i in empty][:20]}", stacklevel=2
        )
    keep = [i for i in range(len(tensors)) if tensors[i].shape[0] > 0]
    if not keep:
        raise ValueError("no bag has any tile")
    dims = {tensors[i].shape[1] for i in keep}
    if len(dims) > 1:
        first = keep[0]
        other = next(i for i in keep if tensors[i].shape[1] != tensors[first].shape[1])
        raise ValueError(f"feature dimensions differ between bags: {ids[first]} has {tensors[first].shape[1]}, "
                         f"{ids[other]} has {tensors[other].shape[1]}")  # fmt: skip
    bags = InMemoryBags(tensors, labels, ids, groups)
    return bags.subset(keep) if drop_empty and len(keep) < len(tensors) else bags


@dataclass(frozen=True)
class FitConfig:
    """Training settings. `patience` counts epochs without a better validation metric (0: no early stopping).

    `batch_size` bags are padded into one step; `accumulate` steps add their gradients before the optimizer
    steps (for one-bag steps). `max_tiles` draws that many tiles per bag, a new draw each epoch (validation uses
    all tiles). `schedule`: "cosine", "plateau" (on the validation metric) or "none". `class_weight` ("balanced"
    or None) is handed to tasks that weigh classes. `mixed_precision` is bfloat16 autocast on CUDA only.
    `deterministic` turns on torch's deterministic algorithms for the run. `progress`: a bar over the epochs
    showing the validation metric (tqdm; hidden when stderr is not a terminal). `standardize` fits a
    `mil.FeatureScale` on the training bags' tiles and sets it on the model (which applies it in `forward`, and
    checkpoints keep it); False leaves the features as given. `instance_dropout` drops that share of each
    training bag's tiles at each step (at least one tile stays), a regulariser for small cohorts.
    """

    epochs: int = 50
    lr: float = 2e-4
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    patience: int = 10
    batch_size: int = 1
    accumulate: int = 1
    max_tiles: int | None = None
    class_weight: str | None = None
    grad_clip: float | None = None
    device: str = "auto"
    mixed_precision: bool = True
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    standardize: bool = True
    instance_dropout: float = 0.0

    def __post_init__(self):
        if self.schedule not in ("cosine", "plateau", "none"):
            raise ValueError(f"schedule must be 'cosine', 'plateau' or 'none', got {self.schedule!r}")
        for name in ("epochs", "batch_size", "accumulate"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.max_tiles is not None and self.max_tiles < 1:
            raise ValueError(f"max_tiles must be positive or None, got {self.max_tiles}")
        if not 0.0 <= self.instance_dropout < 1.0:
            raise ValueError(f"instance_dropout must be in [0, 1), got {self.instance_dropout}")


def plan(bags: InMemoryBags, task: Task, **overrides) -> dict:
    """Defaults that follow from the data (as nnMIL / nnU-Net plan them), as a JSON-able dict.

    `plan(...)["config"]` holds the `FitConfig` fields; `["data"]` the figures they came from. Rules: fewer bags
    get more epochs, more patience and more weight decay; wide features a smaller learning rate; large bags a
    `max_tiles` cap; small bags (median <= 256 tiles) are padded into batches of 16; survival needs batches of
    several slides for the Cox loss (32, with bags capped at 2,048 tiles); the learning rate grows with the
    batch size (linear scaling, at most 2e-3); a class under
    half the largest class turns on balanced class weights. `overrides` replace planned fields (checked names).
    """
    bags = as_bags(bags)
    sizes = np.array([len(f) for f in bags.features])
    n, dim = len(bags), bags.dim
    target = task.encode(bags.labels, bags.ids)
    data = {"n_bags": n, "dim": dim, "median_tiles": float(np.median(sizes)),
            "p90_tiles": float(np.percentile(sizes, 90)), "max_tiles": int(sizes.max()), "task": task.name}  # fmt: skip
    epochs, patience = (100, 20) if n < 100 else (50, 10) if n < 1000 else (30, 8)
    config = {"epochs": epochs, "patience": patience, "lr": 1e-4 if dim >= 1024 else 2e-4,
              "weight_decay": 1e-3 if n < 200 else 1e-4, "schedule": "cosine"}  # fmt: skip
    cap = 8192 if dim <= 1024 else 4096
    config["max_tiles"] = cap if data["p90_tiles"] > cap else None
    config["batch_size"] = 16 if data["median_tiles"] <= 256 else 1
    if task.name == "survival":
        config["batch_size"] = 32
        config["max_tiles"] = 2048 if data["p90_tiles"] > 2048 else config["max_tiles"]
    config["batch_size"] = int(min(config["batch_size"], n))
    unknown = set(overrides) - {f.name for f in fields(FitConfig)}
    if unknown:
        raise ValueError(f"unknown FitConfig field(s) {sorted(unknown)}")
    config["batch_size"] = overrides.get("batch_size", config["batch_size"])
    # Linear scaling (Goyal et al. 2017): a step over a batch of bags takes a larger step, capped; without it
    # small cohorts in batches of 16 get a few hundred small steps in all and stop far from a fit. The batch
    # size is the one trained with (an override included); a learning rate given is kept as it is.
    config["lr"] = float(min(2e-3, config["lr"] * config["batch_size"]))
    if task.name in ("binary", "multiclass"):
        counts = np.bincount(target.astype(int))
        data["class_counts"] = counts.tolist()
        config["class_weight"] = "balanced" if counts.min() < 0.5 * counts.max() else None
    elif task.name == "mutation":
        data["positive_fraction"] = np.nanmean(target, axis=0).round(4).tolist()
    config.update(overrides)
    FitConfig(**config)  # checks the values
    return {"config": config, "data": data}


def write_json(path: str | Path, payload: dict) -> None:
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    with atomic_file(path) as tmp, open(tmp, "w") as fh:
        json.dump(payload, fh, indent=2, default=_json_default)


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON-able: {type(value).__name__}")


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def _pad(bags: list[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if len(bags) == 1:
        x = bags[0].to(device, non_blocking=True)[None]
        return x, torch.ones(x.shape[:2], dtype=torch.bool, device=device)
    n = max(len(b) for b in bags)
    x = torch.zeros(len(bags), n, bags[0].shape[1])
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, b in enumerate(bags):
        x[i, : len(b)] = b
        mask[i, : len(b)] = True
    return x.to(device, non_blocking=True), mask.to(device, non_blocking=True)


def _subsample(bag: torch.Tensor, max_tiles: int, rng: np.random.Generator) -> torch.Tensor:
    """`max_tiles` tiles of `bag` drawn without replacement, in their original order (a bag within the cap
    is returned as it is)."""
    if len(bag) <= max_tiles:
        return bag
    return bag[torch.from_numpy(np.sort(rng.choice(len(bag), max_tiles, replace=False)))]


def _check_model(model: MILModel, task: Task, dim: int) -> None:
    if model.in_dim != dim:
        raise ValueError(f"the model takes {model.in_dim}-dimensional features but the bags have {dim}")
    if model.n_outputs != task.n_outputs:
        raise ValueError(
            f"the model gives {model.n_outputs} outputs but the {task.name} task needs {task.n_outputs}"
        )


def _autocast(device: torch.device, enabled: bool):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


def step_loss(model: MILModel, task: Task, x, mask, target) -> torch.Tensor:
    """The training loss of one padded batch: task loss (averaged with DSMIL's second stream) + aux loss."""
    out = model(x, mask, task.instance_labels(target))
    loss = task.loss(out.logits.float(), target)
    if out.aux_logits is not None:
        loss = 0.5 * (loss + task.loss(out.aux_logits.float(), target))
    if out.aux_loss is not None:
        loss = loss + out.aux_loss
    return loss


@torch.no_grad()
def predict_logits(model: MILModel, bags, device: str | torch.device = "auto", batch_size: int = 1,
                   attention: bool = False):  # fmt: skip
    """Logits (n, K) of every bag (all tiles), in eval mode; with `attention`, also each bag's
    `instance_scores` as an (n_i, K or 1) array. A bag without tiles gets NaN logits (and a warning naming it),
    so the rows stay aligned with the bags given."""
    bags = as_bags(bags, drop_empty=False)
    device = resolve_device(device)
    model.eval().to(device)
    if bags.dim != model.in_dim:
        raise ValueError(f"the model takes {model.in_dim}-dimensional features but the bags have {bags.dim}")
    logits, scores = [], []
    sizes = np.array([len(f) for f in bags.features])
    order = np.argsort(sizes, kind="stable")  # similar sizes together: less padding
    order = order[sizes[order] > 0]
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        x, mask = _pad([bags.features[i] for i in index], device)
        out = model(x, mask)
        logits.append(out.logits.float().cpu())
        if attention:
            s = out.instance_scores.float().cpu()
            scores.extend(s[j, : len(bags.features[i])].numpy() for j, i in enumerate(index))
    result = np.full((len(bags), model.n_outputs), np.nan, dtype=np.float32)
    result[order] = torch.cat(logits).numpy()
    if not attention:
        return result
    ordered = [np.zeros((0, 1), dtype=np.float32)] * len(bags)
    for j, i in enumerate(order):
        ordered[i] = scores[j]
    return result, ordered


def fit(model: MILModel, task: Task, train_bags, val_bags=None, config: FitConfig | str = "auto",
        plan_path: str | Path | None = None) -> pd.DataFrame:  # fmt: skip
    """Train `model` for `task` on `train_bags`, early-stopping on the task's metric over `val_bags`.

    `config="auto"` plans it from the training bags (`plan`); `plan_path` writes the plan (or the given
    config) as JSON. Learns the task's labels from the training bags (`task.fit_labels`) and, with
    `config.standardize`, the feature scale (set on the model); after training the
    model holds the best validation epoch's weights and the task settles its threshold on validation
    (`task.finalize`). Returns the history, one row per epoch (train loss, validation loss and metrics, learning
    rate, seconds); `history.attrs` holds the best epoch, the monitored metric and the config used.
    """
    train = as_bags(train_bags)
    val = as_bags(val_bags) if val_bags is not None else None
    if isinstance(config, str):
        if config != "auto":
            raise ValueError(f"config must be a FitConfig or 'auto', got {config!r}")
        planned = plan(train, task)
        config = FitConfig(**planned["config"])
    else:
        planned = {"config": asdict(config), "data": {"n_bags": len(train), "dim": train.dim}}
    if plan_path is not None:
        write_json(plan_path, planned)
    if config.class_weight is not None and hasattr(task, "class_weight"):
        task.class_weight = config.class_weight
        task.kwargs = {**task.kwargs, "class_weight": config.class_weight}
    task.fit_labels(train.labels, train.ids)
    y_train = torch.as_tensor(task.encode(train.labels, train.ids))
    y_val = task.encode(val.labels, val.ids) if val is not None else None
    _check_model(model, task, train.dim)
    if val is not None and val.dim != train.dim:
        raise ValueError(f"validation bags have {val.dim}-dimensional features, training bags {train.dim}")
    model.set_feature_scale(FeatureScale.fit(train.features) if config.standardize else None)

    device = resolve_device(config.device)
    if config.deterministic and device.type == "cuda":
        # cuBLAS refuses deterministic mode without a fixed workspace (read when its handle is created).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    _seed_everything(config.seed)
    previous_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(config.deterministic, warn_only=False)
    try:
        history = _train(model, task, train, y_train, val, y_val, config, device)
    finally:
        torch.use_deterministic_algorithms(previous_deterministic)
    history.attrs["config"] = asdict(config)
    return history


def _scheduler(optimizer, config: FitConfig):
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if config.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="max", factor=0.5,
                                                          patience=max(1, config.patience // 3))  # fmt: skip
    return None


def _train(model, task, train, y_train, val, y_val, config: FitConfig, device) -> pd.DataFrame:
    model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    scheduler = _scheduler(optimizer, config)
    rng = np.random.default_rng(config.seed)
    rows, best, best_state, best_epoch, stale = [], (-math.inf, -math.inf), None, -1, 0
    y_train = y_train.to(device)  # once, not per step
    bar = tqdm(range(config.epochs), desc=f"{type(model).__name__} {task.name}", unit="epoch",
               disable=None if config.progress else True, leave=False)  # fmt: skip
    for epoch in bar:
        start = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(train)))
        # The running loss stays on the device: reading it each step would wait for the GPU every step.
        total = torch.zeros((), device=device)
        optimizer.zero_grad(set_to_none=True)
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size : (step + 1) * config.batch_size]
            bags = [train.features[i] for i in index.tolist()]
            if config.max_tiles is not None:
                bags = [_subsample(b, config.max_tiles, rng) for b in bags]
            if config.instance_dropout:
                bags = [
                    _subsample(b, max(1, round(len(b) * (1 - config.instance_dropout))), rng) for b in bags
                ]
            x, mask = _pad(bags, device)
            target = y_train[index.to(device)]
            with _autocast(device, config.mixed_precision):
                loss = step_loss(model, task, x, mask, target)
            (loss / config.accumulate if config.accumulate > 1 else loss).backward()
            if (step + 1) % config.accumulate == 0 or step + 1 == steps_per_epoch:
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            total += loss.detach() * len(index)
        row = {"epoch": epoch, "train_loss": float(total) / len(train), "lr": optimizer.param_groups[0]["lr"]}
        monitored = None
        if val is not None:
            logits = predict_logits(model, val, device)
            with torch.no_grad():
                row["val_loss"] = float(task.loss(torch.as_tensor(logits), torch.as_tensor(y_val)))
            metrics = task.metrics(y_val, task.predict(logits))
            row.update({f"val_{k}": v for k, v in metrics.items()})
            monitored = metrics[task.monitor]
            # A NaN metric (e.g. one class in validation) leaves the validation loss to decide.
            # Ties (a small validation set saturates the AUC) go to the lower validation loss.
            score = (monitored if np.isfinite(monitored) else -math.inf, -row["val_loss"])
            if score > best:
                best, best_epoch, stale = score, epoch, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                stale += 1
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        if monitored is not None:
            bar.set_postfix({f"val_{task.monitor}": f"{monitored:.3f}"})
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            scheduler.step(
                monitored if monitored is not None and np.isfinite(monitored) else -row["train_loss"]
            )
        elif scheduler is not None:
            scheduler.step()
        if val is not None and config.patience and stale >= config.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
        task.finalize(y_val, task.predict(predict_logits(model, val, device)))
    model.eval()
    history = pd.DataFrame(rows)
    history.attrs.update(best_epoch=best_epoch if val is not None else len(rows) - 1, monitor=task.monitor)
    return history


@dataclass
class CVResult:
    """Cross-validation results: per-fold metrics, their mean and sd (and, for the task's monitored metric, its
    value over all out-of-fold predictions pooled), out-of-fold predictions of every slide, and the fold models
    (an ensemble: `predict` gives each prediction's mean and sd over the folds)."""

    folds: pd.DataFrame
    summary: pd.DataFrame
    oof: pd.DataFrame
    models: list = field(repr=False)
    tasks: list = field(repr=False)
    plan: dict = field(repr=False)
    histories: list = field(default_factory=list, repr=False)  # each fold's `fit` history (training curves)

    def predict(self, bags, device: str = "auto") -> pd.DataFrame:
        """Mean and sd over the fold models of each prediction column, one row per slide."""
        bags = as_bags(bags)
        stacked = np.stack([task.predict(predict_logits(model, bags, device)).reshape(len(bags), -1)
                            for model, task in zip(self.models, self.tasks, strict=True)])  # fmt: skip
        columns = self.tasks[0].columns()
        table = pd.DataFrame(index=pd.Index(bags.ids, name="slide_id"))
        for k, name in enumerate(columns):
            table[f"{name}_mean"] = stacked[:, :, k].mean(axis=0)
            table[f"{name}_sd"] = stacked[:, :, k].std(axis=0, ddof=1) if len(self.models) > 1 else 0.0
        return table


def _splitter(n_splits: int, seed: int) -> StratifiedGroupKFold:
    return StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)


VALIDATION_PARTS = 4  # n_splits=1: one part in four (grouped by patient, stratified) is the validation set


def cross_validate(model: str, task: Task | str, bags, n_splits: int = 5, config: FitConfig | str | dict = "auto",
                   model_kwargs: dict | None = None, seed: int = 0,
                   out_dir: str | Path | None = None) -> CVResult:  # fmt: skip
    """K-fold cross-validation of a registered model, folds grouped by patient and stratified by label.

    Survival folds are stratified by event and time quartile. In each fold a further grouped, stratified split
    of the training slides (one part in max(2, n_splits - 1)) is the validation set for early stopping and the
    threshold; the held-out fold gives the metrics (`task.evaluate`). A test fold without a positive slide (or,
    for survival, without an event) is an error naming the fold. `n_splits=1` trains one model on a grouped,
    stratified train/validation split (one part in four is validation, the first part that can be evaluated)
    and reports the validation slides' figures: optimistic, as they also pick the epoch; the out-of-fold table
    then holds the validation slides only. `config`: a `FitConfig`, "auto" (`plan` on the first fold's
    training slides) or a dict of `FitConfig` fields replacing the planned ones. With `out_dir`, the plan
    (plan.json), fold metrics (folds.csv) and out-of-fold predictions (oof.csv) are written there.
    """
    bags = as_bags(bags)
    base_task = create_task(task) if isinstance(task, str) else task
    base_task.fit_labels(bags.labels, bags.ids)
    target = base_task.encode(bags.labels, bags.ids)
    strata = base_task.strata(target)
    if n_splits < 1:
        raise ValueError(f"n_splits must be 1 (a train/validation split) or more, got {n_splits}")
    if n_splits == 1:
        folds, validation_parts = _validation_split(base_task, target, strata, bags.groups, seed)
    else:
        folds = _cv_folds(base_task, target, strata, bags.groups, n_splits, seed)
    if isinstance(config, (str, dict)):
        if config != "auto" and not isinstance(config, dict):
            raise ValueError(f"config must be a FitConfig, 'auto' or a dict of planned fields to replace, "
                             f"got {config!r}")  # fmt: skip
        overrides = config if isinstance(config, dict) else {}
        planned_on = np.concatenate(folds[0][:2]) if n_splits > 1 else folds[0][0]  # the training slides
        config = FitConfig(**plan(bags.subset(planned_on), base_task, **overrides)["config"])
    planned = {"config": asdict(config), "n_splits": n_splits, "seed": seed, "model": model,
               "model_kwargs": model_kwargs or {}, "task": base_task.state()}  # fmt: skip
    if n_splits == 1:
        planned["validation_parts"] = validation_parts
    rows, oof_parts, models, tasks, histories, pooled = [], [], [], [], [], ([], [])
    for k, (fit_index, val_index, test_index) in enumerate(folds):
        fold_task = copy.deepcopy(base_task)
        fold_config = replace(config, seed=config.seed + k)
        torch.manual_seed(fold_config.seed)
        fold_model = create_model(model, bags.dim, base_task.n_outputs,
                                  **{**fold_task.model_kwargs(), **(model_kwargs or {})})  # fmt: skip
        history = fit(fold_model, fold_task, bags.subset(fit_index), bags.subset(val_index), fold_config)
        test = bags.subset(test_index)
        prediction = fold_task.predict(predict_logits(fold_model, test, fold_config.device))
        metrics = fold_task.evaluate(target[test_index], prediction)
        pooled[0].append(target[test_index])
        pooled[1].append(prediction)
        rows.append({"fold": k, "n_train": len(fit_index), "n_val": len(val_index), "n_test": len(test_index),
                     "best_epoch": history.attrs["best_epoch"],
                     **{m: v for m, v in metrics.items() if np.isscalar(v)}})  # fmt: skip
        part = pd.DataFrame(prediction.reshape(len(test_index), -1), columns=fold_task.columns())
        part.insert(0, "fold", k)
        part.insert(0, "group", bags.groups[test_index])
        part.insert(0, "slide_id", test.ids)
        oof_parts.append(part)
        models.append(fold_model)
        tasks.append(fold_task)
        histories.append(history)
    folds = pd.DataFrame(rows)
    metric_columns = [
        c for c in folds.columns if c not in ("fold", "n_train", "n_val", "n_test", "best_epoch")
    ]
    sd = folds[metric_columns].std(ddof=1) if len(folds) > 1 else pd.Series(np.nan, index=metric_columns)
    summary = pd.DataFrame({"mean": folds[metric_columns].mean(), "sd": sd})
    # The task's own metric over all out-of-fold predictions at once, as a held-out cohort is scored: the mean
    # of per-fold AUCs (or QWK, C-index) forgives folds that rank on different scales. Only the monitored
    # metric: it is rank-based, while a threshold metric would mix the folds' thresholds.
    summary["pooled"] = np.nan
    if base_task.monitor in summary.index:
        pooled_metrics = tasks[0].metrics(np.concatenate(pooled[0]), np.concatenate(pooled[1]))
        summary.loc[base_task.monitor, "pooled"] = pooled_metrics.get(base_task.monitor, np.nan)
    oof = pd.concat(oof_parts, ignore_index=True).set_index("slide_id")
    oof = oof.loc[[i for i in bags.ids if i in oof.index]].reset_index()
    if out_dir is not None:
        out_dir = Path(out_dir)
        write_json(out_dir / "plan.json", planned)
        _write_csv(folds, out_dir / "folds.csv")
        _write_csv(oof, out_dir / "oof.csv")
    return CVResult(folds, summary, oof, models, tasks, planned, histories)


def _grouped_split(n_splits: int, seed: int, strata: np.ndarray, groups: np.ndarray) -> list:
    if np.unique(strata, return_counts=True)[1].max() < n_splits:
        # Every stratum is smaller than the number of parts (a few slides split by several targets): the
        # splitter refuses such strata, and they cannot be spread anyway; split unstratified.
        strata = np.zeros(len(strata), dtype=np.int64)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        return list(_splitter(n_splits, seed).split(np.zeros(len(strata)), strata, groups))


def checked_folds(task: Task, target, strata, groups, n_splits: int, seed: int) -> list:
    """(train, test) slide indices of each of `n_splits` folds grouped by `groups`, stratified by `strata`;
    refused (ValueError naming the fold) when there are fewer groups than folds or a test fold cannot be scored
    (`task.fold_problem`, e.g. a target without a positive)."""
    if len(np.unique(groups)) < n_splits:
        raise ValueError(f"{n_splits} folds need at least {n_splits} patients, got {len(np.unique(groups))}")
    splits = _grouped_split(n_splits, seed, strata, groups)
    for k, (_, test) in enumerate(splits):
        problem = task.fold_problem(target[test])
        if problem:
            raise ValueError(f"fold {k} of {n_splits} has {problem} among its {len(test)} test slides; "
                             f"use fewer folds (fewer than {n_splits}) or more slides")  # fmt: skip
    return splits


def _cv_folds(task: Task, target, strata, groups, n_splits: int, seed: int) -> list:
    """(fit, validation, test) slide indices of each fold: the test folds, then an inner split of each training
    part for validation."""
    splits = checked_folds(task, target, strata, groups, n_splits, seed)
    folds = []
    for k, (train, test) in enumerate(splits):
        fit_part, val_part = _grouped_split(max(2, n_splits - 1), seed + k + 1, strata[train], groups[train])[
            0
        ]
        folds.append((train[fit_part], train[val_part], test))
    return folds


def _validation_split(task: Task, target, strata, groups, seed: int) -> tuple[list, int]:
    """One (fit, validation, validation) triple, and the number of parts: the first of `VALIDATION_PARTS`
    grouped, stratified parts (fewer with fewer patients) that can be evaluated (a small cohort's part may lack
    a class) is the validation set."""
    parts = min(VALIDATION_PARTS, len(np.unique(groups)))
    if parts < 2:
        raise ValueError("a train/validation split needs slides of at least 2 patients")
    splits = _grouped_split(parts, seed, strata, groups)
    problems = [task.fold_problem(target[val]) for _, val in splits]
    usable = [k for k, problem in enumerate(problems) if not problem]
    if not usable:
        raise ValueError(f"every validation split has a problem, e.g. {problems[0]} among its "
                         f"{len(splits[0][1])} slides; add slides or use cross-validation")  # fmt: skip
    train, val = splits[usable[0]]
    return [(train, val, val)], parts


def _write_csv(table: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)

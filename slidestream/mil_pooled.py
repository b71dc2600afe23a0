"""`slidestream mil train --tumour-model CANCER_DIR`: mutation (0/1 traits) read from the tiles a trained
cancer model scores as tumour.

Each slide's tiles are scored by the cancer model folder's fold ensemble (the mean of the folds' per-tile
scores, on that folder's features and spatial context); the features of the top `fraction` of tiles are averaged
into one slide vector (`mil.tumour_pool`), and one regularised logistic regression per target is
cross-validated on those vectors (folds grouped by patient). The model folder holds a copy of the cancer model
(`tumour_model/`), each fold's regressions (`fold_<k>/readout.json`), metrics, out-of-fold predictions and ROC
plots; `mil predict` applies it like any model folder (its per-tile scores are the tumour scores, the tiles
pooled are, to a tile, the "High attention" ones when --high-fraction equals the pooled fraction).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from wsi.atomic import atomic_file, replace_dir

__all__ = ["READOUT", "load_readouts", "train_tumour_pooled", "tumour_scores"]

READOUT = "tumour_pool"
TUMOUR_FOLDER = "tumour_model"


def tumour_scores(tumour, store, slide_id: str) -> tuple[np.ndarray, np.ndarray]:
    """The widened features (N, D') of a store (`tumour`'s feature and context) and its tiles' tumour scores
    (N,): the mean over `tumour`'s fold checkpoints of their per-tile scores (column 0)."""
    import torch

    from mil import predict_logits, read_bag

    if len(store) == 0:
        raise ValueError("the store has no tiles")
    widened = read_bag(store, tumour.feature, tumour.context)
    if widened.shape[1] != tumour.checkpoints[0].model.in_dim:
        raise ValueError(f"features/{tumour.feature} give {widened.shape[1]} dimensions with the tumour model's "
                         f"context; it takes {tumour.checkpoints[0].model.in_dim}")  # fmt: skip
    bag = torch.from_numpy(widened)
    scores = []
    for checkpoint in tumour.checkpoints:
        _, tiles = predict_logits(
            checkpoint.model, ([bag], np.zeros(1), [slide_id]), device="cpu", attention=True
        )
        scores.append(np.asarray(tiles[0], dtype=np.float64)[:, 0])
    return widened, np.mean(scores, axis=0)


def load_readouts(model_dir: Path, manifest: dict) -> list:
    """The fold read-outs (`mil.TumourPooledLogistic`) of a tumour-pooled model folder."""
    from mil.tumour_pool import TumourPooledLogistic

    return [TumourPooledLogistic.from_dict(json.loads((model_dir / f / "readout.json").read_text()))
            for f in manifest["folds"]]  # fmt: skip


def train_tumour_pooled(results: str | Path, labels: str | Path, targets, tumour_model: str | Path,
                        out: str | Path, folds: int = 5, group: str | None = None, seed: int = 0,
                        labels_subset: bool = False, config=None):  # fmt: skip
    """Cross-validate tumour-pooled logistic regressions for the 0/1 `targets` (module doc) on the stores of
    `results` labelled by `labels`; `tumour_model` is a folder written by `train_slides` (a cancer model: its
    per-tile scores must rank tumour first, as `binary` and `mutation` models' do). `config`: a
    `mil.TumourPoolConfig` (None: the defaults). Slides whose targets are all empty are left out, a single
    empty one is skipped for that target. Needs `folds` >= 2. Returns a `TrainResult`."""
    from sklearn.metrics import roc_auc_score

    from mil.train import _grouped_split, write_json
    from mil.tumour_pool import TumourPoolConfig, TumourPooledLogistic, pool_tumour_tiles
    from slidestream.mil_slides import (
        _MANIFEST,
        MODEL_FORMAT,
        TrainResult,
        _is_ours,
        _plots,
        check_store,
        load_model_folder,
        stores_and_labels,
    )
    from tiling import PatchStore

    config = config or TumourPoolConfig()
    out = Path(out)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if out.exists() and not _is_ours(out):
        raise FileExistsError(f"{out} exists and is not a MIL model folder; not overwriting it")
    if folds < 2:
        raise ValueError(f"a tumour-pooled model is cross-validated: folds must be 2 or more, got {folds}")
    tumour = load_model_folder(tumour_model)
    if tumour.manifest.get("readout"):
        raise ValueError(
            f"{tumour_model} is itself a tumour-pooled model; give the cancer model it was made from"
        )
    stores, table, unused = stores_and_labels(results, labels, [*targets, *([group] if group else [])],
                                              labels_subset)  # fmt: skip
    values = table[targets].apply(pd.to_numeric, errors="coerce")
    bad = [t for t in targets if not set(values[t].dropna().unique()) <= {0.0, 1.0}]
    if bad:
        raise ValueError(f"{labels}: tumour-pooled targets must be 0/1 (or empty); {bad} hold other values")
    empty = values.isna().all(axis=1)
    left_out = sorted(table.index[empty])
    table = table[~empty]
    vectors, kept = [], []
    for slide_id in table.index:
        store = PatchStore.open(stores[slide_id])
        if len(store) == 0:
            left_out.append(slide_id)
            continue
        reason = check_store(tumour, store, slide_id, stores[slide_id])
        if reason:
            raise ValueError(f"slide {slide_id}: {reason}")
        widened, scores = tumour_scores(tumour, store, slide_id)
        vectors.append(pool_tumour_tiles(widened, scores, config.fraction))
        kept.append(slide_id)
    left_out = sorted(left_out)
    table = table.loc[kept]
    X = np.asarray(vectors)
    y = table[targets].to_numpy(dtype=float)
    if len(table) < folds:
        raise ValueError(f"{len(table)} slide(s) with a value of {targets}, fewer than the {folds} folds")
    # Stratified by the first target (unknown: a stratum of its own), grouped by patient.
    strata = np.where(np.isnan(y[:, 0]), 2, y[:, 0]).astype(np.int64)
    groups = table[group].astype(str).to_numpy() if group else table.index.to_numpy()
    if len(np.unique(groups)) < folds:
        raise ValueError(f"{folds} folds need at least {folds} patients, got {len(np.unique(groups))}")
    rows, parts, readouts = [], [], []
    columns = [f"p_{t}" for t in targets]
    for k, (train, test) in enumerate(_grouped_split(folds, seed, strata, groups)):
        try:
            readout = TumourPooledLogistic(config.C).fit(X[train], y[train])
        except ValueError as exc:
            raise ValueError(f"fold {k} of {folds}: {exc} (targets {targets}); use fewer folds") from None
        probability = readout.predict_proba(X[test])
        row = {"fold": k, "n_train": len(train), "n_test": len(test)}
        for j, t in enumerate(targets):
            known = np.isfinite(y[test, j])
            both = len(np.unique(y[test, j][known])) == 2
            row[f"auc_{t}"] = (
                float(roc_auc_score(y[test, j][known], probability[known, j])) if both else np.nan
            )
        row["auc"] = float(np.nanmean([row[f"auc_{t}"] for t in targets])) if any(
            np.isfinite(row[f"auc_{t}"]) for t in targets) else np.nan  # fmt: skip
        rows.append(row)
        part = pd.DataFrame(probability, columns=columns)
        part.insert(0, "fold", k)
        part.insert(0, "group", groups[test])
        part.insert(0, "slide_id", table.index[test])
        parts.append(part)
        readouts.append(readout)
    fold_table = pd.DataFrame(rows)
    metric_columns = [c for c in fold_table.columns if c.startswith("auc")]
    summary = pd.DataFrame(
        {"mean": fold_table[metric_columns].mean(), "sd": fold_table[metric_columns].std(ddof=1)}
    )
    oof = pd.concat(parts, ignore_index=True).set_index("slide_id").loc[table.index].reset_index()
    true = table.loc[oof["slide_id"], targets].reset_index(drop=True).add_prefix("true_")
    oof = pd.concat([oof, true], axis=1)
    pool_state = {"fraction": config.fraction, "C": config.C}
    context_state = tumour.context.to_dict() if tumour.context is not None else None
    metrics = {
        "task": "mutation", "targets": targets, "model": READOUT, "tumour_pool": pool_state,
        "tumour_model": str(Path(tumour_model).resolve()), "feature": tumour.feature, "context": context_state,
        "folds": folds, "n_slides": len(table), "left_out": left_out, "unused_labels": unused,
        "per_fold": json.loads(fold_table.to_json(orient="records")),
        "summary": {m: {"mean": float(r["mean"]), "sd": float(r["sd"])} for m, r in summary.iterrows()},
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        shutil.copytree(tumour.model_dir, tmp / TUMOUR_FOLDER)
        for k, readout in enumerate(readouts):
            (tmp / f"fold_{k}").mkdir()
            write_json(tmp / f"fold_{k}" / "readout.json", readout.to_dict())
        write_json(tmp / "metrics.json", metrics)
        for name, frame in (("folds.csv", fold_table), ("oof_predictions.csv", oof)):
            with atomic_file(tmp / name) as path:
                frame.to_csv(path, index=False)
        _plots(tmp, "mutation", oof, targets, None, columns)
        write_json(tmp / _MANIFEST, {"format": MODEL_FORMAT, "name": out.name, "task": "mutation",
                                     "targets": targets, "model": READOUT, "readout": READOUT,
                                     "tumour_pool": pool_state, "tumour_model": TUMOUR_FOLDER,
                                     "feature": tumour.feature, "context": context_state,
                                     "encoder": tumour.manifest.get("encoder"),
                                     "folds": [f"fold_{k}" for k in range(folds)], "columns": columns})  # fmt: skip
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainResult(out, fold_table, summary, left_out, tuple(unused))

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsi.atomic import atomic_file, replace_dir

__all__ = [
    "READOUT",
    "PooledSlides",
    "fit_tumour_pooled",
    "load_readouts",
    "pooled_vectors",
    "train_tumour_pooled",
]

READOUT = "tumour_pool"
TUMOUR_FOLDER = "tumour_model"
TUMOUR_TASKS = ("binary", "mutation")  # models whose per-tile scores (column 0) rank tumour first


@dataclass(frozen=True)
class PooledSlides:
    """What `pooled_vectors` read: the tumour model, the labelled slides kept (`table`, indexed by slide id),
    their pooled vectors `X` (n, D') and 0/1 targets `y` (n, T, NaN: unknown), the slides left out (every
    target empty, or no tile), the labels' rows not in the run folder (`labels_subset`), and what made them
    (the tumour model, the run folders and labels tables)."""

    tumour: object  # slidestream.mil_slides.LoadedModel
    tumour_model: Path
    targets: list
    group: str | None
    config: object  # mil.TumourPoolConfig
    table: pd.DataFrame
    X: np.ndarray
    y: np.ndarray
    left_out: list
    unused: list
    results: tuple = ()  # the run folders and labels tables given (metrics.json records them)
    labels: tuple = ()
    hashes: dict | None = (
        None  # slide id -> its slide's content hash (`slide_sha256`; metrics.json records them)
    )


def load_readouts(model_dir: Path, manifest: dict) -> list:
    """The fold read-outs (`mil.TumourPooledLogistic`) of a tumour-pooled model folder."""
    from mil.tumour_pool import TumourPooledLogistic

    return [TumourPooledLogistic.from_dict(json.loads((model_dir / f / "readout.json").read_text()))
            for f in manifest["folds"]]  # fmt: skip


def pooled_vectors(results, labels, targets, tumour_model: str | Path,
                   group: str | None = None, labels_subset: bool = False, config=None) -> PooledSlides:  # fmt: skip
    """Score each labelled store of `results` (one run folder or several; `labels` one table or several, as
    `train_slides` takes them) with the cancer model folder `tumour_model` (written by
    `train_slides` for a binary or mutation task: their per-tile scores rank tumour first) and pool its top
    `config.fraction` of tiles (module doc). The 0/1 `targets` of `labels` (empty: unknown) are checked first:
    other values are an error naming the columns. Slides whose targets are all empty, or whose store has no
    tile, are left out. `config`: a `mil.TumourPoolConfig` (None: the defaults)."""
    from mil.tumour_pool import TumourPoolConfig, pool_tumour_tiles
    from slidestream.mil_slides import (
        _paths,
        check_store,
        fold_tile_scores,
        load_model_folder,
        slide_sha256,
        stores_and_labels,
    )
    from tiling import PatchStore

    config = config or TumourPoolConfig()
    targets = [targets] if isinstance(targets, str) else list(targets)
    tumour = load_model_folder(tumour_model)
    if tumour.manifest.get("readout"):
        raise ValueError(
            f"{tumour_model} is itself a tumour-pooled model; give the cancer model it was made from"
        )
    if tumour.manifest["task"] not in TUMOUR_TASKS:
        raise ValueError(f"{tumour_model} is a {tumour.manifest['task']} model; a tumour model is a "
                         f"{' or '.join(TUMOUR_TASKS)} model (its tiles' scores must rank tumour first)")  # fmt: skip
    stores, table, unused, named = stores_and_labels(results, labels, [*targets, *([group] if group else [])],
                                                     labels_subset)  # fmt: skip
    values = table[targets].apply(pd.to_numeric, errors="coerce")
    bad = [t for t in targets
           if (values[t].isna() & table[t].notna()).any() or not set(values[t].dropna()) <= {0.0, 1.0}]  # fmt: skip
    if bad:
        raise ValueError(f"{named}: tumour-pooled targets must be 0/1 (or empty); column(s) {bad} hold other "
                         "values")  # fmt: skip
    empty = values.isna().all(axis=1)
    left_out = list(table.index[empty])
    vectors, kept, hashes = [], [], {}
    for slide_id in table.index[~empty]:
        store = PatchStore.open(stores[slide_id])
        if len(store) == 0:
            left_out.append(slide_id)
            continue
        reason = check_store(tumour, store, slide_id, stores[slide_id])
        if reason:
            raise ValueError(f"slide {slide_id}: {reason}")
        widened, _, scores = fold_tile_scores(tumour, store, slide_id)
        vectors.append(pool_tumour_tiles(widened, scores.mean(axis=0), config.fraction))
        kept.append(slide_id)
        hashes[slide_id] = slide_sha256(store)
    X = np.asarray(vectors, dtype=np.float64).reshape(len(kept), -1)
    y = values.loc[kept, targets].to_numpy(dtype=float)
    return PooledSlides(tumour, Path(tumour_model), targets, group, config, table.loc[kept], X, y,
                        sorted(left_out), list(unused), tuple(_paths(results)), tuple(_paths(labels)),
                        hashes)  # fmt: skip


def train_tumour_pooled(results, labels, targets, tumour_model: str | Path,
                        out: str | Path, folds: int = 5, group: str | None = None, seed: int = 0,
                        labels_subset: bool = False, config=None):  # fmt: skip
    """Cross-validate tumour-pooled logistic regressions for the 0/1 `targets` (module doc) on the stores of
    `results` labelled by `labels`: `pooled_vectors`, then `fit_tumour_pooled`. Needs `folds` >= 2. Returns a
    `TrainResult`."""
    from slidestream.mil_slides import _is_ours

    out = Path(out)
    if out.exists() and not _is_ours(out):
        raise FileExistsError(f"{out} exists and is not a MIL model folder; not overwriting it")
    if folds < 2:
        raise ValueError(f"a tumour-pooled model is cross-validated: folds must be 2 or more, got {folds}")
    slides = pooled_vectors(results, labels, targets, tumour_model, group, labels_subset, config)
    return fit_tumour_pooled(slides, out, folds, seed)


def fit_tumour_pooled(slides: PooledSlides, out: str | Path, folds: int = 5, seed: int = 0):
    """Cross-validate the read-out on `slides` (`pooled_vectors`; folds grouped by its `group` column and
    stratified as `mil.MutationTask` strata spread each target's positives; every test fold needs a positive
    slide of each target) and write the model folder `out` (module doc). Returns a `TrainResult`."""
    from mil import create_task
    from mil.train import checked_folds, write_json
    from mil.tumour_pool import TumourPooledLogistic
    from slidestream.mil_slides import (
        _MANIFEST,
        MODEL_FORMAT,
        TrainResult,
        _is_ours,
        _plots,
        provenance,
        summary_record,
    )

    out = Path(out)
    if out.exists() and not _is_ours(out):
        raise FileExistsError(f"{out} exists and is not a MIL model folder; not overwriting it")
    if folds < 2:
        raise ValueError(f"a tumour-pooled model is cross-validated: folds must be 2 or more, got {folds}")
    tumour, targets, table, X, y = slides.tumour, slides.targets, slides.table, slides.X, slides.y
    config, group, left_out, unused = slides.config, slides.group, slides.left_out, slides.unused
    if len(table) < folds:
        raise ValueError(f"{len(table)} slide(s) with a value of {targets}, fewer than the {folds} folds")
    task = create_task("mutation", targets=targets)
    strata = task.strata(y)
    groups = table[group].astype(str).to_numpy() if group else table.index.to_numpy()
    splits = checked_folds(task, y, strata, groups, folds, seed)
    rows, parts, readouts = [], [], []
    columns = [f"p_{t}" for t in targets]
    for k, (train, test) in enumerate(splits):
        try:
            readout = TumourPooledLogistic(config.C).fit(X[train], y[train])
        except ValueError as exc:
            raise ValueError(f"fold {k} of {folds}: {exc} (targets {targets}); use fewer folds") from None
        probability = readout.predict_proba(X[test])
        row = {"fold": k, "n_train": len(train), "n_test": len(test)}
        row.update(task.metrics(y[test], probability))
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
    # Every metric here is an AUC: also over all out-of-fold predictions at once (`mil.CVResult.summary`).
    summary["pooled"] = pd.Series(task.metrics(y, oof[columns].to_numpy()))
    true = pd.DataFrame(y, index=table.index, columns=targets).loc[oof["slide_id"]]
    true = true.reset_index(drop=True).add_prefix("true_")
    oof = pd.concat([oof, true], axis=1)
    pool_state = {"fraction": config.fraction, "C": config.C}
    context_state = tumour.context.to_dict() if tumour.context is not None else None
    metrics = {
        "task": "mutation", "targets": targets, "model": READOUT, "tumour_pool": pool_state,
        "tumour_model": str(slides.tumour_model.resolve()), "feature": tumour.feature, "context": context_state,
        "folds": folds, "n_slides": len(table), "left_out": left_out, "unused_labels": unused,
        **provenance(slides.results, slides.labels, table.index, slides.hashes),
        "per_fold": json.loads(fold_table.to_json(orient="records")),
        "summary": summary_record(summary),
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

"""MIL on run folders: train cross-validated models on the patch stores of `RESULTS/slides/*/patches.zarr` with a
labels table (`train_slides`), and predict with the fold ensemble, writing per-tile attention into the stores,
heatmaps and QuPath tiles (`predict_slides`).

A model folder holds `mil_model.json` (what was trained on what), `fold_<k>/` checkpoints (`mil.save_model`),
`plan.json`, `metrics.json`, `folds.csv`, `oof_predictions.csv` and plots (ROC, confusion matrix or Kaplan-Meier,
and training curves). It is written in a temporary folder and renamed into place; an existing folder is replaced
only when it is a model folder.
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

__all__ = ["MODEL_FORMAT", "LoadedModel", "PredictResult", "TASK_CHOICES", "TrainResult", "check_inputs",
           "check_store", "check_swapped", "find_stores", "fold_tile_scores", "load_model_folder", "predict_slides",
           "predict_store", "provenance", "slide_sha256", "stores_and_labels", "summary_record", "train_slides", "trained_on"]  # fmt: skip

MODEL_FORMAT = "slidestream.mil-model/1"
SCORES_SOURCE = "slidestream mil predict"
TASK_CHOICES = ("binary", "multiclass", "grade", "mutation", "survival")
_MANIFEST = "mil_model.json"


@dataclass(frozen=True)
class TrainResult:
    """What `train_slides` wrote: the model folder, per-fold metrics, their summary (mean, sd) and the
    slides left out because their target was empty; `unused_labels`: the labels table's slides that are not in
    the run folder (left out with `labels_subset`)."""

    model_dir: Path
    folds: pd.DataFrame
    summary: pd.DataFrame
    left_out: list
    unused_labels: tuple[str, ...] = ()


@dataclass(frozen=True)
class PredictResult:
    """What `predict_slides` wrote: predictions (one row per slide), the slides that failed, with reasons, and
    the slides predicted that the model was trained on (`trained_on`: their predictions are not held out)."""

    predictions: pd.DataFrame
    failed: dict
    seen: tuple[str, ...] = ()


def _paths(given) -> list:
    """One path (str or Path) as a list of one, or a sequence of them as a list."""
    return [given] if isinstance(given, (str, Path)) else list(given)


def find_stores(results) -> dict[str, Path]:
    """Slide id -> patch store path for every `RESULTS/slides/<slide_id>/patches.zarr` of one run folder, or of
    several (a path or a sequence of them). A slide's id is its folder's name under RESULTS/slides, the id `run`
    gave it (`slidestream.discovery.slide_id_for`); the store's own `slide_id` attribute is the file's stem and
    may differ. A slide id in more than one folder is an error naming the ids and their folders, as is a folder
    given twice and a folder without stores."""
    folders = [Path(r) for r in _paths(results)]
    if not folders:
        raise ValueError("no run folder given")
    given = {}
    for folder in folders:
        key = folder.resolve()
        if key in given:
            raise ValueError(f"run folder {folder} given twice" + (f" (as {given[key]} and {folder})"
                             if str(given[key]) != str(folder) else ""))  # fmt: skip
        given[key] = folder
    stores, repeated = {}, {}
    for folder in folders:
        found = {p.parent.name: p for p in sorted(folder.glob("slides/*/patches.zarr"))}
        if not found:
            raise FileNotFoundError(
                f"no patch stores under {folder}/slides/*/patches.zarr; run `slidestream run` first"
            )
        for slide_id, path in found.items():
            if slide_id in stores:
                repeated.setdefault(slide_id, [str(stores[slide_id].parent.parent.parent)]).append(
                    str(folder)
                )
            else:
                stores[slide_id] = path
    if repeated:
        shown = "; ".join(f"{s} in {' and '.join(f)}" for s, f in list(repeated.items())[:10])
        raise ValueError(f"{len(repeated)} slide id(s) are in more than one run folder ({shown}): a slide's id "
                         "is its folder name under RESULTS/slides (the slide file's name), so the slides of "
                         "folders trained together need different names (README, several run folders)")  # fmt: skip
    return stores


def check_swapped(stores: dict) -> None:
    """Refuse store folders swapped or renamed onto each other after `run`: a store (`stores`: slide id -> store
    path, `find_stores`) whose `slide_id` attribute is ANOTHER store's id in the same set would give one slide's
    tiles another's label. An attribute that names no other store (the file's stem where `run` normalised the
    name, a multi-file DICOM's folder) or is empty is not a swap."""
    from tiling import PatchStore

    swapped = {}
    for slide_id, path in stores.items():
        written = str(PatchStore.open(path).attrs.get("slide_id") or "")
        if written and written != slide_id and written in stores:
            swapped[slide_id] = written
    if swapped:
        shown = ", ".join(f"{stores[s].parent} holds {i}" for s, i in list(swapped.items())[:10])
        raise ValueError(f"{len(swapped)} store folder(s) hold another slide of the same set, renamed after "
                         f"`slidestream run` ({shown}): a slide's id is the one run gave it; rename the slide "
                         "files before `run` instead")  # fmt: skip


def _read_table(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file")
    table = pd.read_csv(path, sep=None, engine="python", dtype={"slide_id": str})
    if "slide_id" not in table.columns:
        raise ValueError(f"{path}: no 'slide_id' column (columns: {list(table.columns)})")
    return table


def _read_tables(labels, columns: list) -> tuple[pd.DataFrame, str]:
    """One labels table, or several (a sequence of paths) stacked, each checked for `columns` (an error naming
    the file that lacks one: stacking would fill it with NaN); and the name errors give it."""
    paths = _paths(labels)
    if not paths:
        raise ValueError("no labels table given")
    tables = []
    for path in paths:
        table = _read_table(path)
        missing = [c for c in columns if c not in table.columns]
        if missing:
            raise ValueError(f"{path}: no column(s) {missing} (columns: {list(table.columns)})")
        tables.append(table)
    return pd.concat(tables, ignore_index=True), " + ".join(str(p) for p in paths)


def stores_and_labels(
    results, labels, columns: list, labels_subset: bool
) -> tuple[dict, pd.DataFrame, list, str]:
    """The stores of `results` (one run folder or several, `find_stores`), the labels table indexed by slide id
    (str) restricted to them (`labels`: one table or several, stacked), the ids of the table's rows left out
    (`labels_subset`; else such rows are an error) and the name errors give the labels (their paths). Slides
    without stores, stores without labels, repeated ids, a table missing one of `columns` and store folders
    swapped after `run` (`check_swapped`) are errors naming them."""
    from mil.bags import match_slides

    stores = find_stores(results)
    table, name = _read_tables(labels, columns)
    try:
        unused = match_slides(table["slide_id"], list(stores), labels_subset, subset_option="--labels-subset")
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    check_swapped(stores)
    table = table[~table["slide_id"].astype(str).isin(unused)]
    return stores, table.set_index(table["slide_id"].astype(str)), unused, name


def slide_sha256(store) -> str | None:
    """The content hash of the slide `store` was tiled from (its `inputs` record; None in stores made before
    it was recorded)."""
    return ((store.attrs.get("inputs") or {}).get("slide") or {}).get("sha256")


def provenance(results, labels, slide_ids, hashes: dict | None = None) -> dict:
    """What a model was trained on, for its metrics.json: the run folders (resolved), the labels tables, the
    training slides' ids and, given them (`hashes`: id -> `slide_sha256` of its store), each slide's content
    hash (`mil predict` says which of the slides it predicts are among them: by content where both sides have
    it, so another cohort's slide under the same id is not, and a renamed copy is)."""
    record = {"run_folders": [str(Path(r).resolve()) for r in _paths(results)],
              "labels": [str(Path(t).resolve()) for t in _paths(labels)], "slide_ids": sorted(map(str, slide_ids))}  # fmt: skip
    if hashes is not None:
        record["slide_sha256"] = {str(s): hashes[s] for s in sorted(slide_ids)}
    return record


def trained_on(model: LoadedModel) -> dict[str, str | None]:
    """The slides `model` was trained on (with a tumour-pooled model: its tumour model's too), id -> content
    hash (None where not recorded), as their metrics.json record them (an older folder records none)."""
    folders = [model.model_dir] + (
        [model.model_dir / model.manifest["tumour_model"]] if model.readouts else []
    )
    slides: dict[str, str | None] = {}
    for folder in folders:
        try:
            metrics = json.loads((folder / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
        hashes = metrics.get("slide_sha256") or {}
        slides.update({s: hashes.get(s) for s in metrics.get("slide_ids", [])})
    return slides


def _seen(predicted: dict[str, str | None], trained: dict[str, str | None]) -> tuple[str, ...]:
    """The predicted slides (id -> content hash) among the `trained` ones: by content hash where both sides
    have one, else by id."""
    hashes = {h for h in trained.values() if h}
    return tuple(sorted(
        s for s, h in predicted.items()
        if (h is not None and h in hashes) or (s in trained and (h is None or trained[s] is None))
    ))  # fmt: skip


def summary_record(summary: pd.DataFrame) -> dict:
    """metrics.json's `summary`: per metric the mean and sd over the folds, and the value over the pooled
    out-of-fold predictions where there is one (`mil.CVResult.summary`)."""
    record = {}
    for metric, row in summary.iterrows():
        record[metric] = {"mean": float(row["mean"]), "sd": float(row["sd"])}
        if np.isfinite(row.get("pooled", np.nan)):
            record[metric]["pooled"] = float(row["pooled"])
    return record


def _task_for(task: str, targets: list[str], values: pd.DataFrame, grade_link: str = "cumulative"):
    from mil import create_task

    if task not in TASK_CHOICES:
        raise ValueError(f"task must be one of {TASK_CHOICES}, got {task!r}")
    if task == "survival":
        if len(targets) != 2:
            raise ValueError(f"a survival task needs two targets, TIME and EVENT, got {targets}")
        return create_task("survival")
    if task == "mutation":
        return create_task("mutation", targets=list(targets))
    if len(targets) != 1:
        raise ValueError(f"a {task} task takes one target column, got {targets}")
    if task == "grade":
        grades = values[targets[0]].dropna().to_numpy(dtype=float)  # (a benign slide's grade is empty)
        if not len(grades):
            raise ValueError(f"no slide has a grade in {targets[0]!r}")
        if not np.all(grades == np.round(grades)):
            raise ValueError(f"grades in {targets[0]!r} must be whole numbers")
        return create_task(
            "grade", levels=list(range(int(grades.min()), int(grades.max()) + 1)), link=grade_link
        )
    return create_task(task)


def _encoder_of(store, feature: str) -> dict | None:
    description = dict(store.features(feature).attrs).get("description")
    return (
        {k: description[k] for k in ("encoder", "weights_hash", "dim") if k in description}
        if description
        else None
    )


def _is_ours(path: Path) -> bool:
    try:
        return json.loads((path / _MANIFEST).read_text()).get("format") == MODEL_FORMAT
    except (OSError, ValueError):
        return False


def _write_csv(table: pd.DataFrame, path: Path, index: bool = False) -> None:
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=index)


def _save_figure(fig, path: Path) -> None:
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight", pad_inches=0.1)  # no empty margins


def _plots(folder: Path, task_name: str, oof: pd.DataFrame, targets: list[str], tasks, columns) -> list[Path]:
    """ROC per fold and pooled out of fold (binary, mutation), confusion matrix (multiclass, grade), KM of
    predicted risk groups."""
    from matplotlib.figure import Figure
    from sklearn.metrics import confusion_matrix, roc_auc_score, roc_curve

    written = []
    if task_name in ("binary", "mutation"):
        pairs = [(t, "probability" if task_name == "binary" else f"p_{t}") for t in targets]
        for target, column in pairs:
            fig = Figure(figsize=(5, 5))
            ax = fig.add_subplot()
            # Each fold's curve, and all out-of-fold predictions pooled (one AUC over the slides, as a held-out
            # cohort would be scored), each with its AUC in the legend.
            parts = [(f"fold {fold}", part, {"linewidth": 1}) for fold, part in oof.groupby("fold")]
            parts.append(("pooled out of fold", oof, {"color": "black", "linewidth": 2}))
            for name, part, style in parts:
                y = part[f"true_{target}"].to_numpy(dtype=float)
                keep = np.isfinite(y)
                if len(np.unique(y[keep])) < 2:
                    continue
                score = part[column].to_numpy()[keep]
                fpr, tpr, _ = roc_curve(y[keep], score)
                auc = roc_auc_score(y[keep], score)
                ax.plot(fpr, tpr, label=f"{name} (AUC {auc:.3f}, n {keep.sum()})", **style)
            ax.plot([0, 1], [0, 1], color="grey", linestyle=":")
            ax.set(
                xlabel="false positive rate", ylabel="true positive rate", title=f"ROC out of fold: {target}"
            )
            if ax.get_legend_handles_labels()[0]:  # no fold has both classes of this target: no curve
                ax.legend(loc="lower right")
            path = folder / f"roc_{target}.png"
            _save_figure(fig, path)
            written.append(path)
    elif task_name in ("multiclass", "grade"):
        target = targets[0]
        predicted = [tasks[int(f)].decide(row[None, :])[0]
                     for f, row in zip(oof["fold"], oof[columns].to_numpy(), strict=True)]  # fmt: skip
        truth = oof[f"true_{target}"].to_numpy()
        names = [c[2:] for c in columns]
        truth_s = np.array([str(int(v)) if isinstance(v, float) and v == int(v) else str(v) for v in truth])
        pred_s = np.array(
            [str(int(v)) if isinstance(v, float) and v == int(v) else str(v) for v in predicted]
        )
        matrix = confusion_matrix(truth_s, pred_s, labels=names)
        fig = Figure(figsize=(5, 4.5))
        ax = fig.add_subplot()
        image = ax.imshow(matrix, cmap="Blues")
        for (i, j), v in np.ndenumerate(matrix):
            ax.text(j, i, str(v), ha="center", va="center", color="black")
        ax.set(xticks=range(len(names)), yticks=range(len(names)), xticklabels=names, yticklabels=names,
               xlabel=f"predicted {target}", ylabel=f"true {target}", title="confusion matrix (out of fold)")  # fmt: skip
        fig.colorbar(image, ax=ax)
        path = folder / "confusion_matrix.png"
        _save_figure(fig, path)
        written.append(path)
    elif task_name == "survival":
        from survival.plot import plot_kaplan_meier

        risk = oof["risk"].to_numpy()
        groups = np.where(risk > np.median(risk), 1, 0)
        path = folder / "kaplan_meier_risk_groups.png"
        plot_kaplan_meier(path, oof[f"true_{targets[0]}"], oof[f"true_{targets[1]}"], groups,
                          labels={0: "predicted low risk", 1: "predicted high risk"},
                          title="")  # fmt: skip
        written.append(path)
    return written


def _training_curves(path: Path, histories: list, monitor: str) -> None:
    """Per fold: training and validation loss, and the monitored validation metric, by epoch."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    loss_ax, metric_ax = fig.subplots(1, 2)
    for k, history in enumerate(histories):
        (line,) = loss_ax.plot(history["epoch"], history["train_loss"], label=f"fold {k} train")
        if "val_loss" in history:
            loss_ax.plot(history["epoch"], history["val_loss"], linestyle="--", color=line.get_color(),
                         label=f"fold {k} validation")  # fmt: skip
        if f"val_{monitor}" in history:
            metric_ax.plot(
                history["epoch"], history[f"val_{monitor}"], color=line.get_color(), label=f"fold {k}"
            )
    loss_ax.set(xlabel="epoch", ylabel="loss", title="loss")
    metric_ax.set(xlabel="epoch", ylabel=f"validation {monitor}", title=f"validation {monitor}")
    loss_ax.legend(fontsize=7)
    metric_ax.legend(fontsize=7)
    _save_figure(fig, path)


def train_slides(results, labels, task: str, targets, out: str | Path,
                 model: str = "abmil", feature: str = "stain_stats", folds: int = 5, group: str | None = None,
                 seed: int = 0, config="auto", progress: bool = False, labels_subset: bool = False,
                 model_kwargs: dict | None = None, grade_link: str = "cumulative",
                 context=None) -> TrainResult:  # fmt: skip
    """Cross-validate `model` for `task` on the stores of `results` labelled by `labels` (column `slide_id`, the
    `targets` columns and, for patient-grouped folds, `group`); write the model folder `out` (module doc).
    `results` and `labels` may each be several (sequences of paths): the stores of all the run folders (slide ids
    unique across them) and the tables stacked; the stores' features must come from one encoder.

    `folds` 1 trains one model on a grouped, stratified train/validation split (3:1) and reports the validation
    slides' figures (optimistic: they also choose the epoch); `oof_predictions.csv` then holds the validation
    slides only. Slides whose target is empty (e.g. the grade of a benign slide; for mutation: every target
    empty, a single empty one is masked) or whose store has no tile are left out and listed. With
    `labels_subset` the table may list slides that are not in `results` (a master table): those rows are left
    out and their ids returned in `TrainResult.unused_labels`. `config` is
    "auto" (planned from the data), a dict of planned fields to replace or a `mil.FitConfig`. `model_kwargs` go
    to `mil.create_model`; `grade_link` is the grade task's link ("cumulative", "corn" or "regression"; module `mil.tasks`).
    `context` (a `mil.SpatialContext`, or None) appends each tile's neighbourhood summary to its features; the
    model folder records it and `predict_slides` applies it. Refuses an `out` that exists and is not a model
    folder.
    """
    from dataclasses import replace

    from mil import BagDataset, FitConfig, create_model, cross_validate, save_model
    from mil.train import write_json
    from tiling import PatchStore

    out = Path(out)
    targets = [targets] if isinstance(targets, str) else list(targets)
    if out.exists() and not _is_ours(out):
        raise FileExistsError(f"{out} exists and is not a MIL model folder; not overwriting it")
    if folds < 1:
        raise ValueError(
            f"folds must be 1 (a train/validation split) or more (cross-validation), got {folds}"
        )
    try:  # a bad keyword is an error now, not a TypeError after every store has been read
        create_model(model, 1, 1, **(model_kwargs or {}))
    except TypeError as exc:
        raise ValueError(f"model keyword arguments (--model-arg): {exc}") from None
    stores, table, unused, _ = stores_and_labels(results, labels, [*targets, *([group] if group else [])],
                                                 labels_subset)  # fmt: skip
    # A task that masks missing values (NaN) in its loss and metrics (mutation: `Task.masks_missing`) needs one
    # known target per slide, so an auxiliary target known on more slides (e.g. cancer next to mutations known
    # on cancer slides) trains the shared attention on all of them; the others leave such a slide out.
    masks_missing = _task_for(task, targets, table, grade_link).masks_missing
    empty = table[targets].isna().all(axis=1) if masks_missing else table[targets].isna().any(axis=1)
    left_out = sorted(table.index[empty])
    table = table[~empty]
    if len(table) < max(2, folds):
        raise ValueError(
            f"{len(table)} slide(s) with a value of {targets}, fewer than {max(2, folds)} needed"
        )
    opened = {s: PatchStore.open(stores[s]) for s in table.index}
    no_tiles = sorted(s for s, store in opened.items() if len(store) == 0)
    left_out = sorted(left_out + no_tiles)
    table = table.drop(index=no_tiles)
    # Keyed by the run's id (the folder name), not the stores' attrs.
    opened = {s: opened[s] for s in table.index}
    bag_task = _task_for(task, targets, table, grade_link)
    dataset = BagDataset(opened, table, feature, label_columns=targets, group_column=group, seed=seed,
                         context=context, allow_missing=masks_missing)  # fmt: skip
    # Each fold's model standardises the features with the mean and sd of its own training slides' tiles
    # (`mil.FeatureScale`, kept in its checkpoint).
    if isinstance(config, str) and config == "auto":
        config = {}  # the plan, with nothing replaced but `progress`
    if isinstance(config, FitConfig):
        config = replace(config, progress=progress)
    else:
        config = {**config, "progress": progress}
    encoder = _check_alike(opened, stores, feature)
    cv = cross_validate(model, bag_task, dataset, n_splits=folds, config=config, seed=seed,
                        model_kwargs=model_kwargs)  # fmt: skip
    context_state = context.to_dict() if context is not None else None
    true = table.loc[cv.oof["slide_id"], targets].reset_index(drop=True).add_prefix("true_")
    oof = pd.concat([cv.oof.reset_index(drop=True), true], axis=1)
    summary = cv.summary
    metrics = {
        "task": task, "targets": targets, "model": model, "model_kwargs": model_kwargs or {}, "feature": feature,
        "context": context_state, "folds": folds,
        "n_slides": len(table), "left_out": left_out, "unused_labels": unused,
        **provenance(results, labels, table.index, {s: slide_sha256(opened[s]) for s in table.index}),
        "per_fold": json.loads(cv.folds.to_json(orient="records")),
        "summary": summary_record(summary),
    }  # fmt: skip
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp"))
    try:
        for k, (fold_model, fold_task) in enumerate(zip(cv.models, cv.tasks, strict=True)):
            save_model(tmp / f"fold_{k}", fold_model, fold_task, feature=feature, encoder=encoder, plan=cv.plan,
                       metrics=metrics["per_fold"][k], context=context)  # fmt: skip
        write_json(tmp / "plan.json", cv.plan)
        write_json(tmp / "metrics.json", metrics)
        _write_csv(cv.folds, tmp / "folds.csv")
        _write_csv(oof, tmp / "oof_predictions.csv")
        _plots(tmp, task, oof, targets, cv.tasks, cv.tasks[0].columns())
        _training_curves(tmp / "training_curves.png", cv.histories, cv.tasks[0].monitor)
        write_json(tmp / _MANIFEST, {"format": MODEL_FORMAT, "name": out.name, "task": task, "targets": targets,
                                     "model": model, "model_kwargs": model_kwargs or {}, "feature": feature,
                                     "context": context_state, "encoder": encoder,
                                     "folds": [f"fold_{k}" for k in range(len(cv.models))],
                                     "columns": cv.tasks[0].columns()})  # fmt: skip
        replace_dir(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return TrainResult(out, cv.folds, summary, left_out, tuple(unused))


def _load_model_folder(model_dir: Path) -> tuple[dict, list]:
    from mil import FeatureScale, load_model

    if not _is_ours(model_dir):
        raise FileNotFoundError(f"{model_dir}: not a MIL model folder (no {_MANIFEST}); train one with "
                                "`slidestream mil train`")  # fmt: skip
    manifest = json.loads((model_dir / _MANIFEST).read_text())
    if manifest.get("readout"):  # a tumour-pooled model (`slidestream.mil_pooled`): its tumour model's folds,
        # loaded as training loaded them (an older folder's shared feature scale included)
        _, checkpoints = _load_model_folder(model_dir / manifest["tumour_model"])
        return manifest, checkpoints
    checkpoints = [load_model(model_dir / name) for name in manifest["folds"]]
    # Model folders written before each fold checkpoint kept its own scale carry one for all folds in the
    # manifest: the models apply it as they apply their own.
    if manifest.get("feature_scale") is not None:
        scale = FeatureScale.from_dict(manifest["feature_scale"])
        for checkpoint in checkpoints:
            if checkpoint.model.feature_scale is None:
                try:
                    checkpoint.model.set_feature_scale(scale)
                except ValueError as exc:
                    raise ValueError(f"{model_dir / _MANIFEST}: feature_scale: {exc}") from None
    return manifest, checkpoints


def _check_encoder(
    manifest: dict, store, slide_id: str, trained_on: str = "the model was trained on"
) -> None:
    """A store whose features come from another encoder than `manifest["encoder"]` (the model's) is refused with
    both named; a store or manifest without an encoder record is not checked. `trained_on` says whose record."""
    given, saved = _encoder_of(store, manifest["feature"]), manifest.get("encoder")
    if given is None or saved is None:
        return
    if given.get("encoder") != saved.get("encoder") or given.get("weights_hash") != saved.get("weights_hash"):
        raise ValueError(f"{trained_on} features of encoder {saved.get('encoder')!r} (weights "
                         f"{saved.get('weights_hash')}), but slide {slide_id}'s features/{manifest['feature']} come "
                         f"from {given.get('encoder')!r} (weights {given.get('weights_hash')})")  # fmt: skip


def check_inputs(results, labels, columns: list, feature: str, labels_subset: bool = False) -> None:
    """The checks `train_slides` makes of its inputs before any training, made once (a benchmark training
    several tasks on the same folders): `stores_and_labels`, complete `feature` in every labelled store, and one
    encoder, feature width and tiling across them (`_check_alike`). Errors as those name them."""
    from tiling import PatchStore

    stores, _, _, _ = stores_and_labels(results, labels, columns, labels_subset)
    opened = {s: PatchStore.open(path) for s, path in stores.items()}
    lacking = [s for s, store in opened.items() if not store.has_features(feature)]
    if lacking:
        raise ValueError(f"no complete features/{feature} in the stores of slide(s) {lacking[:20]}; run "
                         "`slidestream features` first")  # fmt: skip
    _check_alike(opened, stores, feature)


def _check_alike(opened: dict, stores: dict, feature: str) -> dict | None:
    """The stores to train on together (`opened`: slide id -> store; `stores`: slide id -> path) must hold
    features of one encoder (`_check_encoder`, against the first store that records one), of one width, on tiles
    of one size and resolution (the features depend on them); a mismatch is refused naming both folders. Returns
    the encoder record (None: no store has one)."""
    from tiling import TileSpec

    first = next(iter(opened))
    reference = next((s for s, store in opened.items() if _encoder_of(store, feature) is not None), first)
    encoder = _encoder_of(opened[reference], feature)
    record = {"feature": feature, "encoder": encoder}
    spec = TileSpec.from_dict(opened[first].attrs["tiling"])
    dim = int(opened[first].features(feature).shape[1])
    for slide_id, store in opened.items():  # stores of several run folders may differ
        _check_encoder(record, store, f"{slide_id} ({stores[slide_id].parent})",
                       trained_on=f"slide {reference} ({stores[reference].parent}) holds")  # fmt: skip
        other = TileSpec.from_dict(store.attrs["tiling"])
        if (other.size, other.mpp) != (spec.size, spec.mpp):
            raise ValueError(f"{stores[first].parent} holds tiles of {spec.size} px at {spec.mpp} um/px, but "
                             f"{stores[slide_id].parent} of {other.size} px at {other.mpp} um/px: features of "
                             "tiles of another size or resolution differ; tile the run folders alike")  # fmt: skip
        width = int(store.features(feature).shape[1])
        if width != dim:
            raise ValueError(f"features/{feature} of {stores[first].parent} have {dim} dimensions, those of "
                             f"{stores[slide_id].parent} {width}; train on one encoder's features")  # fmt: skip
    return encoder


def _rank(values: np.ndarray) -> np.ndarray:
    """Ranks scaled to (0, 1]: the largest value gets 1."""
    from scipy.stats import rankdata

    return rankdata(values, method="average") / max(1, len(values))


def write_scores(store_path: Path, name: str, table: np.ndarray, columns: list[str], source: str = SCORES_SOURCE,
                 **attrs) -> None:  # fmt: skip
    """scores/`name` (N, K) float32 into the patch store at `store_path`, with its `columns`, `source` (the
    program that writes it) and `attrs`; an array of that name that another program wrote is refused
    (FileExistsError), one `source` wrote is replaced. Used by `mil predict` and the nuclei step."""
    from tiling import PatchStore

    store = PatchStore.open(store_path, mode="r+")
    try:
        written_by = dict(store.scores(name).attrs).get("source")
    except KeyError:
        written_by = source  # none yet
    if written_by != source:
        raise FileExistsError(
            f"{store_path}: scores/{name} was not written by `{source}`; not overwriting it"
        )
    array = store.create_rows("scores", name, len(columns), "float32",
                              {"columns": list(columns), "source": source, **attrs})  # fmt: skip
    array[:] = np.asarray(table, dtype=np.float32)
    store.finish_rows("scores", name)


def heatmap_png(path: Path, store, folder: Path, values: np.ndarray, title: str, label: str) -> None:
    """Thumbnail with per-tile values (viridis), tissue outline, colour bar and a title."""
    from matplotlib.figure import Figure
    from PIL import Image

    from tiling import TileSpec, tile_heatmap
    from wsi import qupath

    slide = store.attrs["slide"]
    dimensions = tuple(slide["dimensions"])
    thumbnail = None
    try:
        import wsi

        with wsi.open_slide(slide["path"], backend=slide.get("backend")) as opened:
            thumbnail = opened.thumbnail(1024)
    except (
        Exception
    ):  # the slide may have moved: fall back to the run's stitch image (the whole slide's pixel
        # grid; thumbnail.png has a title band and a legend around it)
        if (folder / "stitch.png").exists():
            thumbnail = np.asarray(Image.open(folder / "stitch.png").convert("RGB"))
    if thumbnail is None:
        scale = 1024 / max(dimensions)
        thumbnail = np.full(
            (max(1, int(dimensions[1] * scale)), max(1, int(dimensions[0] * scale)), 3), 255, np.uint8
        )
    extent = TileSpec.from_dict(store.attrs["tiling"]).extent
    heat = tile_heatmap(values, store.coords, extent, dimensions, thumbnail.shape[:2])
    fig = Figure(figsize=(7, 7 * thumbnail.shape[0] / thumbnail.shape[1] + 0.6))
    ax = fig.add_subplot()
    ax.imshow(thumbnail)
    image = ax.imshow(np.ma.masked_invalid(heat), cmap="viridis", alpha=0.6, vmin=float(np.nanmin(values)),
                      vmax=float(np.nanmax(values)), interpolation="nearest")  # fmt: skip
    tissue = folder / "tissue.geojson"
    if tissue.exists():
        sx, sy = thumbnail.shape[1] / dimensions[0], thumbnail.shape[0] / dimensions[1]
        for obj in qupath.read_geojson(tissue):
            for part in getattr(obj.geometry, "geoms", [obj.geometry]):
                if part.geom_type != "Polygon":
                    continue
                x, y = part.exterior.xy
                ax.plot(np.asarray(x) * sx, np.asarray(y) * sy, color="#00aa3c", linewidth=1)
    ax.set_axis_off()
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.04, label=label)
    _save_figure(fig, path)


def _heatmap_geojson(path: Path, store, table: np.ndarray, columns: list[str], high: np.ndarray) -> None:
    from shapely.geometry import box

    from tiling import TileSpec
    from wsi.qupath import QuPathObject, write_geojson

    extent = TileSpec.from_dict(store.attrs["tiling"]).extent
    objects = [
        QuPathObject(box(float(x), float(y), float(x + extent), float(y + extent)), object_type="tile",
                     classification="High attention" if h else None,
                     measurements={c: float(v) for c, v in zip(columns, row, strict=True)})
        for (x, y), row, h in zip(store.coords, table, high, strict=True)
    ]  # fmt: skip
    write_geojson(path, objects, compress=False)  # written atomically


@dataclass(frozen=True)
class LoadedModel:
    """A model folder read once: its manifest, fold checkpoints, folder and the name its outputs carry."""

    manifest: dict
    checkpoints: list
    model_dir: Path
    name: str
    readouts: list | None = (
        None  # a tumour-pooled model's fold read-outs (its checkpoints: the tumour model's)
    )

    @property
    def feature(self) -> str:
        return self.manifest["feature"]

    @property
    def context(self):
        """The `mil.SpatialContext` the model was trained with (None: plain tile features), as its fold
        checkpoints record it (`load_model_folder` checks that they agree)."""
        return self.checkpoints[0].context


def load_model_folder(model_dir: str | Path, name: str | None = None) -> LoadedModel:
    """Read a folder written by `train_slides` (an error naming it when it is not one)."""
    model_dir = Path(model_dir)
    manifest, checkpoints = _load_model_folder(model_dir)
    _check_context(model_dir, manifest, checkpoints)
    readouts = None
    if manifest.get("readout"):
        from slidestream.mil_pooled import READOUT, load_readouts

        if manifest["readout"] != READOUT:
            raise ValueError(
                f"{model_dir / _MANIFEST}: unknown read-out {manifest['readout']!r} (known: {READOUT})"
            )
        readouts = load_readouts(model_dir, manifest)
    return LoadedModel(manifest, checkpoints, model_dir, name or manifest["name"], readouts)


def _check_context(model_dir: Path, manifest: dict, checkpoints: list) -> None:
    """The spatial context is the checkpoints' (each fold's config.json): they must agree, and the manifest's
    copy, where it has one, must agree with them."""
    from mil import SpatialContext

    contexts = [c.context for c in checkpoints]
    if any(c != contexts[0] for c in contexts):
        seen = {name: (c.to_dict() if c is not None else None)
                for name, c in zip(manifest["folds"], contexts, strict=True)}  # fmt: skip
        raise ValueError(f"{model_dir}: the fold checkpoints disagree on the spatial context: {seen}")
    if manifest.get("context") is not None and SpatialContext.from_dict(manifest["context"]) != contexts[0]:
        raise ValueError(f"{model_dir / _MANIFEST}: context {manifest['context']} differs from the fold "
                         f"checkpoints' {contexts[0].to_dict() if contexts[0] is not None else None}")  # fmt: skip


SCORE_COLUMNS = ["attention", "attention_sd", "attention_rank", "high_attention"]


def check_store(model: LoadedModel, store, slide_id: str, path: Path) -> str | None:
    """Why `store` cannot be predicted by `model` (no complete features of its kind), or None. A store whose
    features come from another encoder raises ValueError naming both."""
    feature = model.feature
    if not store.has_features(feature):
        return f"no complete features/{feature} in {path} (has {store.feature_names()})"
    _check_encoder(model.manifest, store, slide_id)
    return None


def fold_tile_scores(model: LoadedModel, store, slide_id: str) -> tuple[np.ndarray, list, np.ndarray]:
    """Run each fold checkpoint of `model` over one store: the tiles' features widened by the model's spatial
    context (N, D'), each fold's slide logits, and each fold's per-tile scores (folds, N) (attention, or
    column 0 of per-tile class scores). A store whose features do not fit the model, or with no tile, is a
    ValueError."""
    import torch

    from mil import predict_logits, read_bag

    feature, context, checkpoints = model.feature, model.context, model.checkpoints
    dim = int(store.features(feature).shape[1])
    width = dim if context is None else context.out_dim(dim)
    if width != checkpoints[0].model.in_dim:
        raise ValueError(f"features/{feature} have {dim} dimensions"
                         f"{'' if context is None else f' ({width} with the spatial context)'}, the model takes "
                         f"{checkpoints[0].model.in_dim}")  # fmt: skip
    if len(store) == 0:
        raise ValueError("the store has no tiles")
    widened = read_bag(store, feature, context)
    bag = torch.from_numpy(widened)
    logits, scores = [], []
    for checkpoint in checkpoints:
        slide_logits, tiles = predict_logits(checkpoint.model, ([bag], np.zeros(1), [slide_id]), device="cpu",
                                             attention=True)  # fmt: skip
        logits.append(slide_logits)
        scores.append(np.asarray(tiles[0], dtype=np.float64)[:, 0])
    return widened, logits, np.stack(scores)


def predict_store(model: LoadedModel, store, store_path: Path, slide_id: str, folder: Path,
                  high_fraction: float = 0.1, raw_attention: bool = False) -> tuple[dict, dict]:  # fmt: skip
    """Predict one store with the fold ensemble: scores/<name> into the store, heatmap_<name>.png and .geojson
    into `folder`. Returns the predictions row (slide_id, each column's fold mean and sd, tiles) and the
    slide-features row (the row, the high-attention fraction and the weighted mean tile features, README)."""
    feature, columns, checkpoints = model.feature, model.manifest["columns"], model.checkpoints
    widened, logits, attentions = fold_tile_scores(model, store, slide_id)
    raw = widened[:, : int(store.features(feature).shape[1])]  # the tile's own features come first
    attention = attentions.mean(axis=0)
    attention_sd = attentions.std(axis=0, ddof=1) if len(attentions) > 1 else np.zeros_like(attention)
    rank = _rank(attention)
    high = rank > 1 - high_fraction
    if model.readouts is None:
        predictions = np.stack(
            [c.task.predict(v).reshape(-1) for c, v in zip(checkpoints, logits, strict=True)]
        )
    else:  # tumour-pooled: the checkpoints are the tumour model's, their mean tile scores pick the tiles pooled
        # and the fold read-outs predict (`slidestream.mil_pooled`); its "High attention" tiles are picked as
        # the pooled ones are (the same tiles when --high-fraction is the pooled fraction)
        from mil.tumour_pool import pool_tumour_tiles, top_tiles

        pooled = pool_tumour_tiles(widened, attention, model.manifest["tumour_pool"]["fraction"])
        predictions = np.stack([readout.predict_proba(pooled[None])[0] for readout in model.readouts])
        high = np.zeros(len(attention), dtype=bool)
        high[top_tiles(attention, high_fraction)] = True
    mean = predictions.mean(axis=0)
    sd = predictions.std(axis=0, ddof=1) if len(predictions) > 1 else np.zeros_like(mean)
    table = np.column_stack([attention, attention_sd, rank, high.astype(float)])
    write_scores(store_path, model.name, table, SCORE_COLUMNS, model_dir=str(model.model_dir))
    row = {"slide_id": slide_id}
    for k, column in enumerate(columns):
        row[f"{column}_mean"], row[f"{column}_sd"] = float(mean[k]), float(sd[k])
    row["tiles"] = len(widened)
    if checkpoints[0].model.instance_scores_are_weights:  # attention (TransMIL's sums to at most 1)
        weights = np.clip(attention, 0.0, None)
        weights = weights / weights.sum() if weights.sum() > 0 else np.full(len(weights), 1 / len(weights))
    else:  # per-tile class scores (instance pooling, DSMIL): their softmax over the slide's tiles
        weights = np.exp(attention - attention.max())
        weights /= weights.sum()
    pooled = weights @ raw.astype(np.float64)
    feature_row = {**row, "high_attention_fraction": float(high.mean()),
                   **{f"{feature}_{j}": float(v) for j, v in enumerate(pooled)}}  # fmt: skip
    folder.mkdir(parents=True, exist_ok=True)
    summary = ", ".join(f"{c} {mean[k]:.3f} ± {sd[k]:.3f}" for k, c in enumerate(columns))
    shown = attention if raw_attention else rank
    heatmap_png(folder / f"heatmap_{model.name}.png", store, store_path.parent, shown,
                 f"{slide_id} — {model.name}: {summary}", "attention" if raw_attention else "attention rank")  # fmt: skip
    _heatmap_geojson(folder / f"heatmap_{model.name}.geojson", store, table, SCORE_COLUMNS, high)
    return row, feature_row


def predict_slides(results: str | Path, model_dir: str | Path, out: str | Path, high_fraction: float = 0.1,
                   raw_attention: bool = False, name: str | None = None) -> PredictResult:  # fmt: skip
    """Predict every store of `results` with the fold ensemble of `model_dir` (see the README section).

    Writes OUT/predictions.csv (slide_id, each prediction's fold mean and sd, tiles), OUT/slide_features.csv
    (predictions, weighted mean tile features, fraction of high-attention tiles),
    OUT/slides/<slide_id>/heatmap_<name>.png and .geojson, OUT/predict_manifest.jsonl (one record per slide,
    with the reason of each failure) and scores/<name> into each store (attention mean and sd over folds, its
    rank within the slide, high-attention flag). Tiles in the top `high_fraction` of attention are "High
    attention". `raw_attention` colours the heatmap by raw attention instead of its rank. A store made with
    another encoder than the model's is refused with both named; stores lacking the features fail, the rest go on.
    """
    from tiling import PatchStore

    if not 0 < high_fraction < 1:
        raise ValueError(f"high_fraction must be between 0 and 1, got {high_fraction}")
    out = Path(out)
    if (out / "predictions.csv").exists() and not (out / "predict_manifest.jsonl").exists():
        raise FileExistsError(
            f"{out} holds a predictions.csv that `mil predict` did not write; not overwriting it"
        )
    model = load_model_folder(model_dir, name)
    columns = model.manifest["columns"]
    stores = find_stores(results)
    opened = {}
    failed = {}
    for slide_id, path in stores.items():
        store = PatchStore.open(path)
        reason = check_store(model, store, slide_id, path)
        if reason:
            failed[slide_id] = reason
        else:
            opened[slide_id] = store
    out.mkdir(parents=True, exist_ok=True)
    rows, feature_rows, records = [], [], []
    for slide_id, store in opened.items():
        try:
            row, feature_row = predict_store(model, store, stores[slide_id], slide_id, out / "slides" / slide_id,
                                             high_fraction, raw_attention)  # fmt: skip
            rows.append(row)
            feature_rows.append(feature_row)
            records.append({"slide_id": slide_id, "status": "done", "tiles": row["tiles"]})
        except (OSError, ValueError, KeyError) as exc:
            failed[slide_id] = str(exc)
    records.extend({"slide_id": s, "status": "failed", "reason": r} for s, r in sorted(failed.items()))
    predictions = pd.DataFrame(rows, columns=["slide_id", *[f"{c}_{s}" for c in columns for s in ("mean", "sd")],
                                              "tiles"])  # fmt: skip
    _write_csv(predictions, out / "predictions.csv")
    _write_csv(pd.DataFrame(feature_rows), out / "slide_features.csv")
    text = "".join(json.dumps(r) + "\n" for r in sorted(records, key=lambda r: r["slide_id"]))
    with atomic_file(out / "predict_manifest.jsonl") as tmp:
        tmp.write_text(text)
    predicted = {str(r["slide_id"]): slide_sha256(opened[r["slide_id"]]) for r in rows}
    seen = _seen(predicted, trained_on(model))
    return PredictResult(predictions, failed, seen)

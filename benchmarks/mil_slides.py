"""Weak supervision on synthetic cohorts: train on one seed's cohort, test on another's (never seen).

    python -m benchmarks.mil_slides --train-results R1 --train-labels C1/labels.csv \
        --test-results R2 --test-labels C2/labels.csv --test-slides C2/slides -o OUT [--tasks cancer,grade,...] \
        [--model topk --model-arg top_k=4 --lr 0.002 --grade-link regression --context 1 --mutation-aux cancer]

`--train-results R1 R1b --train-labels C1/labels.csv C1b/labels.csv` trains on several cohorts together (their
slide ids unique across them, as `mil train` takes several run folders).

Prints, per task, the held-out figure against the issue's limit: slide-level cancer AUC (>= 0.95), attention
localisation AUC against the ground-truth tumor mask on the cancer slides (tile positive when >= 50% tumor;
>= 0.90), grade quadratic weighted kappa (>= 0.80), mutation AUC per target and macro (>= 0.85), survival
C-index (>= 0.75) and the hazard ratio of predicted high vs low risk with its 95% CI. Mutation and grade are
scored on the test cohort's cancer slides (benign slides have no grade and no mutation status).

`--tile-baselines` also prints how far colour alone gets: a per-tile logistic regression (tumor tile or not,
trained on the training cohort's tiles, scored on the test cohort's) on each tile's mean RGB, and on the
tiles' features, each also as a slide detector (max over a slide's tiles); `--oracle` adds the same on the
ground-truth nuclei's morphometry (count, area, pleomorphism, open chromatin per tile): what an encoder that
measures nuclei could reach. `--tasks ''` runs the baselines alone.

    python -m benchmarks.mil_slides --lookalike-check 30 [--dimensions 1024]

needs no cohort on disk: it renders the 128-px tiles (0.5 um/px) of the planned cohorts of seeds 0 (train) and
1 (test) twice, without and with the benign look-alikes (`SyntheticSpec.lookalikes`), and prints the per-tile
tumor AUC of mean RGB (logistic regression and gradient boosting), of total optical density alone, and of
stain_stats, for both: the before / after of the look-alikes in one run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import cohen_kappa_score, roc_auc_score

from slidestream.commands._common import key_value
from slidestream.commands.mil import add_context_arguments, context_from_args
from slidestream.mil_slides import check_inputs, predict_slides, train_slides

TASKS = {
    "cancer": ("binary", ["cancer"]),
    "grade": ("grade", ["grade"]),
    "mutation": ("mutation", ["mut_a", "mut_b"]),
    "survival": ("survival", ["time", "event"]),
}


def _tumor_tiles(store, truth_json: Path) -> np.ndarray:
    """Per tile: whether >= 50% of its level-0 box is tumor in the ground-truth mask."""
    from tiling import TileSpec

    truth = json.loads(truth_json.read_text())
    mask = np.asarray(Image.open(truth_json.parent / truth["tumor_mask"])) > 0
    d = truth["mask_downsample"]
    extent = TileSpec.from_dict(store.attrs["tiling"]).extent
    out = []
    for x, y in store.coords:
        box = mask[int(y // d) : int(np.ceil((y + extent) / d)), int(x // d) : int(np.ceil((x + extent) / d))]
        out.append(box.size > 0 and box.mean() >= 0.5)
    return np.array(out)


def _oracle_morphometry(store, truth_json: Path) -> np.ndarray:
    """Per tile, from the slide's ground-truth nuclei (what an ideal nucleus-measuring encoder would see):
    nuclei per tile, mean / 90th percentile / sd of log nuclear area (um^2), fraction with open chromatin."""
    from tiling import TileSpec
    from wsi.synthetic.content import SyntheticSpec, nuclei_in_box

    spec = SyntheticSpec(**json.loads(truth_json.read_text())["spec"])
    extent = TileSpec.from_dict(store.attrs["tiling"]).extent
    rows = []
    for x, y in store.coords:
        nuc = nuclei_in_box(spec, (float(x), float(y), float(x + extent), float(y + extent)))
        area = np.pi * nuc.ra * nuc.rb * spec.mpp**2
        if len(area) == 0:
            rows.append([0.0, 0.0, 0.0, 0.0, 0.0])
            continue
        vesicular = nuc.vesicular.mean() if nuc.vesicular is not None else 0.0
        rows.append([len(area), area.mean(), np.percentile(area, 90), np.log(area).std(), vesicular])
    return np.array(rows, dtype=np.float32)


def _tile_table(results: Path, slides: Path, feature: str, oracle: bool = False):
    """Per tissue tile of every store: mean RGB, the features, the ground-truth tumor flag, the slide id and
    (`oracle`) the ground-truth nuclear morphometry."""
    from tiling import PatchStore

    rgb, feats, truth, ids, morph = [], [], [], [], []
    for store_path in sorted(results.glob("slides/*/patches.zarr")):
        store = PatchStore.open(store_path)
        if len(store) == 0 or store.patches is None:
            continue
        patches = np.asarray(store.patches[:], dtype=np.float32)
        rgb.append(patches.mean(axis=(1, 2)))
        feats.append(np.asarray(store.features(feature)[:], dtype=np.float32))
        truth.append(_tumor_tiles(store, slides / f"{store_path.parent.name}.truth.json"))
        ids.extend([store_path.parent.name] * len(store))
        if oracle:
            morph.append(_oracle_morphometry(store, slides / f"{store_path.parent.name}.truth.json"))
    morph = np.concatenate(morph) if oracle else None
    return np.concatenate(rgb), np.concatenate(feats), np.concatenate(truth), np.array(ids), morph


def _tile_baselines(args) -> list[tuple[str, float, float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    # each training run folder with the slides next to its labels table (as `synth-cohort` writes them)
    parts = [_tile_table(Path(r), Path(labels).parent / "slides", args.features, args.oracle)
             for r, labels in zip(args.train_results, args.train_labels, strict=True)]  # fmt: skip
    train = [None if parts[0][k] is None else np.concatenate([q[k] for q in parts]) for k in range(5)]
    test = _tile_table(Path(args.test_results), Path(args.test_slides), args.features, args.oracle)
    rows = []
    cancer = pd.read_csv(args.test_labels, dtype={"slide_id": str}).set_index("slide_id")["cancer"]
    kinds = ((0, "mean RGB"), (1, args.features)) + (
        ((4, "true nuclear morphometry"),) if args.oracle else ()
    )
    for k, name in kinds:
        clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced"))
        clf.fit(train[k], train[2])
        score = clf.predict_proba(test[k])[:, 1]
        rows.append(
            (f"tile tumor AUC, logistic regression on {name}", roc_auc_score(test[2], score), float("nan"))
        )
        # The same tile-supervised classifier as a slide detector (max over the slide's tiles): a ceiling for
        # what weak supervision can reach with these features.
        top = pd.Series(score).groupby(test[3]).max()
        rows.append(
            (
                f"slide cancer AUC, max tile score ({name})",
                roc_auc_score(cancer[top.index], top),
                float("nan"),
            )
        )
    print(f"tile baselines: {int(train[2].sum())}/{len(train[2])} training tiles and {int(test[2].sum())}/"
          f"{len(test[2])} test tiles are tumor")  # fmt: skip
    return rows


def _rendered_tiles(n: int, seed: int, size: int, lookalikes: bool, tile: int = 128):
    """Mean RGB, stain_stats features and the tumor flag (>= 50% of the tile) of every tile with full tissue cover
    of the planned cohort (`plan_cohort`, 0.5 um/px), rendered directly (no slide written)."""
    from dataclasses import replace

    import torch

    from mil.stain_stats import StainStats
    from wsi.synthetic.cohort import plan_cohort
    from wsi.synthetic.content import field_values, render_region

    encoder = StainStats()
    _, _, specs = plan_cohort(n, seed, (size, size), 0.5)
    rgb, stats, tumor = [], [], []
    for spec in specs:
        spec = spec if lookalikes else replace(spec, lookalikes=0.0)
        for ty in range(0, size - tile + 1, tile):
            for tx in range(0, size - tile + 1, tile):
                xs, ys = np.meshgrid(np.arange(tx + 4, tx + tile, 8.0), np.arange(ty + 4, ty + tile, 8.0))
                tissue, tumor_field = field_values(spec, xs, ys)
                if (tissue > 0).mean() < 0.5:
                    continue
                image = render_region(spec, (tx, ty), (tile, tile))[0]
                rgb.append(image.reshape(-1, 3).mean(0))
                with torch.no_grad():
                    stats.append(
                        encoder(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)[0].numpy()
                    )
                tumor.append((tumor_field > 0).mean() >= 0.5)
    return np.array(rgb), np.array(stats), np.array(tumor)


def lookalike_check(n: int, size: int) -> list[tuple[str, float, float]]:
    """Per-tile tumor AUCs of colour and stain_stats on held-out rendered tiles, without and with look-alikes."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rows = []
    for lookalikes in (False, True):
        train, test = _rendered_tiles(n, 0, size, lookalikes), _rendered_tiles(n, 1, size, lookalikes)
        tag = "with look-alikes" if lookalikes else "without look-alikes"
        print(f"{tag}: {int(train[2].sum())}/{len(train[2])} training and {int(test[2].sum())}/{len(test[2])} "
              "test tiles are tumor")  # fmt: skip
        for k, name in ((0, "mean RGB"), (1, "stain_stats")):
            linear = make_pipeline(
                StandardScaler(), LogisticRegression(max_iter=3000, class_weight="balanced")
            )
            linear.fit(train[k], train[2])
            rows.append(
                (
                    f"{tag}: {name}, logistic regression",
                    roc_auc_score(test[2], linear.predict_proba(test[k])[:, 1]),
                    float("nan"),
                )
            )
            boosted = HistGradientBoostingClassifier(max_iter=200, random_state=0).fit(train[k], train[2])
            rows.append(
                (
                    f"{tag}: {name}, gradient boosting",
                    roc_auc_score(test[2], boosted.predict_proba(test[k])[:, 1]),
                    float("nan"),
                )
            )
        density = -np.log(np.clip(test[0], 1, 255) / 255).sum(axis=1)
        rows.append((f"{tag}: total optical density alone", roc_auc_score(test[2], density), float("nan")))
    return rows


def write_nuclei_encoder(path: str | Path) -> Path:
    """The shipped nuclei CNN's encoder (timm regnetx_002, trained here on synthetic H&E nuclei) as a plain
    timm state dict, for `slidestream features RESULTS --encoder regnetx_002 --weights PATH`."""
    from safetensors.numpy import load_file, save_file

    import nuclei

    source = Path(nuclei.__file__).parent / "weights" / "model.safetensors"
    weights = {k[len("encoder.") :]: v for k, v in load_file(source).items() if k.startswith("encoder.")}
    if not weights:
        raise ValueError(f"{source}: no encoder.* weights")
    path = Path(path)
    save_file(weights, path)
    return path


def _tumour_options(args, tasks: list[str]):
    """The `mil.TumourPoolConfig` of --tumour-model (None without it; ValueError for --tumour-fraction without
    it); with it, the options its read-out would ignore are errors (as in `mil train --tumour-model`), and
    --features, when given, must name the cancer model's features (else it becomes them)."""
    from mil.tumour_pool import TumourPoolConfig
    from slidestream.mil_slides import load_model_folder

    if not args.tumour_model:
        if args.tumour_fraction is not None:
            raise ValueError("--tumour-fraction needs --tumour-model CANCER_DIR")
        return None
    ignored = ["--mutation-aux"] if args.mutation_aux else []
    if all(t == "mutation" for t in tasks):  # no MIL learner is trained: its options would be ignored
        ignored += [name for name, given in (("--model", args.model), ("--model-arg", args.model_arg),
                                             ("--lr", args.lr), ("--context", args.context),
                                             ("--context-stats", args.context_stats)) if given]  # fmt: skip
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: not with --tumour-model (the mutation read-out takes the cancer "
                         "model's features and context)")  # fmt: skip
    feature = load_model_folder(args.tumour_model).feature
    if args.features not in (None, feature):
        raise ValueError(f"--features {args.features}: the cancer model {args.tumour_model} was trained on "
                         f"features/{feature}")  # fmt: skip
    args.features = feature
    return TumourPoolConfig(
        **({"fraction": args.tumour_fraction} if args.tumour_fraction is not None else {})
    )


def main(argv=None) -> int:
    from survival import concordance_index, hazard_ratio
    from tiling import PatchStore

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for name in ("train-results", "train-labels"):  # several: trained together (`mil train A B --labels a b`)
        p.add_argument(f"--{name}", required=True, nargs="+")
    for name in ("test-results", "test-labels", "test-slides"):
        p.add_argument(f"--{name}", required=True)
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--features", help="feature name in the stores (default stain_stats; with --tumour-model the "
                                     "cancer model's)")  # fmt: skip
    p.add_argument("--tasks", default="cancer,grade,mutation,survival")
    p.add_argument("--model", help="registered MIL model (default: `mil train`'s, abmil)")
    p.add_argument("--model-arg", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                   help="model keyword argument, as `mil train --model-arg`")  # fmt: skip
    p.add_argument("--lr", type=float, help="learning rate (default: planned)")
    add_context_arguments(p)  # as `mil train --context R --context-stats STATS`
    p.add_argument(
        "--grade-link",
        default="cumulative",
        choices=("cumulative", "corn", "regression"),
        help="grade task link (mil.tasks.GRADE_LINKS)",
    )
    p.add_argument("--mutation-aux", nargs="*", default=[], metavar="COL",
                   help="mutation task: also train on these label columns (e.g. cancer, known on every slide: "
                        "the shared attention learns where the tumour is); the figures stay those of mut_a "
                        "and mut_b")  # fmt: skip
    p.add_argument("--tumour-model", metavar="CANCER_DIR",
                   help="mutation task: the tumour-pooled read-out of this cancer model folder (as `mil train "
                        "--tumour-model`) instead of a MIL model; --mutation-aux does not apply, nor do "
                        "--model, --model-arg, --lr, --context unless another MIL task is run, and --features "
                        "must be the cancer model's")  # fmt: skip
    p.add_argument("--tumour-fraction", type=float,
                   help="with --tumour-model: the share of tiles pooled (default: mil.TumourPoolConfig's)")  # fmt: skip
    p.add_argument("--tile-baselines", action="store_true", help="also the per-tile colour baselines")
    p.add_argument(
        "--oracle",
        action="store_true",
        help="with --tile-baselines: also a baseline on the ground-truth nuclei's morphometry",
    )
    p.add_argument(
        "--lookalike-check",
        type=int,
        metavar="N",
        help="only compare colour baselines without / with look-alikes on N rendered slides per cohort",
    )
    p.add_argument("--write-nuclei-encoder", metavar="PATH",
                   help="only write the nuclei CNN's encoder weights (regnetx_002) to PATH and exit")  # fmt: skip
    if argv is None:
        import sys

        argv = sys.argv[1:]
    if "--write-nuclei-encoder" in argv:  # no cohort arguments needed
        print(write_nuclei_encoder(argv[argv.index("--write-nuclei-encoder") + 1]))
        return 0
    if "--lookalike-check" in argv:  # no cohort arguments needed
        check = argparse.ArgumentParser()
        check.add_argument("--lookalike-check", type=int, required=True, metavar="N")
        check.add_argument("--dimensions", type=int, default=1024)
        known = check.parse_args(argv)
        _print_rows(lookalike_check(known.lookalike_check, known.dimensions))
        return 0
    args = p.parse_args(argv)
    if args.tile_baselines and len(args.train_results) != len(args.train_labels):
        p.error("--tile-baselines reads each training folder's truth next to its labels table: give one "
                "--train-labels per --train-results")  # fmt: skip
    try:
        context = context_from_args(args)
    except ValueError as exc:
        p.error(str(exc))
    tasks = list(filter(None, args.tasks.split(",")))  # --tasks '': the tile baselines only
    try:
        pool_config = _tumour_options(args, tasks)
    except ValueError as exc:
        p.error(str(exc))
    args.features = args.features or "stain_stats"
    learner = {k: v for k, v in (("model", args.model),) if v is not None}  # else train_slides' default
    out = Path(args.out)
    test = pd.read_csv(args.test_labels, dtype={"slide_id": str}).set_index("slide_id")
    rows = _tile_baselines(args) if args.tile_baselines else []
    # Deterministic input errors (an id in two folders, a missing column, stores of two encoders or tilings)
    # are found once, here; what the fold loop below retries with fewer folds is a cohort too small for them.
    columns = {"patient_id", *args.mutation_aux, *(c for key in tasks for c in TASKS[key][1])}
    try:
        check_inputs(args.train_results, args.train_labels, sorted(columns), args.features)
    except (ValueError, FileNotFoundError) as exc:
        p.error(str(exc))
    pooled = None  # the tumour-pooled slide vectors: scored once, whatever the folds
    for key in tasks:
        task, targets = TASKS[key]
        start = time.perf_counter()
        trained = None
        trained_on = [*args.mutation_aux, *targets] if key == "mutation" else targets
        for folds in range(args.folds, 1, -1):  # fewer folds when a fold would lack a positive slide
            try:
                if key == "mutation" and args.tumour_model:
                    from slidestream.mil_pooled import fit_tumour_pooled, pooled_vectors

                    if pooled is None:
                        pooled = pooled_vectors(args.train_results, args.train_labels, targets, args.tumour_model,
                                                group="patient_id", config=pool_config)  # fmt: skip
                    trained = fit_tumour_pooled(pooled, out / f"model_{key}", folds=folds)
                    break
                trained = train_slides(args.train_results, args.train_labels, task, trained_on, out / f"model_{key}",
                                       **learner, feature=args.features, folds=folds, group="patient_id",
                                       config={"lr": args.lr} if args.lr else "auto",
                                       model_kwargs=dict(args.model_arg), grade_link=args.grade_link,
                                       context=context)  # fmt: skip
                break
            except ValueError as exc:  # e.g. a cohort too small for the folds of this task
                print(f"{key}: not trained with {folds} folds: {exc}")
        if trained is None:
            print(f"{key}: not trained (no fold count from {args.folds} down to 2 worked); left out")
            continue
        print(f"{key}: {folds} folds")
        predicted = predict_slides(args.test_results, trained.model_dir, out / f"predicted_{key}")
        seconds = time.perf_counter() - start
        pred = predicted.predictions.set_index("slide_id")
        truth = test.loc[pred.index]
        cv = {m: round(float(v), 3) for m, v in trained.summary["mean"].items()}
        if "pooled" in trained.summary:  # the monitored metric over all out-of-fold predictions at once
            cv.update(
                {f"{m} pooled": round(float(v), 3) for m, v in trained.summary["pooled"].dropna().items()}
            )
        if key == "cancer":
            auc = roc_auc_score(truth["cancer"], pred["probability_mean"])
            rows.append(("cancer AUC", auc, 0.95))
            per_slide, pooled_y, pooled_s = [], [], []
            for slide_id in truth.index[truth["cancer"] == 1]:
                store = PatchStore.open(Path(args.test_results) / "slides" / slide_id / "patches.zarr")
                positive = _tumor_tiles(store, Path(args.test_slides) / f"{slide_id}.truth.json")
                rank = store.scores(trained.model_dir.name)[:, 2]
                pooled_y.extend(positive)
                pooled_s.extend(rank)
                if 0 < positive.sum() < len(positive):
                    per_slide.append(roc_auc_score(positive, rank))
            rows.append(("localisation AUC (pooled attention rank)", roc_auc_score(pooled_y, pooled_s), 0.90))
            rows.append(
                (f"localisation AUC (mean of {len(per_slide)} slides)", float(np.mean(per_slide)), 0.90)
            )
        elif key == "grade":
            cancer = truth["grade"].notna()
            columns = [c for c in pred.columns if c.startswith("p_") and c.endswith("_mean")]
            levels = np.array([float(c[2:-5]) for c in columns])
            probs = pred.loc[cancer, columns].to_numpy()
            # The grade task's rule: the number of cumulative probabilities P(grade > k) above 0.5.
            cumulative = 1 - np.cumsum(probs, axis=1)[:, :-1]
            predicted_grade = levels[(cumulative > 0.5).sum(axis=1)]
            kappa = cohen_kappa_score(truth.loc[cancer, "grade"].astype(int), predicted_grade.astype(int),
                                      weights="quadratic")  # fmt: skip
            rows.append(("grade QWK (cancer slides)", kappa, 0.80))
        elif key == "mutation":
            known = truth[targets].notna().all(axis=1)  # the cancer slides
            aucs = [
                roc_auc_score(truth.loc[known, t].astype(int), pred.loc[known, f"p_{t}_mean"])
                for t in targets
            ]
            for t, a in zip(targets, aucs, strict=True):
                rows.append((f"AUC {t}", a, 0.85))
            rows.append(("mutation macro AUC", float(np.mean(aucs)), 0.85))
        elif key == "survival":
            risk = pred["risk_mean"].to_numpy()
            c = concordance_index(truth["time"], truth["event"], risk)
            c = c if np.isscalar(c) else getattr(c, "c_index", c)
            rows.append(("survival C-index", float(c), 0.75))
            try:
                hr = hazard_ratio(truth["time"], truth["event"], risk > np.median(risk))
                print(f"hazard ratio high vs low predicted risk: {hr.hazard_ratio:.2f} "
                      f"(95% CI {hr.lower:.2f}-{hr.upper:.2f}, p {hr.p_value:.3g})")  # fmt: skip
            except ValueError as exc:
                print(f"hazard ratio: {exc}")
        print(f"{key}: cross-validated on train {cv}; train + predict {seconds:.0f} s")
    _print_rows(rows)
    return 0


def _print_rows(rows) -> None:
    print(f"\n{'figure (held-out cohort)':58s} {'value':>7s} {'limit':>6s}  ratio")
    for name, value, limit in rows:
        print(f"{name:58s} {value:7.3f} {limit:6.2f}  {value / limit:.2f}")


if __name__ == "__main__":
    raise SystemExit(main())

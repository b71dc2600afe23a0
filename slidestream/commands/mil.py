"""`slidestream mil train|predict`: cross-validated MIL models on a run folder's patch stores, and their
predictions, heatmaps and QuPath tiles."""

from __future__ import annotations

import argparse
import sys

from slidestream.commands._common import (
    add_quiet,
    fraction,
    key_value,
    non_negative_int,
    output_folder,
    positive_float,
    positive_int,
    show_progress,
)


def register(sub) -> None:
    p = sub.add_parser("mil", help="train and apply slide-level MIL models (weak supervision)",
                       description="Multiple-instance learning on the patch stores of a run folder.")  # fmt: skip
    actions = p.add_subparsers(dest="mil_command", metavar="ACTION")
    train = actions.add_parser(
        "train",
        help="cross-validate a MIL model on RESULTS/slides/*/patches.zarr with a labels table",
        description="Reads the features of every RESULTS/slides/*/patches.zarr (of one run folder or several), "
        "labels from a CSV/TSV keyed by slide_id (or several, stacked), and cross-validates the model (folds "
        "grouped by --group). Writes MODEL_DIR with fold "
        "checkpoints, plan.json, metrics.json, folds.csv, oof_predictions.csv and plots (ROC per fold, "
        "confusion matrix, or Kaplan-Meier of predicted risk groups). With --tumour-model (mutation read from "
        "a cancer model's tumour tiles) MODEL_DIR holds instead a copy of the cancer model (tumour_model/), each "
        "fold's logistic read-out (fold_<k>/readout.json), metrics.json, folds.csv, oof_predictions.csv and "
        "ROC plots (no plan.json, no training curves).",
    )
    train.add_argument("results", metavar="RESULTS", nargs="+",
                       help="run folder written by `slidestream run`; several: their stores trained on together "
                            "(slide ids unique across them)")  # fmt: skip
    train.add_argument("--labels", required=True, action="extend", nargs=1, metavar="LABELS",
                       help="labels table (CSV/TSV) with a slide_id column; several: repeat the option "
                            "(--labels a.csv --labels b.csv), the tables are stacked (e.g. one per RESULTS)")  # fmt: skip
    train.add_argument("--labels-subset", action="store_true",
                       help="the table may list slides not in RESULTS (one master table for many folders): use "
                            "the slides present and say how many rows were left out (default: an error)")  # fmt: skip
    train.add_argument("--task", required=True, choices=("binary", "multiclass", "grade", "mutation", "survival"),
                       help="what --target holds: binary (one 0/1 column; AUC), multiclass (one class column), "
                            "grade (one column of ordered integer levels; QWK), mutation (0/1 columns, empty = "
                            "unknown; AUC per target and macro) or survival (TIME EVENT; C-index)")  # fmt: skip
    train.add_argument("--target", required=True, nargs="+", metavar="COL",
                       help="label column(s); survival takes TIME EVENT, mutation one or more 0/1 columns")  # fmt: skip
    train.add_argument("--model", help="registered MIL model (default abmil)")
    train.add_argument("--model-arg", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="keyword argument of the model, e.g. --model-arg top_k=4 --model-arg embed_dim=32 "
                            "(values read as TOML: numbers, true / false, \"strings\"; else as text)")  # fmt: skip
    train.add_argument("--grade-link", default="cumulative", choices=("cumulative", "corn", "regression"),
                       help="grade task: the ordinal link, cumulative (default; in cross-validation on 480 synthetic "
                            "slides corn scored 0.009 QWK over it, regression 0.016 under), corn or regression (README)")  # fmt: skip
    train.add_argument("--features", help="feature name in the stores (default stain_stats)")
    add_context_arguments(train)
    train.add_argument("--tumour-model", metavar="CANCER_DIR",
                       help="mutation task: read each target from the tiles this cancer model folder scores as "
                            "tumour (the mean features of the top --tumour-fraction of each slide's tiles, one "
                            "logistic regression per target) instead of training a MIL model; its features and "
                            "context are used (--model, --features, --context do not apply). Saved in MODEL_DIR")  # fmt: skip
    train.add_argument("--tumour-fraction", type=fraction, metavar="F",
                       help="with --tumour-model: the share of each slide's tiles pooled (default 0.1)")  # fmt: skip
    train.add_argument(
        "--folds",
        type=positive_int,
        default=5,
        help="cross-validation folds (default 5); 1: one grouped train/validation split (3:1) whose "
        "validation figures are reported (optimistic: they also pick the epoch)",
    )
    train.add_argument("--group", help="column of patient ids: folds keep a patient's slides together")
    train.add_argument(
        "--epochs",
        type=positive_int,
        help="train N epochs with patience N/3 (the other settings as planned from the data); default: planned",
    )
    train.add_argument("--lr", type=positive_float, help="learning rate (default: planned from the data)")
    train.add_argument("--seed", type=non_negative_int, default=0, help="seed of the folds and the training")
    train.add_argument(
        "-o", "--out", required=True, type=output_folder, metavar="MODEL_DIR", help="model folder to write"
    )
    add_quiet(train)
    train.set_defaults(func=run_train)
    predict = actions.add_parser(
        "predict",
        help="predict every store of RESULTS with a trained model folder",
        description="Fold-ensemble predictions (mean and sd) in OUT/predictions.csv, OUT/slide_features.csv, "
        "per-tile attention into each store as scores/<model name>, OUT/slides/<slide_id>/heatmap_<model>.png "
        "and .geojson (QuPath tiles; the top --high-fraction of attention classified 'High attention').",
    )
    predict.add_argument("results", metavar="RESULTS", help="run folder with patch stores and features")
    predict.add_argument("--model", required=True, metavar="MODEL_DIR", help="folder written by `mil train`")
    predict.add_argument("-o", "--out", required=True, type=output_folder, help="output folder")
    predict.add_argument("--high-fraction", type=fraction, default=0.1,
                         help="fraction of tiles per slide classified 'High attention' (default 0.1)")  # fmt: skip
    predict.add_argument(
        "--raw-attention", action="store_true", help="heatmaps of raw attention, not its rank"
    )
    add_quiet(predict)
    predict.set_defaults(func=run_predict)
    p.set_defaults(func=lambda args: p.print_help() or 2)


def context_stats(text: str) -> str:
    """argparse type of `--context-stats`: one or more of `mil.CONTEXT_STATS`, comma-separated."""
    from mil.context import CONTEXT_STATS

    stats = [s.strip() for s in text.split(",")]
    if not all(s in CONTEXT_STATS for s in stats) or len(set(stats)) != len(stats):
        raise argparse.ArgumentTypeError(f"{text!r}: one or more of {', '.join(CONTEXT_STATS)}, comma-separated "
                                         "(no repeats)")  # fmt: skip
    return ",".join(stats)


def add_context_arguments(parser) -> None:
    """`--context R` and `--context-stats STATS` (of `mil train`; the benchmarks take them too):
    `context_from_args` turns them into a `mil.SpatialContext` or None. (mil, which imports torch, is imported
    only when a value is parsed: the parsers are built at every start.)"""
    parser.add_argument("--context", type=non_negative_int, default=0, metavar="R",
                        help="spatial context: append to each tile's features a summary (--context-stats) of the "
                             "features of the tiles within R grid steps (R 1: the tile and its 8 neighbours), so a "
                             "model can tell a tile by its surroundings; 0 (default): none. Saved in MODEL_DIR; "
                             "`mil predict` applies it")  # fmt: skip
    parser.add_argument("--context-stats", type=context_stats, metavar="STATS",
                        help="with --context: the neighbourhood summary appended: mean (default), max, "
                             "or both as mean,max")  # fmt: skip


def context_from_args(args):
    """The `mil.SpatialContext` of `--context` / `--context-stats` (None without --context); ValueError for
    --context-stats without --context."""
    from mil import SpatialContext

    return SpatialContext.from_options(args.context, args.context_stats)


def run_train(args) -> int:
    from slidestream.mil_slides import train_slides

    overrides = {"lr": args.lr} if args.lr is not None else {}  # replace planned fields, keep the rest
    if args.epochs is not None:
        overrides.update(epochs=args.epochs, patience=max(1, args.epochs // 3))
    try:
        if args.tumour_model or args.tumour_fraction is not None:
            result = _train_pooled(args)
        else:
            context = context_from_args(args)
            given = {k: v for k, v in (("model", args.model), ("feature", args.features)) if v is not None}
            result = train_slides(args.results, args.labels, args.task, args.target, args.out, **given,
                                  folds=args.folds, group=args.group, seed=args.seed,
                                  config=overrides, progress=show_progress(args), labels_subset=args.labels_subset,
                                  model_kwargs=dict(args.model_arg), grade_link=args.grade_link,
                                  context=context)  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.unused_labels:
        print(f"labels: {len(result.unused_labels)} row(s) of {' + '.join(args.labels)} name slides not in "
              f"{' + '.join(args.results)}, "
              f"left out (--labels-subset): {list(result.unused_labels[:20])}")  # fmt: skip
    if result.left_out:
        print(
            f"left out {len(result.left_out)} slide(s) without a value of {args.target}: {result.left_out[:20]}"
        )
    print(result.folds.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print()
    print(result.summary.to_string(float_format=lambda v: f"{v:.3f}", na_rep=""))
    print(f"model folder: {result.model_dir}")
    return 0


def _train_pooled(args):
    """`mil train --tumour-model`: options that would be ignored are errors (ValueError)."""
    from mil.tumour_pool import TumourPoolConfig
    from slidestream.mil_pooled import train_tumour_pooled

    if not args.tumour_model:
        raise ValueError("--tumour-fraction needs --tumour-model CANCER_DIR")
    if args.task != "mutation":
        raise ValueError(f"--tumour-model reads 0/1 traits: it needs --task mutation, got --task {args.task}")
    ignored = [name for name, given in (("--model", args.model), ("--features", args.features),
                                        ("--context", args.context), ("--context-stats", args.context_stats),
                                        ("--model-arg", args.model_arg), ("--epochs", args.epochs),
                                        ("--lr", args.lr)) if given]  # fmt: skip
    if ignored:
        raise ValueError(f"{', '.join(ignored)}: not with --tumour-model (the features and context are the "
                         "cancer model's; the read-out is a logistic regression)")  # fmt: skip
    config = TumourPoolConfig(
        **({"fraction": args.tumour_fraction} if args.tumour_fraction is not None else {})
    )
    return train_tumour_pooled(args.results, args.labels, args.target, args.tumour_model, args.out,
                               folds=args.folds, group=args.group, seed=args.seed,
                               labels_subset=args.labels_subset, config=config)  # fmt: skip


def run_predict(args) -> int:
    from slidestream.mil_slides import predict_slides

    try:
        result = predict_slides(args.results, args.model, args.out, high_fraction=args.high_fraction,
                                raw_attention=args.raw_attention)  # fmt: skip
    except (ValueError, FileNotFoundError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(result.predictions.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    for slide_id, reason in sorted(result.failed.items()):
        print(f"failed: {slide_id}: {reason}", file=sys.stderr)
    if result.seen:
        print(f"note: {len(result.seen)} of the slides predicted were in the model's training set (its "
              f"metrics.json), so their predictions are not held out: {list(result.seen[:20])}")  # fmt: skip
    print(f"predictions: {args.out}/predictions.csv")
    return 1 if result.failed else 0

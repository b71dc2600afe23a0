"""`slidestream run SLIDES... -o OUT`: every step for every slide, on dask, resumable."""

from __future__ import annotations

import json
import sys
from dataclasses import replace

from slidestream.commands._common import (
    add_deprecated_alias,
    add_quiet,
    add_scheduler_options,
    add_slides_and_out,
    positive_int,
    show_progress,
)
from slidestream.commands._quality import add_quality_options, quality_options
from slidestream.commands._tiling import add_tiling_options, tiling_values
from slidestream.commands.features import add_encoder_options, parse_encoder_args, random_weights_notice
from slidestream.interrupts import deferring


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="batch-process slides: tissue, tiles, features, summary (dask, resumable)",
        description="Processes slide files and folders (searched for slide extensions; other files are listed "
        "and skipped). Each slide gets OUT/slides/<slide_id>/ with patches.zarr, tissue.geojson, "
        "thumbnail.png, tissue_mask.png and stitch.png; OUT/manifest.jsonl records every step, OUT/summary.csv has one row per slide, "
        "OUT/run.log the details. Re-running skips finished steps and redoes partial or damaged ones; results made "
        "with other options are kept unless --overwrite. A failing slide is recorded and the others go on; the exit "
        "status is 1 when any failed, 3 when the disk filled up. Options come from --config "
        "(TOML with [run], [tiling], [features], [predict] tables) and are overridden by the flags below.",
    )
    add_slides_and_out(p)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--steps", help="comma-separated steps (default: tile,features, and predict with --model)")
    add_tiling_options(p, from_config=True)
    p.add_argument("--model", metavar="MODEL_DIR",
                   help="MIL model folder (`slidestream mil train`): adds the predict step (scores/<model> in each "
                   "store, heatmap_<model>.png/.geojson per slide, predictions in summary.csv)")  # fmt: skip
    add_quality_options(p)
    add_encoder_options(p, default=None)
    p.add_argument(
        "--device",
        help="where the features' encoder runs: cpu, cuda or auto (cuda when available; "
        "default: [features] device of --config, else auto)",
    )
    p.add_argument("--workers", type=positive_int, help="slides in parallel, each tiling with one thread (default: one "
                   "per core)")  # fmt: skip
    p.add_argument("--executor", choices=("threads", "forks", "processes"),
                   help="where the slides run without --scheduler-address: worker processes forked from this one "
                   "(forks: no GIL shared between slides; a crash in a codec ends the slides of one worker, not the "
                   "run), threads of this process (threads: shared memory, one GIL) or worker processes of a local "
                   "dask cluster (a crash ends one slide; a few seconds more per run) (default: [run] executor of "
                   "--config, else forks on Linux for steps without torch (tile), threads otherwise)")  # fmt: skip
    add_scheduler_options(p, timeout_default="[run] scheduler_timeout of --config, else 20")
    add_deprecated_alias(p, "--scheduler", "--scheduler-address", dest="scheduler_address")
    p.add_argument(
        "--overwrite", action="store_true", help="redo every step, replacing results made with other options"
    )
    p.add_argument("--dashboard", action="store_true", help="serve the dask dashboard of the local cluster "
                   "(port 8787, or the next free one) and print its address (default: off)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="show the plan and exit")
    add_quiet(p)
    p.set_defaults(func=run)


def _steps(args) -> tuple[str, ...] | None:
    if args.steps:
        return tuple(s.strip() for s in args.steps.split(","))
    return ("tile", "features", "predict") if args.model else None


def _check_model_folder(model_dir) -> None:
    """ValueError naming what is wrong when the predict step's model folder cannot be read (the read is kept
    for the slides: the predict step reads a folder once per process)."""
    from slidestream.pipeline.predict_step import load_model_dir

    try:
        load_model_dir(model_dir)
    except (OSError, KeyError, json.JSONDecodeError) as exc:
        raise ValueError(f"--model: {exc}") from exc


def run(args) -> int:
    with deferring():  # scipy, scikit-image, dask: a second or so, not cut by Ctrl-C (slidestream.interrupts)
        from slidestream.discovery import find_slides
        from slidestream.pipeline import load_config, plan, run_batch
        from slidestream.pipeline.report import report
        from slidestream.pipeline.steps import default_executor

    try:
        config = load_config(
            args.config, out=args.out, slide_workers=args.workers, executor=args.executor,
            scheduler_address=args.scheduler_address,
            scheduler_timeout=args.scheduler_timeout, overwrite=True if args.overwrite else None,
            progress=show_progress(args), steps=_steps(args), dashboard=True if args.dashboard else None,
            **{f"tiling.{k}": v for k, v in tiling_values(args).items()},
            **{"features.encoder": args.encoder, "features.weights": args.weights, "features.device": args.device,
               "features.encoder_args": parse_encoder_args(args.encoder_arg),
               "features.random_weights": True if args.random_weights else None, "predict.model": args.model,
               **{f"tiling.{k}": v for k, v in quality_options(args).items()}},
        )  # fmt: skip
        # Neither --executor nor [run] executor, nor a cluster (a scheduler address, the dashboard's): forks on
        # Linux for tile runs, else threads (`default_executor`).
        if config.executor is None and not (config.scheduler_address or config.dashboard):
            config = replace(config, executor=default_executor(config.steps))
        if "features" in config.steps:  # refused here, not once per slide; mil (torch) imported only then
            from mil.encoders import EncoderError, require_weights

            f = config.features
            try:
                require_weights(f.encoder, f.weights, f.random_weights)
            except EncoderError as exc:
                raise ValueError(str(exc)) from exc
        if "predict" in config.steps:  # a folder that is not a model: refused here, not once per slide
            _check_model_folder(config.predict.model)
        slides, skipped = find_slides(args.slides)
    except ValueError as exc:  # NoSlidesFound is a ValueError naming the extensions searched
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for item in skipped:
        print(f"skipped: {item.path}: {item.reason}", file=sys.stderr)
    if args.dry_run:
        try:
            print("\n".join(plan(slides, config)))
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    if "features" in config.steps and config.features.random_weights:
        print(random_weights_notice(config.features.encoder, "summary.csv and the stores"), file=sys.stderr)
    try:
        result = run_batch(slides, config, skipped=skipped)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(result, len(slides))

"""`slidestream run SLIDES... -o OUT`: every step for every slide, on dask, resumable."""

from __future__ import annotations

import sys

from slidestream.commands._common import add_deprecated_alias, add_quiet, add_slides_and_out, show_progress
from slidestream.commands.features import add_encoder_options, parse_encoder_args, random_weights_notice


def register(sub) -> None:
    p = sub.add_parser(
        "run",
        help="batch-process slides: tissue, tiles, features, summary (dask, resumable)",
        description="Processes slide files and folders (searched for slide extensions; other files are listed "
        "and skipped). Each slide gets OUT/slides/<slide_id>/ with patches.zarr, tissue.geojson and "
        "thumbnail.png; OUT/manifest.jsonl records every step, OUT/summary.csv has one row per slide, "
        "OUT/run.log the details. Re-running skips finished steps and redoes partial or damaged ones; results made "
        "with other options are kept unless --overwrite. A failing slide is recorded and the others go on; the exit "
        "status is 1 when any failed, 3 when the disk filled up. Options come from --config "
        "(TOML with [run], [tiling], [features] tables) and are overridden by the flags below.",
    )
    add_slides_and_out(p)
    p.add_argument("--config", help="TOML configuration file")
    p.add_argument("--steps", help="comma-separated steps (default: all: tile,features)")
    p.add_argument("--mpp", type=float, help="target resolution of the tiles in um/px (default 0.5)")
    p.add_argument("--size", type=int, help="tile side in px at the target mpp (default 256)")
    p.add_argument("--min-tissue", type=float, help="minimum tissue fraction per tile (default 0.5)")
    p.add_argument("--slide-mpp", type=float, help="the slides' own um/px, for files whose metadata lacks it")
    p.add_argument("--roi", help="QuPath GeoJSON ROI file, or a folder of <slide_id>.geojson")
    add_encoder_options(p, default=None)
    p.add_argument("--device", help="cpu, cuda or auto")
    p.add_argument("--workers", type=int, help="slides in parallel: dask worker processes of the local cluster, "
                   "each tiling with one thread (default: one per core)")  # fmt: skip
    p.add_argument(
        "--scheduler-address", help="run on an existing dask.distributed cluster (tcp://HOST:PORT)"
    )
    add_deprecated_alias(p, "--scheduler", "--scheduler-address", dest="scheduler_address")
    p.add_argument(
        "--overwrite", action="store_true", help="redo every step, replacing results made with other options"
    )
    p.add_argument("--dashboard", action="store_true", help="serve the dask dashboard of the local cluster "
                   "(port 8787, or the next free one) and print its address (default: off)")  # fmt: skip
    p.add_argument("--dry-run", action="store_true", help="show the plan and exit")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from mil.encoders import EncoderError, require_weights
    from slidestream.discovery import find_slides
    from slidestream.pipeline import load_config, plan, run_batch
    from slidestream.pipeline.report import report

    try:
        config = load_config(
            args.config, out=args.out, slide_workers=args.workers, scheduler_address=args.scheduler_address,
            overwrite=True if args.overwrite else None, progress=show_progress(args),
            dashboard=True if args.dashboard else None,
            steps=tuple(s.strip() for s in args.steps.split(",")) if args.steps else None,
            **{"tiling.mpp": args.mpp, "tiling.size": args.size, "tiling.min_tissue": args.min_tissue,
               "tiling.slide_mpp": args.slide_mpp, "tiling.roi": args.roi, "features.encoder": args.encoder,
               "features.weights": args.weights, "features.device": args.device,
               "features.encoder_args": parse_encoder_args(args.encoder_arg),
               "features.random_weights": True if args.random_weights else None},
        )  # fmt: skip
        if "features" in config.steps:  # refused here, not once per slide
            f = config.features
            require_weights(f.encoder, f.weights, f.random_weights)
        slides, skipped = find_slides(args.slides)
    except (ValueError, EncoderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in skipped:
        print(f"skipped (not a slide file): {path}", file=sys.stderr)
    if not slides:
        print("error: no slides found", file=sys.stderr)
        return 2
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
        result = run_batch(slides, config)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return report(result, len(slides))

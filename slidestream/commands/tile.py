"""`slidestream tile SLIDES... -o OUT`: tissue detection and patch stores, one per slide."""

from __future__ import annotations

import sys
from pathlib import Path

import wsi
from slidestream.commands._common import add_quiet, add_slides_and_out, positive_int, show_progress
from slidestream.commands._quality import add_quality_options, quality_options
from slidestream.commands._tiling import CODEC_CHOICES, ROI_MODES, add_tiling_options, tiling_values
from slidestream.discovery import find_slides
from slidestream.interrupts import deferring

__all__ = ["CODEC_CHOICES", "ROI_MODES", "register", "run"]


def register(sub) -> None:
    p = sub.add_parser(
        "tile",
        help="detect tissue and write zarr patch stores",
        description="For each slide (files, or folders searched for slide files) write "
        "OUT/slides/<slide_id>/patches.zarr (tile coordinates, patches, tissue fractions) and tissue.geojson "
        "(QuPath annotations), thumbnail.png, tissue_mask.png and stitch.png. Complete stores made with the same options are skipped; partial or damaged ones "
        "resume; complete ones made with other options are kept unless --overwrite.",
    )
    add_slides_and_out(p)
    add_tiling_options(p)
    add_quality_options(p)
    p.add_argument(
        "--workers",
        type=positive_int,
        help="shards (batches of tiles) tiled at once, in threads (default: all cores)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite stores even when complete, also those made with other options",
    )
    add_quiet(p)
    p.set_defaults(func=run)  # fmt: skip


def run(args) -> int:
    with deferring():  # scipy, scikit-image, dask: a second or so, not cut by Ctrl-C (slidestream.interrupts)
        from slidestream.pipeline.config import tile_options
        from slidestream.pipeline.lock import SlideLock
        from slidestream.pipeline.manifest import disk_full
        from slidestream.pipeline.steps import tile_with_pictures
        from tiling import StoreError
        from tiling.qc import describe

    try:
        slides, skipped = find_slides(args.slides)
    except ValueError as exc:  # a missing path, clashing ids, or no slides at all (NoSlidesFound)
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for item in skipped:
        print(f"skipped: {item.path}: {item.reason}", file=sys.stderr)
    try:
        options = tile_options(**tiling_values(args), **quality_options(args), shard_workers=args.workers)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = []
    for item in slides:
        folder = Path(args.out) / "slides" / item.slide_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with SlideLock(folder) as lock:
                if lock.waited_for:
                    print(f"{item.slide_id}: waited {lock.waited:.1f} s for another run ({lock.waited_for})")
                result, said = tile_with_pictures(folder, item.path, item.slide_id, options,
                                                  overwrite=args.overwrite, progress=show_progress(args))  # fmt: skip
        except (wsi.SlideError, StoreError, ValueError, OSError) as exc:
            failed.append(item.slide_id)
            print(f"failed: {item.slide_id}: {disk_full(exc, folder) or exc}", file=sys.stderr)
            continue
        area = f", tissue {result.tissue_mm2:.3g} mm2" if result.tissue_mm2 is not None else ""
        status = "skipped (already computed)" if result.status == "skipped" else result.status
        qc = result.store.attrs.get("qc")
        dropped = f", {describe(qc)}" if qc else ""
        kept = "coordinates only" if result.store.patches is None else result.store.codec
        print(f"{item.slide_id}: {status}, {result.tiles} tiles ({kept}){area}{dropped}, "
              f"{result.seconds:.1f} s -> {result.store.path}")  # fmt: skip
        # The store's quality-control warnings (also when skipped), then other warnings meant for users (not
        # ResourceWarnings of files a library left to the garbage collector, nor deprecations of its internals).
        for message in said:
            print(f"  warning: {message}")
    if failed:
        print(f"{len(failed)} of {len(slides)} slide(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

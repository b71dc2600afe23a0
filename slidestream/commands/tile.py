"""`slidestream tile SLIDES... -o OUT`: tissue detection and patch stores, one per slide."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import wsi
from slidestream.commands._common import add_quiet, add_slides_and_out, show_progress
from slidestream.discovery import find_slides

# As tiling.config has them (a test checks); spelled out so that building the parser does not import tiling.
ROI_MODES = ("restrict", "replace")
CODEC_CHOICES = ("auto", "jpeg", "lz4", "zstd", "zstd3", "none")


def register(sub) -> None:
    p = sub.add_parser(
        "tile",
        help="detect tissue and write zarr patch stores",
        description="For each slide (files, or folders searched for slide files) write "
        "OUT/slides/<slide_id>/patches.zarr (tile coordinates, patches, tissue fractions) and tissue.geojson "
        "(QuPath annotations). Complete stores made with the same options are skipped; partial or damaged ones "
        "resume; complete ones made with other options are kept unless --overwrite.",
    )
    add_slides_and_out(p)
    p.add_argument(
        "--mpp", type=float, default=0.5, help="target microns per pixel of the tiles (default 0.5 = 20x)"
    )
    p.add_argument(
        "--size", type=int, default=256, help="tile side in pixels at the target mpp (default 256)"
    )
    p.add_argument(
        "--stride", type=int, help="step between tiles in pixels (default: the tile size, no overlap)"
    )
    p.add_argument(
        "--min-tissue", type=float, default=0.5, help="minimum tissue fraction of a kept tile (default 0.5)"
    )
    p.add_argument(
        "--roi", help="QuPath GeoJSON annotations restricting the tissue; a folder holds <slide_id>.geojson"
    )
    p.add_argument(
        "--roi-mode",
        choices=ROI_MODES,
        default="restrict",
        help="restrict: tissue inside the ROI (default); replace: the ROI instead of detected tissue",
    )
    p.add_argument(
        "--coords-only", action="store_true", help="store coordinates only; read pixels from the slide later"
    )
    p.add_argument(
        "--codec",
        choices=CODEC_CHOICES,
        default="auto",
        help="patch codec (default auto: the slide's own JPEG tiles when aligned, else lz4)",
    )
    p.add_argument(
        "--exact",
        action="store_true",
        help="resampled tiles equal to read_region + resize (default: JPEG DCT scaling, faster, an area average)",
    )
    p.add_argument("--slide-mpp", type=float, help="the slides' own um/px, for files whose metadata lacks it")
    p.add_argument(
        "--workers", type=int, help="shards (batches of tiles) tiled at once, in threads (default: all cores)"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="rewrite stores even when complete, also those made with other options",
    )
    add_quiet(p)
    p.set_defaults(func=run)  # fmt: skip


def run(args) -> int:
    from slidestream.pipeline.config import TileOptions
    from slidestream.pipeline.lock import SlideLock
    from slidestream.pipeline.manifest import disk_full
    from slidestream.pipeline.steps import tile_into, without_path
    from tiling import StoreError

    try:
        slides, skipped = find_slides(args.slides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in skipped:
        print(f"skipped (not a slide file): {path}", file=sys.stderr)
    try:
        options = TileOptions(size=args.size, mpp=args.mpp, stride=args.stride, min_tissue=args.min_tissue,
                              coords_only=args.coords_only, codec=args.codec, roi_mode=args.roi_mode,
                              slide_mpp=args.slide_mpp, shard_workers=args.workers, roi=args.roi,
                              exact=args.exact)  # fmt: skip
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    failed = []
    for item in slides:
        folder = Path(args.out) / "slides" / item.slide_id
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings(record=True) as caught, SlideLock(folder) as lock:
                if lock.waited_for:
                    print(f"{item.slide_id}: waited {lock.waited:.1f} s for another run ({lock.waited_for})")
                warnings.simplefilter("always")
                result = tile_into(folder, item.path, item.slide_id, options, overwrite=args.overwrite,
                                   progress=show_progress(args))  # fmt: skip
        except (wsi.SlideError, StoreError, ValueError, OSError) as exc:
            failed.append(item.slide_id)
            print(f"failed: {item.slide_id}: {disk_full(exc, folder) or exc}", file=sys.stderr)
            continue
        area = f", tissue {result.tissue_mm2:.3g} mm2" if result.tissue_mm2 is not None else ""
        status = "skipped (already computed)" if result.status == "skipped" else result.status
        print(f"{item.slide_id}: {status}, {result.tiles} tiles ({result.store.codec}){area}, "
              f"{result.seconds:.1f} s -> {result.store.path}")  # fmt: skip
        # The store's quality-control warnings (also when skipped), then other warnings meant for users (not
        # ResourceWarnings of files a library left to the garbage collector, nor deprecations of its internals).
        others = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
        for message in dict.fromkeys(without_path(m, item.path) for m in (*result.warnings, *others)):
            print(f"  warning: {message}")
    if failed:
        print(f"{len(failed)} of {len(slides)} slide(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

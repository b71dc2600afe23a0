"""`slidestream synth OUT.svs`: write a synthetic H&E-like slide with ground truth beside it."""

from __future__ import annotations

import sys
from pathlib import Path

from slidestream.commands._common import (
    add_deprecated_alias,
    add_quiet,
    jpeg_quality,
    non_negative_int,
    parse_dimensions,
    show_progress,
    slide_mpp,
    tiff_tile_side,
)
from wsi.synthetic import SyntheticSpec, write_slide


def register(sub) -> None:
    p = sub.add_parser(
        "synth",
        help="write a synthetic H&E-like slide with ground truth",
        description="Write a pyramidal, JPEG-tiled, Aperio-style slide that openslide and tiffslide open, plus "
        "OUT.truth.json, tissue/tumor masks (PNG) and, for slides up to 150 Mpx, every nucleus as QuPath GeoJSON "
        "(OUT.nuclei.geojson) beside it. The default 20000x20000 slide takes minutes on two cores; "
        "--dimensions 4096x3072 under a minute.",
    )
    p.add_argument("out", metavar="OUT.svs", help="the slide file to write; its ground truth goes beside it")
    p.add_argument(
        "--dimensions",
        type=parse_dimensions,
        default=(20000, 20000),
        help="level-0 WxH of the slide in pixels (default 20000x20000)",
    )
    p.add_argument(
        "--slide-mpp", type=slide_mpp, default=0.25, help="the slide's level-0 um/px (default 0.25 = 40x)"
    )
    add_deprecated_alias(p, "--size", "--dimensions", dest="dimensions", type=parse_dimensions)
    add_deprecated_alias(p, "--mpp", "--slide-mpp", dest="slide_mpp", type=slide_mpp)
    p.add_argument("--seed", type=non_negative_int, default=0, help="content and stain seed (default 0)")
    p.add_argument("--tumor", action="store_true", help="add tumor regions (denser, larger, darker nuclei)")
    p.add_argument(
        "--tile-size", type=tiff_tile_side, default=256, help="side of the file's JPEG tiles (default 256)"
    )
    p.add_argument("--quality", type=jpeg_quality, default=85, help="JPEG quality (default 85)")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    if Path(args.out).exists():  # perhaps a real slide: never replaced
        print(f"error: {args.out} exists; it was left as it is (choose another name, or remove it first)",
              file=sys.stderr)  # fmt: skip
        return 2
    width, height = args.dimensions
    spec = SyntheticSpec(width, height, mpp=args.slide_mpp, seed=args.seed, tumor=args.tumor)
    written = write_slide(
        args.out, spec, tile_size=args.tile_size, quality=args.quality, progress=show_progress(args)
    )
    print(
        f"wrote {written.path} ({width} x {height} px, {len(written.level_dimensions)} levels, mpp {args.slide_mpp})"
    )
    print(f"ground truth: {written.truth}")
    return 0

"""The tiling options, added by one function to every command that tiles (`tile`, `run`), checked as parsed."""

from __future__ import annotations

import argparse
from typing import Any

from slidestream.commands._common import (
    fraction,
    magnification,
    non_negative_int,
    positive_int,
    slide_mpp,
    target_mpp,
)

# As tiling.TilingConfig has them (a test checks); spelled out so that building the parser does not import tiling.
ROI_MODES = ("restrict", "replace")
CODEC_CHOICES = ("auto", "jpeg", "lz4", "zstd", "zstd3", "none")
DEFAULTS = {"mpp": 0.5, "size": 256, "min_tissue": 0.5, "roi_mode": "restrict", "codec": "auto"}

# TilingConfig fields (and `overlap`, turned into a stride) the options set, by argparse destination.
FIELDS = ("mpp", "magnification", "size", "stride", "overlap", "min_tissue", "roi", "roi_mode", "coords_only",
          "codec", "exact", "slide_mpp")  # fmt: skip


def add_tiling_options(p: argparse.ArgumentParser, from_config: bool = False) -> None:
    """--mpp / --magnification, --size, --stride / --overlap, --min-tissue, --roi, --roi-mode, --coords-only,
    --codec, --exact and --slide-mpp.

    With `from_config` (`run`) no option has a parser default: an option not given leaves the config file's
    [tiling] value, else TilingConfig's default, which the help states.
    """
    group = p.add_argument_group("tiling")

    def default(name: str):
        return None if from_config else DEFAULTS[name]

    def said(name: str, text: str) -> str:
        where = f"[tiling] {name} of --config, else " if from_config else ""
        return f"{text} (default: {where}{DEFAULTS[name]})"

    resolution = group.add_mutually_exclusive_group()
    resolution.add_argument("--mpp", type=target_mpp, default=default("mpp"),
                            help=said("mpp", "target resolution of the tiles in microns per pixel; 0.5 ~ 20x"))  # fmt: skip
    resolution.add_argument(
        "--magnification", type=magnification, metavar="X",
        help="target objective magnification instead of --mpp (20 for 20x): the slide's mpp x its objective "
        "power / X, or the usual convention 10 um / X (20x ~ 0.5 um/px) when the slide does not record its "
        "objective power",
    )  # fmt: skip
    group.add_argument("--size", type=positive_int, default=default("size"),
                       help=said("size", "tile side in pixels at the target resolution"))  # fmt: skip
    step = group.add_mutually_exclusive_group()
    step.add_argument("--stride", type=positive_int, help="step between tiles in pixels (default: the tile size, no "
                      "overlap)")  # fmt: skip
    step.add_argument("--overlap", type=non_negative_int, metavar="N",
                      help="pixels shared by neighbouring tiles: the same as --stride SIZE-N")  # fmt: skip
    group.add_argument("--min-tissue", type=fraction, default=default("min_tissue"),
                       help=said("min_tissue", "minimum tissue fraction of a kept tile, 0 to 1"))  # fmt: skip
    group.add_argument("--roi", help="ROI: a GeoJSON file (QuPath annotations export, a Feature, FeatureCollection "
                       "or geometry in level-0 pixels), or a folder of <slide_id>.geojson")  # fmt: skip
    group.add_argument("--roi-mode", choices=ROI_MODES, default=default("roi_mode"),
                       help=said("roi_mode", "restrict: tissue inside the ROI; replace: the ROI instead of detected "
                                 "tissue"))  # fmt: skip
    group.add_argument("--coords-only", action="store_true", default=None if from_config else False,
                       help="store coordinates only; read pixels from the slide later")  # fmt: skip
    group.add_argument("--codec", choices=CODEC_CHOICES, default=default("codec"),
                       help=said("codec", "patch codec; auto: the slide's own JPEG tiles when aligned, else lz4; zstd: "
                                           "blosc zstd level 1; zstd3: plain zstd level 3; none: uncompressed"))  # fmt: skip
    group.add_argument("--exact", action="store_true", default=None if from_config else False,
                       help="resampled tiles equal to read_region + resize (default: JPEG DCT scaling, faster, an "
                       "area average)")  # fmt: skip
    group.add_argument("--slide-mpp", type=slide_mpp, metavar="MPP",
                       help="the slides' own um/px, for files whose metadata lacks it")  # fmt: skip


def tiling_values(args: argparse.Namespace) -> dict[str, Any]:
    """The tiling options as parsed (None: not given), by TilingConfig field name plus `overlap`."""
    return {name: getattr(args, name, None) for name in FIELDS}

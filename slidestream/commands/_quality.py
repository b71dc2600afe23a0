"""`--qc` and `--min-fragment-um2`: the tile quality options `tile` and `run` share."""

from __future__ import annotations

import argparse

from slidestream.commands._common import non_negative_float

# As tiling.config.QC_CHECKS has them (a test checks); spelled out so that building the parser does not import
# tiling.
QC_CHECKS = ("blur", "pen")


def parse_checks(text: str) -> tuple[str, ...]:
    """'blur,pen' -> ("blur", "pen"); an argparse type (an unknown check is a usage error naming the known)."""
    checks = tuple(c.strip() for c in text.split(",") if c.strip())
    unknown = [c for c in checks if c not in QC_CHECKS]
    if unknown or not checks:
        raise argparse.ArgumentTypeError(
            f"--qc takes checks among {', '.join(QC_CHECKS)} separated by commas, got {text!r}"
        )
    return checks


def add_quality_options(parser) -> None:
    parser.add_argument(
        "--qc",
        type=parse_checks,
        metavar="CHECKS",
        help="drop tiles flagged by these checks: blur (variance of the Laplacian), pen (blue, green, black "
        "ink); e.g. --qc blur,pen. The kept tiles' measures go into the store (qc/<check>), the counts dropped "
        "are reported",
    )
    parser.add_argument(
        "--min-fragment-um2",
        type=non_negative_float,
        metavar="UM2",
        help="drop tissue pieces smaller than this, in um^2 (default: 3 tiles' area); tissue detection keeps "
        "pieces down to it (its own floor, 20000 um^2, applies only when this is larger)",
    )


def quality_options(args) -> dict:
    """The TilingConfig fields set on the command line (unset ones are left out: defaults or a config file)."""
    options = {"qc": args.qc, "min_fragment_um2": args.min_fragment_um2}
    return {k: v for k, v in options.items() if v is not None}

"""Argument helpers shared by subcommands."""

from __future__ import annotations

import sys


def parse_size(text: str) -> tuple[int, int]:
    """'20000x15000' or '20000' -> (w, h)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise ValueError(f"size must look like 20000x15000, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise ValueError(f"size must look like 20000x15000, got {text!r}")
    return values[0], values[1]


def show_progress(args) -> bool:
    """Progress bars unless --quiet or stderr is not a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def add_slides_and_out(parser) -> None:
    """SLIDE... (files, or folders searched for slide files) and -o/--out, as `tile` and `run` take them."""
    parser.add_argument(
        "slides", nargs="+", metavar="SLIDE", help="slide files, or folders to search for them"
    )
    parser.add_argument("-o", "--out", required=True, help="output folder")


def add_quiet(parser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (also off when not a TTY)"
    )

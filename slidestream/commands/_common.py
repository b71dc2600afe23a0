"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import math
import sys
import tomllib
import warnings
from pathlib import Path


def parse_dimensions(text: str) -> tuple[int, int]:
    """'20000x15000' or '20000' -> (w, h); an argparse type (a bad value is a usage error naming it)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"dimensions must look like 20000x15000, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"dimensions must look like 20000x15000, got {text!r}")
    return values[0], values[1]


def show_progress(args) -> bool:
    """Progress bars unless --quiet or stderr is not a terminal."""
    return not getattr(args, "quiet", False) and sys.stderr.isatty()


def add_slides_and_out(parser) -> None:
    """SLIDE... (files, or folders searched for slide files) and -o/--out, as `tile` and `run` take them."""
    parser.add_argument(
        "slides", nargs="+", metavar="SLIDE", help="slide files, or folders to search for them"
    )
    parser.add_argument("-o", "--out", required=True, type=output_folder, help="output folder")


def add_quiet(parser) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bars (also off when not a TTY)"
    )


class _DeprecatedAlias(argparse.Action):
    """An old option name: stores into the new option's destination and warns (stderr and DeprecationWarning)."""

    def __init__(self, option_strings, dest, new: str, **kwargs):
        self.new = new
        super().__init__(option_strings, dest, **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        message = f"{option_string} is deprecated and will be removed; use {self.new}"
        print(f"warning: {message}", file=sys.stderr)
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        setattr(namespace, self.dest, values)


def add_scheduler_options(parser, timeout_default: str = "20") -> None:
    """--scheduler-address and --scheduler-timeout, the same on every command that can use a dask cluster."""
    parser.add_argument("--scheduler-address", metavar="ADDRESS",
                        help="run on an existing dask.distributed cluster (tcp://HOST:PORT) instead of locally")  # fmt: skip
    parser.add_argument("--scheduler-timeout", type=positive_float, metavar="SECONDS",
                        help=f"how long to wait for --scheduler-address to answer (default: {timeout_default})")  # fmt: skip


def add_deprecated_alias(parser, old: str, new: str, dest: str, type=None) -> None:  # noqa: A002 (argparse's name)
    """Accept `old` as a hidden alias of the option `new`, whose destination is `dest`."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, type=type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # fmt: skip


# --- Checked argument types: a bad value is a usage error (exit status 2) naming the option, before any slide
# is opened. argparse adds "argument --mpp: " in front of each message.


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _checked(kind: type, ok, must: str, name: str):
    """An argparse type reading a `kind` that `ok(value)` accepts; otherwise "must be `must`, got ..."."""

    def check(text: str):
        value = _number(text, kind)
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {must}, got {text!r}")
        return value

    check.__name__ = check.__qualname__ = name  # argparse names a type by its __name__
    check.__doc__ = f"An argparse type: {must}."
    return check


positive_int = _checked(int, lambda v: v > 0, "a positive integer", "positive_int")
non_negative_int = _checked(int, lambda v: v >= 0, "0 or more", "non_negative_int")
positive_float = _checked(float, lambda v: v > 0, "a positive number", "positive_float")
non_negative_float = _checked(float, lambda v: v >= 0, "0 or more", "non_negative_float")
fraction = _checked(float, lambda v: 0 <= v <= 1, "a fraction between 0 and 1", "fraction")
open_fraction = _checked(float, lambda v: 0 < v < 1, "a fraction strictly between 0 and 1", "open_fraction")
magnification = _checked(float, lambda v: 0.5 <= v <= 200, "an objective magnification such as 20 or 40",
                         "magnification")  # fmt: skip
tiff_tile_side = _checked(int, lambda v: v >= 16 and v % 16 == 0, "a multiple of 16 of at least 16 (the TIFF rule)",
                          "tiff_tile_side")  # fmt: skip
jpeg_quality = _checked(int, lambda v: 1 <= v <= 100, "a JPEG quality from 1 to 100", "jpeg_quality")


def key_value(text: str) -> tuple[str, object]:
    """An argparse type: KEY=VALUE -> (key, value), the value read as a TOML value (numbers, true / false,
    "strings", [arrays]), as in the config file; anything else is kept as text."""
    key, sep, value = text.partition("=")
    key, value = key.strip(), value.strip()
    if not sep or not key.isidentifier():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE with KEY a Python name, got {text!r}")
    try:
        return key, tomllib.loads(f"value = {value}")["value"]
    except tomllib.TOMLDecodeError:
        return key, value


def target_mpp(text: str) -> float:
    """An argparse type: the tiles' resolution in um/px, refusing magnifications typed as mpp (20)."""
    from tiling.config import check_target_mpp  # at parse time only: building the parser imports no tiling

    value = _number(text, float)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive resolution in microns per pixel, got {text!r}")
    problem = check_target_mpp(value)
    if problem:
        raise argparse.ArgumentTypeError(problem)
    return value


def slide_mpp(text: str) -> float:
    """An argparse type: a slide's own um/px (a believable scan resolution)."""
    from wsi.meta import MPP_RANGE  # wsi.meta imports nothing heavy

    value = _number(text, float)
    if not MPP_RANGE[0] <= value <= MPP_RANGE[1]:
        raise argparse.ArgumentTypeError(
            f"must be a scan resolution between {MPP_RANGE[0]:g} and {MPP_RANGE[1]:g} um/px, got {text!r}"
        )
    return value


def output_folder(text: str) -> str:
    """An argparse type: a folder to write into; refuses an existing file (which is never replaced)."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text} exists and is not a folder; it is left as it is (name a folder)"
        )
    for parent in path.absolute().parents:
        if parent.exists():
            if not parent.is_dir():
                raise argparse.ArgumentTypeError(f"{text}: {parent} is a file, not a folder")
            break
    return text

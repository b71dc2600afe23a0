"""Argument helpers shared by subcommands."""

from __future__ import annotations

import argparse
import sys
import warnings


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
    parser.add_argument("-o", "--out", required=True, help="output folder")


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


def add_deprecated_alias(parser, old: str, new: str, dest: str, type=None) -> None:  # noqa: A002 (argparse's name)
    """Accept `old` as a hidden alias of the option `new`, whose destination is `dest`."""
    parser.add_argument(old, dest=dest, action=_DeprecatedAlias, new=new, type=type, default=argparse.SUPPRESS,
                        help=argparse.SUPPRESS)  # fmt: skip

"""`slidestream` command line: each subcommand lives in slidestream/commands and calls a library function."""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import select
import sys

from slidestream import __version__
from slidestream.interrupts import deferring, interrupted_exit

# Subcommand modules, in the order --help lists them. Each has `register(subparsers)` setting `func`.
COMMANDS = (
    "demo",
    "run",
    "verify",
    "info",
    "synth",
    "synth_cohort",
    "tile",
    "features",
    "nuclei",
    "mil",
    "survival",
    "export",
)


def build_parser() -> argparse.ArgumentParser:
    from slidestream.commands._help import finish_help

    parser = argparse.ArgumentParser(
        prog="slidestream",
        description="Whole-slide pathology from slide folders to patch stores, features, survival statistics "
        "and QuPath-ready results. Run `slidestream COMMAND --help` for each command.",
    )
    parser.add_argument("--version", action="version", version=f"slidestream {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        importlib.import_module(f"slidestream.commands.{name}").register(sub)
    finish_help(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:  # from the first import on: one Ctrl-C ends with the hint, never a traceback
        # The commands' modules import numpy, shapely, ...: an interrupt inside a C extension's import would become
        # an ImportError with a traceback, so it waits for the imports (a second or so) instead.
        with deferring():
            parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
        # Libraries (dask) log INFO on their own loggers; the console shows warnings only.
        for handler in logging.getLogger().handlers:
            handler.setLevel(logging.WARNING)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a reader that has gone (`| head`) shows here, not in the flush at exit
        return code
    except KeyboardInterrupt:
        return interrupted_exit()
    except BrokenPipeError:
        if not _stdout_reader_gone():
            raise  # a worker's pipe, a FIFO the command writes: an error, with its traceback
        # `slidestream info slides/ | head`: the reader has gone, which is no error of ours. Python's own advice:
        # point stdout at /dev/null, or the flush at exit fails again, with a traceback.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def _stdout_reader_gone() -> bool:
    """Whether the process's own stdout is a pipe or socket whose reader has gone (False for a replaced
    sys.stdout: pytest's capture, a notebook)."""
    if sys.stdout is not sys.__stdout__ or sys.stdout is None or not hasattr(select, "poll"):
        return False
    try:
        fd = sys.stdout.fileno()
        sys.stdout.flush()
    except BrokenPipeError:
        return True
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        return False
    # An empty buffer writes nothing: ask the pipe itself (POLLERR once its reader is gone).
    poll = select.poll()
    poll.register(fd, 0)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poll.poll(0))

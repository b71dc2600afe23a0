"""Ctrl-C (SIGINT) for the command line: one interrupt ends a command with a hint and exit status 130, wherever
it lands (while modules import, while a cluster starts or closes, while slides are worked on)."""

from __future__ import annotations

import contextlib
import signal
import sys
import threading

__all__ = ["INTERRUPTED", "deferred", "deferring", "interrupted_exit"]

INTERRUPTED = "interrupted; re-run the same command to resume"


@contextlib.contextmanager
def deferred(interrupted: list):
    """Inside, Ctrl-C is noted in `interrupted` instead of raising KeyboardInterrupt, for work that must not be
    cut half-way (imports, a cluster's start and close); the caller raises it afterwards. Only in the main
    thread (the only one Python delivers signals to), and never where SIGINT is ignored (a job started in the
    background of a shell, `nohup`): that stays ignored."""
    if threading.current_thread() is not threading.main_thread() or signal.getsignal(signal.SIGINT) in (
        signal.SIG_IGN,
        None,
    ):
        yield
        return
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def deferring():
    """`deferred` that raises the KeyboardInterrupt itself on the way out when Ctrl-C was pressed inside (an
    exception raised inside goes on instead): `with deferring(): import dask` finishes the import, then stops."""
    interrupted: list = []
    with deferred(interrupted):
        yield
    if interrupted:
        raise KeyboardInterrupt


def interrupted_exit() -> int:
    """After a KeyboardInterrupt was handled: print the hint and return the exit status, 130.

    CPython marks the process as ended by an unhandled Ctrl-C whenever a KeyboardInterrupt leaves code that
    exec() or eval() runs from a string (every namedtuple and dataclass definition, so often one that lands
    during an import), even when the interrupt is caught afterwards; `python -m
    slidestream` then kills itself with SIGINT at exit (status -2) instead of returning ours. Evaluating any
    string clears that mark (CPython's `run_eval_code_obj`; checked on 3.11).
    """
    print(INTERRUPTED, file=sys.stderr)
    eval("None")  # clears CPython's stale "unhandled KeyboardInterrupt" mark (docstring)
    return 130

"""Ctrl-C wherever it lands ends `python -m slidestream` with the hint and exit status 130, never the raw signal
(exit status -2) or a traceback. Where an interrupt lands is made certain here by a `sitecustomize` module that
the test puts first on the path: it interrupts the command line at a chosen point, no timing involved."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

from slidestream.interrupts import INTERRUPTED, deferred

ROOT = Path(__file__).resolve().parents[2]


def _run_with(site: str, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """`python -m slidestream ARGS` (or `python -c CODE`) with `site` as its sitecustomize, and SIGINT handled as
    in a terminal."""
    folder = tmp_path / "site"
    folder.mkdir()
    (folder / "sitecustomize.py").write_text(textwrap.dedent(site))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(folder), str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    command = list(args) if args[0] == "-c" else ["-m", "slidestream", *args]
    return subprocess.run([sys.executable, *command], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip


def _said_interrupted(done: subprocess.CompletedProcess) -> None:
    assert done.returncode == 130, (done.returncode, done.stderr)
    assert done.stderr.strip().splitlines()[-1] == INTERRUPTED, done.stderr
    assert "Traceback" not in done.stderr and "KeyboardInterrupt" not in done.stderr, done.stderr


# A command's module registering itself stands for any import of the command line's modules: they define
# namedtuples and dataclasses, whose code runs through eval() / exec() of a string.
INFO_REGISTERS = """
    import slidestream.commands.info as info

    registered = info.register

    def register(sub):
        {action}
        registered(sub)
        {after}

    info.register = register
"""

# The first import of `module` (before Python finds it) does `action`: a real SIGINT or a KeyboardInterrupt.
INTERRUPT_ON_IMPORT = """
    import os
    import sys

    class InterruptOnce:
        done = False

        def find_spec(self, name, path=None, target=None):
            if name == "{module}" and not self.done:
                self.done = True
                {action}
            return None

    sys.meta_path.insert(0, InterruptOnce())
"""


def test_an_interrupt_caught_after_it_left_an_eval_still_ends_with_130(tmp_path):
    """CPython marks an interrupt that leaves eval()'d code as unhandled (even once caught): without clearing the
    mark, `python -m` ends with SIGINT, as the flaky cluster-start test once did while dask imported."""
    site = INFO_REGISTERS.format(action="eval(\"exec('raise KeyboardInterrupt')\")", after="pass")
    _said_interrupted(_run_with(site, tmp_path, "info", "nothing.svs"))


def test_ctrl_c_while_the_commands_import_waits_for_them(tmp_path):
    """A real SIGINT in the middle of the imports (inside an eval, as in a namedtuple's definition): noted, the
    imports finish (a C extension interrupted while it imports numpy says ImportError, with a traceback), and
    the command never runs."""
    site = INFO_REGISTERS.format(
        action="eval(\"__import__('os').kill(__import__('os').getpid(), 2)\")",
        after="open('registered', 'w').close()",  # the registration went on after the signal
    )
    done = _run_with(site, tmp_path, "info", "nothing.svs")
    _said_interrupted(done)
    assert (tmp_path / "registered").exists()  # the imports finished after the signal
    assert "nothing.svs" not in done.stdout + done.stderr  # info did not run


def test_ctrl_c_while_a_run_imports_dask_waits_for_the_import(tmp_path):
    """The run's own import of dask.distributed (a second or more) finishes under a Ctrl-C, which then ends the
    run before any cluster is started or reached."""
    site = INTERRUPT_ON_IMPORT.format(module="dask.distributed", action="os.kill(os.getpid(), 2)")
    code = """
import sys
from types import SimpleNamespace

from slidestream.pipeline.runner import _client

try:
    with _client(SimpleNamespace(scheduler_address="tcp://127.0.0.1:9", scheduler_timeout=0.1)):
        print("reached the scheduler")
except KeyboardInterrupt:
    print("interrupted", "dask.distributed" in sys.modules)
"""
    done = _run_with(site, tmp_path, "-c", code)
    assert done.stdout.strip() == "interrupted True", (done.stdout, done.stderr)


def test_ctrl_c_while_python_imports_the_command_line(tmp_path):
    """Before main() runs (`python -m slidestream` importing slidestream.cli): the hint, not a traceback."""
    site = INTERRUPT_ON_IMPORT.format(module="slidestream.cli", action="raise KeyboardInterrupt")
    _said_interrupted(_run_with(site, tmp_path, "--help"))


def test_deferred_notes_an_interrupt_and_leaves_an_ignored_one_ignored():
    # As in a terminal first (a test run in the background of a shell starts with SIGINT ignored).
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        noted: list = []
        with deferred(noted):
            os.kill(os.getpid(), signal.SIGINT)
            signal.getsignal(signal.SIGINT)  # a bytecode boundary: the handler has run
        assert noted == [signal.SIGINT]
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a job started in the background of a shell, `nohup`
        with deferred(noted):
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
            os.kill(os.getpid(), signal.SIGINT)
        assert noted == [signal.SIGINT] and signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)

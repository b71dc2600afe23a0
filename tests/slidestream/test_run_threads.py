"""`slidestream run` in threads of one process (the default executor): each slide keeps its own warnings,
a failing slide stops only itself, a stopping run ends running slides at their next batch of tiles."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import warnings
from dataclasses import replace
from pathlib import Path

import pytest

from slidestream.discovery import SlideInput
from slidestream.pipeline import load_config, plan, run_batch
from slidestream.pipeline import runner as runner_module
from tests.conftest import OPENSLIDE_DATA, write_blank_slide
from tiling import PatchStore
from wsi.thread_warnings import record_warnings, warnings_by_thread

ROOT = Path(__file__).resolve().parents[2]


def test_threads_record_only_their_own_warnings_and_leave_the_module_as_it_was():
    filters, shown = list(warnings.filters), warnings.showwarning
    barrier = threading.Barrier(2)
    caught: dict[str, list[str]] = {}

    def slide(name: str) -> None:
        with record_warnings() as mine:
            for i in range(20):
                barrier.wait()  # the two threads warn in turns, both recording all along
                warnings.warn(f"{name} {i % 2}", UserWarning, stacklevel=1)  # repeats: "always" keeps them
        caught[name] = [str(w.message) for w in mine]

    with warnings_by_thread():
        threads = [threading.Thread(target=slide, args=(name,)) for name in ("a", "b")]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        with pytest.warns(UserWarning, match="not recorded by a thread"):  # shown as usual
            warnings.warn("not recorded by a thread", UserWarning, stacklevel=1)
    assert caught == {name: [f"{name} {i % 2}" for i in range(20)] for name in ("a", "b")}
    assert warnings.filters == filters and warnings.showwarning is shown


def test_record_warnings_outside_threads_is_catch_warnings():
    with record_warnings() as caught:
        warnings.warn("once", UserWarning, stacklevel=1)
        warnings.warn("once", UserWarning, stacklevel=1)
    assert [str(w.message) for w in caught] == ["once", "once"]


@pytest.fixture
def mixed_folder(synthetic_slide, tmp_path):
    """Two good slides, a blank one (warns "no tissue found") and a corrupt one."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(synthetic_slide.path, folder / "alpha.svs")
    shutil.copy(synthetic_slide.path, folder / "gamma.svs")
    shutil.copy(OPENSLIDE_DATA / "unreadable.svs", folder / "corrupt.svs")
    write_blank_slide(folder / "blank.tiff", width=512, height=512)
    return folder


def _slides(folder) -> list[SlideInput]:
    return [SlideInput(p.stem, p) for p in sorted(folder.iterdir())]


def test_a_threaded_run_keeps_each_slides_warnings_and_failures_apart(mixed_folder, tmp_path):
    config = load_config(out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=2,
                         **{"tiling.mpp": 1.0, "tiling.size": 64})  # fmt: skip
    assert "in threads" in plan(_slides(mixed_folder), config)[3]
    result = run_batch(_slides(mixed_folder), config)
    by_slide = {r.slide_id: r for r in result.records}
    assert result.failed == ["corrupt"] and "Bogus marker" in by_slide["corrupt"].error
    assert all(by_slide[s].status == "done" for s in ("alpha", "gamma", "blank"))
    assert any("no tissue" in w for w in by_slide["blank"].warnings)
    for other in ("alpha", "gamma", "corrupt"):  # the blank slide's warning is its own
        assert not any("no tissue" in w for w in by_slide[other].warnings), by_slide[other]
    assert {r.worker for r in result.records} == {f"{os.uname().nodename}:{os.getpid()}"}  # this process
    assert by_slide["alpha"].measurements["tiles"] == by_slide["gamma"].measurements["tiles"] > 0


def test_a_stopping_run_ends_running_slides_at_their_next_batch_of_tiles(synthetic_slide, tmp_path):
    """A full disk (or Ctrl-C) stops the pool: a slide already running stops writing; none is left locked."""
    started = threading.Event()
    pools = []
    slides = [SlideInput("alpha", synthetic_slide.path)]
    config = load_config(out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=1,
                         **{"tiling.mpp": 0.25, "tiling.size": 64, "tiling.shard_tiles": 16})  # fmt: skip

    def count(event) -> None:
        started.set()
        pools[0].stopping.set()  # as `cancel` does: the next batch ends the slide

    with runner_module._threads(config) as pool:
        pools.append(pool)
        (future,) = pool.submit(slides, config, count)
        with pytest.raises(runner_module._Stopped):
            future.result(timeout=120)
    assert started.is_set()
    assert not PatchStore.open(tmp_path / "out" / "slides" / "alpha" / "patches.zarr").is_complete
    # The lock was released (else this run would wait for it) and the partial store is redone.
    result = run_batch(slides, replace(config, slide_workers=1))
    assert result.ok and result.records[0].status == "done"


def test_nested_recordings_in_a_thread_each_keep_theirs():
    """An outer and an inner recording, both empty when the inner ends (lists equal by value, not the same)."""
    result = {}

    def slide() -> None:
        with record_warnings() as outer:
            with record_warnings() as inner:
                pass
            warnings.warn("after the inner one", UserWarning, stacklevel=1)
            with record_warnings() as inner2:
                warnings.warn("inside the second inner one", UserWarning, stacklevel=1)
        result.update(
            outer=[str(w.message) for w in outer], inner=inner, inner2=[str(w.message) for w in inner2]
        )

    with warnings_by_thread():
        thread = threading.Thread(target=slide)
        thread.start()
        thread.join()
    assert result == {
        "outer": ["after the inner one"],
        "inner": [],
        "inner2": ["inside the second inner one"],
    }


def test_ctrl_c_in_a_threaded_run_stops_the_slide_and_a_rerun_completes(synthetic_slide, tmp_path):
    """SIGINT to the run's process group while a slide's tiles are being written: exit 130 with the resume hint
    and nothing else; the slide's store is left partial and the same command finishes it. The SIGINT is sent
    (to the whole group, as a terminal's Ctrl-C) right after the first shard is written, from a sitecustomize:
    a poll from here could land after the last shard on a loaded machine (the slide tiles in about a second)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(synthetic_slide.path, folder / "big.svs")
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SIGINT_AFTER_FIRST_SHARD)
    out = tmp_path / "out"
    command = [sys.executable, "-m", "slidestream", "run", str(folder), "-o", str(out), "--mpp", "0.25", "--size",
               "16", "--steps", "tile", "--workers", "1", "--executor", "threads"]  # fmt: skip
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{path}"}
    # A terminal's default (a test run in the background of a shell starts with SIGINT ignored, and its children).
    proc = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
                          start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    err = proc.stderr
    assert proc.returncode == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; re-run the same command to resume", err
    for noise in ("Traceback", "KeyboardInterrupt", "Stopped", "unclosed file", "ResourceWarning", "leaked"):
        assert noise not in err, err
    store = PatchStore.open(out / "slides" / "big" / "patches.zarr")
    assert not store.is_complete and 0 < store.shards_done().sum() < store.n_shards
    done = subprocess.run([*command, "-q"], cwd=ROOT, env={**os.environ, "PYTHONPATH": path}, capture_output=True,
                          text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert PatchStore.open(out / "slides" / "big" / "patches.zarr").is_complete


SIGINT_AFTER_FIRST_SHARD = """
import os
import signal

from tiling.store import PatchStore

_write_shard = PatchStore.write_shard


def write_shard(self, shard, patches):
    _write_shard(self, shard, patches)
    if not getattr(PatchStore, "interrupt_sent", False):
        PatchStore.interrupt_sent = True
        os.killpg(os.getpgrp(), signal.SIGINT)


PatchStore.write_shard = write_shard
"""


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def test_the_executor_is_checked_where_the_config_is_built(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nexecutor = "thread"\n')
    with pytest.raises(
        ValueError, match=r"\[run\] executor = 'thread' is not allowed \(did you mean 'threads'\?\)"
    ):
        load_config(toml)
    toml.write_text('[run]\nexecutor = "processes"\n')
    config = load_config(toml, out=tmp_path / "o", slide_workers=3)
    assert (
        config.executor == "processes" and "local dask cluster, 3 worker process(es)" in plan([], config)[3]
    )
    # Not set: a library caller's run is in threads; `slidestream run` takes `steps.default_executor(steps)` (test_run_forks.py).
    config = load_config(out=tmp_path / "o")
    assert config.executor is None and config.run_executor == "threads"
    assert "this process, 2 slide(s) at a time in threads" in plan([], replace(config, slide_workers=2))[3]


def test_warnings_the_filters_ignored_stay_ignored_outside_recordings():
    from wsi.thread_warnings import _ignored

    filters = [("default", None, DeprecationWarning, re.compile("__main__"), 0),
               ("ignore", None, DeprecationWarning, None, 0), ("ignore", None, ResourceWarning, None, 0),
               ("ignore", re.compile("noisy"), UserWarning, None, 0)]  # fmt: skip
    assert _ignored("old api", DeprecationWarning, filters) and _ignored(
        "unclosed file", ResourceWarning, filters
    )
    assert _ignored("noisy thing", UserWarning, filters) and not _ignored(
        "no tissue found", UserWarning, filters
    )

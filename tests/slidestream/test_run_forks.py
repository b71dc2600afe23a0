"""`slidestream run --executor forks`: slides in worker processes forked from the run's process. Tile counts
come back to it; a worker that dies loses only its slide (the others are done in a fresh pool)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import pytest

from slidestream.discovery import SlideInput
from slidestream.pipeline import load_config, run_batch
from slidestream.pipeline import runner as runner_module
from slidestream.pipeline.manifest import read_manifest
from slidestream.pipeline.steps import STEPS
from tests.conftest import write_blank_slide


def test_forked_workers_tile_the_slides_and_report_their_tiles(cmu_path, tmp_path):
    slides = []
    for name in ("a", "b"):
        shutil.copy(cmu_path, tmp_path / f"{name}.svs")
        slides.append(SlideInput(name, tmp_path / f"{name}.svs"))
    config = load_config(
        out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=2, executor="forks"
    )
    events, records = [], []
    with runner_module._forks(config) as pool:
        futures = pool.submit(slides, config, events.append)
        for future in pool.as_completed(futures):
            records.extend(future.result())
    assert sorted(r.slide_id for r in records) == ["a", "b"] and all(r.status == "done" for r in records)
    assert all(not r.worker.endswith(f":{os.getpid()}") for r in records)
    tiles = sum(r.measurements["tiles"] for r in records)
    assert sum(e for e in events if isinstance(e, int)) == tiles == 76
    assert sorted(e[1] for e in events if isinstance(e, tuple)) == [38, 38]  # ("total", n) once per slide


def test_the_tile_steps_first_use_costs_are_paid_before_forking(tmp_path, monkeypatch):
    """`_forks` runs each step's `preload` in this process before forking, so that the workers share it: the
    tile step's imports the pictures need and its fonts (loaded once per size)."""
    calls = []
    monkeypatch.setattr(STEPS["tile"], "preload", lambda: calls.append("tile"), raising=False)
    config = load_config(
        out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=1, executor="forks"
    )
    with runner_module._forks(config):
        assert calls == ["tile"]
    # What preload promises, in a fresh process (this one has imported them already): the picture modules, none
    # imported by the step's module itself, and the fonts.
    probe = (
        "import sys; from slidestream.pipeline.steps import STEPS; "
        "names = ('tiling.png', 'tiling.thumbnail', 'PIL.ImageDraw'); "
        "print(*(n in sys.modules for n in names)); STEPS['tile'].preload(); "
        "from tiling import thumbnail; print(*(n in sys.modules for n in names)); "
        "print(thumbnail._font.cache_info().currsize)"
    )
    said = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                          env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}).stdout.split("\n")  # fmt: skip
    assert said[:3] == [
        "False False False",
        "True True True",
        "3",
    ]  # fonts: title, caption and legend, scale bar


class _Dies:
    """The tile step, except that slide "bad" ends its worker process at once (a segfault in a codec)."""

    name, uses_torch = "tile", False

    def __init__(self, step):
        self.step = step

    def outputs(self, ctx):
        return self.step.outputs(ctx)

    def run(self, ctx):
        if ctx.slide_id == "bad":
            os._exit(11)
        return self.step.run(ctx)


def test_a_worker_that_dies_loses_its_slide_and_the_others_are_done(tmp_path, monkeypatch):
    slides = [
        SlideInput(name, write_blank_slide(tmp_path / f"{name}.tiff", 512, 512)) for name in ("a", "bad", "c")
    ]
    monkeypatch.setitem(
        STEPS, "tile", _Dies(STEPS["tile"])
    )  # the workers are forked after this: they have it
    config = load_config(
        out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=1, executor="forks"
    )
    result = run_batch(slides, config)
    assert result.failed == ["bad"]
    status = {r.slide_id: (r.status, r.error) for r in result.records}
    assert status["a"][0] == status["c"][0] == "done"
    assert status["bad"][0] == "failed" and status["bad"][1].startswith("worker lost: BrokenProcessPool")


def _make_a_bar() -> str:
    from tqdm.auto import tqdm

    tqdm(total=1, disable=True).close()  # as each slide's tiling does: even a disabled bar takes tqdm's lock
    return "ok"


def test_a_pool_forked_while_a_thread_holds_tqdms_lock_works(tmp_path):
    """A fresh pool after a broken one is forked while the event reader may be updating the tiles bar."""
    import threading

    from tqdm.auto import tqdm

    held, release = threading.Event(), threading.Event()

    def update_the_bar():
        with tqdm.get_lock():
            held.set()
            release.wait(30)

    holder = threading.Thread(target=update_the_bar, daemon=True)
    holder.start()
    held.wait()
    pool = runner_module._ForkPool(1)
    release.set()
    holder.join()
    try:
        assert pool.executor.submit(_make_a_bar).result(timeout=20) == "ok"
    finally:
        for process in list(pool.executor._processes.values()):
            process.kill()  # a hung worker (the old behaviour) would keep the pool's shutdown waiting
        pool.close()


class _Scripted:
    """The tile step, except that `script[slide_id](run, ctx)` runs first in each try of that slide (`run`: 1 for
    the first try, counted in files under `folder`, which outlive the workers)."""

    name, uses_torch = "tile", False

    def __init__(self, step, folder, script):
        self.step, self.folder, self.script = step, folder, script

    def outputs(self, ctx):
        return self.step.outputs(ctx)

    def run(self, ctx):
        tries = self.folder / f"{ctx.slide_id}.tries"
        with open(tries, "a") as f:
            f.write("x")
        if ctx.slide_id in self.script:
            self.script[ctx.slide_id](len(tries.read_text()), ctx)
        return self.step.run(ctx)


def _tries(folder, slide_id) -> int:
    path = folder / f"{slide_id}.tries"
    return len(path.read_text()) if path.exists() else 0


def _wait_for(condition, seconds=60.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, "waited too long"
        time.sleep(0.02)


def test_a_slide_running_beside_one_that_dies_is_redone(tmp_path, monkeypatch):
    """Two workers: "a" is mid-tiling when "bad" ends its worker (the pool breaks): "a" is done again in a fresh
    pool, "bad", which dies there too, is lost."""
    tries = tmp_path / "tries"
    tries.mkdir()

    def a(run, ctx):
        if run == 1:
            (tries / "a-started").touch()
            time.sleep(60)  # ended with its pool, when "bad" dies

    def bad(run, ctx):
        if run == 1:
            _wait_for((tries / "a-started").exists)
        else:  # once "a" is recorded, so that only "bad" is running when the second pool breaks
            _wait_for(
                lambda: any(r["slide_id"] == "a" for r in read_manifest(ctx.config.out / "manifest.jsonl"))
            )
        os._exit(11)

    monkeypatch.setitem(STEPS, "tile", _Scripted(STEPS["tile"], tries, {"a": a, "bad": bad}))
    slides = [
        SlideInput(name, write_blank_slide(tmp_path / f"{name}.tiff", 512, 512)) for name in ("a", "bad")
    ]
    config = load_config(
        out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=2, executor="forks"
    )
    result = run_batch(slides, config)
    status = {r.slide_id: (r.status, r.error) for r in result.records}
    assert status["a"] == ("done", None) and (_tries(tries, "a"), _tries(tries, "bad")) == (2, 2)
    assert status["bad"][0] == "failed" and status["bad"][1].startswith("worker lost: BrokenProcessPool")


def test_a_slide_start_read_late_still_counts_for_the_pool_that_broke(tmp_path, monkeypatch):
    """The reader of the workers' events is slow to read a start: "bad" still gets its strike in the pool it
    died in (and so is lost after two tries), and "a", queued behind it, gets none."""

    def bad(run, ctx):
        os._exit(11)

    tries = tmp_path / "tries"
    tries.mkdir()
    monkeypatch.setitem(STEPS, "tile", _Scripted(STEPS["tile"], tries, {"bad": bad}))
    slides = [
        SlideInput(name, write_blank_slide(tmp_path / f"{name}.tiff", 512, 512)) for name in ("bad", "a")
    ]
    config = load_config(
        out=tmp_path / "out", steps=("tile",), progress=False, slide_workers=1, executor="forks"
    )
    records = []
    with runner_module._forks(config) as pool:
        read = pool.events.get

        def late():
            event = read()
            if isinstance(event, tuple) and event[0] == "start":
                time.sleep(0.5)
            return event

        pool.events.get = late
        futures = pool.submit(slides, config, lambda event: None)
        for future in pool.as_completed(futures):
            item = futures[future]
            try:
                records.extend(future.result())
            except Exception as exc:
                records.append((item.slide_id, pool.lost(exc)))
    assert _tries(tries, "bad") == 2
    assert [r.status for r in records if not isinstance(r, tuple)] == ["done"]
    assert [r[0] for r in records if isinstance(r, tuple)] == ["bad"]


def test_forks_on_a_platform_that_does_not_fork_are_refused_where_the_config_is_built(tmp_path, monkeypatch):
    import multiprocessing

    monkeypatch.setattr(multiprocessing, "get_all_start_methods", lambda: ["spawn"])
    with pytest.raises(ValueError, match=r"^\[run\]: executor 'forks' needs a platform that forks"):
        load_config(out=tmp_path / "out", executor="forks")
    (tmp_path / "run.toml").write_text('[run]\nexecutor = "forks"\n')
    with pytest.raises(ValueError, match=r"run\.toml: \[run\]: executor 'forks'"):
        load_config(tmp_path / "run.toml")
    assert load_config(out=tmp_path / "out", executor="threads").executor == "threads"


@pytest.fixture
def like_a_fresh_process(monkeypatch):
    """Only the threads the test itself starts (from its own thread) are counted by `default_executor`: not those
    left running by earlier tests in this pytest process (idle pools of dask and the tiling), nor those such
    machinery starts from its own threads meanwhile, which the command line's own process does not have."""
    import threading

    from slidestream.pipeline import steps

    started = []
    start = threading.Thread.start

    def recording_start(thread, *args, **kwargs):
        if threading.current_thread() is threading.main_thread():
            started.append(thread)
        return start(thread, *args, **kwargs)

    monkeypatch.setattr(threading.Thread, "start", recording_start)
    counted = steps._threads_of_others
    monkeypatch.setattr(steps, "_threads_of_others", lambda: [t for t in counted() if t in started])


@pytest.mark.usefixtures("like_a_fresh_process")
def test_the_command_line_forks_on_linux_without_other_threads_and_uses_threads_elsewhere(monkeypatch):
    import asyncio
    import sys
    import threading

    from slidestream.pipeline.steps import default_executor

    monkeypatch.setattr(sys, "platform", "linux")
    assert default_executor(("tile",)) == "forks"
    assert (
        default_executor(("tile", "features")) == "threads"
    )  # a CUDA context and a model per worker: not measured
    found = []
    caller = threading.Thread(target=lambda: found.append(default_executor(("tile",))))  # a threaded caller
    caller.start()
    caller.join()
    assert found == ["threads"]

    async def from_an_event_loops_executor():  # a server calling the command line from its worker threads
        return await asyncio.get_running_loop().run_in_executor(None, default_executor, ("tile",))

    assert (
        asyncio.run(from_an_event_loops_executor()) == "threads"
    )  # ("forks" before: asyncio_<n> was zarr's)
    # The caller is on its main thread, but other threads of its own run (a notebook, a GUI, a server): a fork
    # would copy the locks they hold. (The main-thread test alone said "forks" here.)
    release = threading.Event()
    busy = threading.Thread(target=release.wait, name="server")
    busy.start()
    try:
        assert threading.current_thread() is threading.main_thread()
        assert default_executor(("tile",)) == "threads"
    finally:
        release.set()
        busy.join()
    assert default_executor(("tile",)) == "forks"
    monkeypatch.setattr(sys, "platform", "darwin")  # forks there, but not safely: Python spawns
    assert default_executor(("tile",)) == "threads"


@pytest.mark.usefixtures("like_a_fresh_process")
def test_the_run_commands_executor_is_its_flag_else_the_config_files_else_the_default(cmu_path, tmp_path,
                                                                                      capsys, monkeypatch):  # fmt: skip
    import sys

    from slidestream.cli import main

    def scheduler_line(*args: str) -> str:
        assert (
            main(["run", str(cmu_path), "-o", str(tmp_path / "o"), "--workers", "2", "--dry-run", *args]) == 0
        )
        return next(line for line in capsys.readouterr().out.splitlines() if line.startswith("scheduler:"))

    monkeypatch.setattr(sys, "platform", "linux")
    forks, threads = (
        "scheduler: 2 worker process(es) forked from this one",
        "scheduler: this process, 2 slide(s) at a time in threads",
    )
    assert scheduler_line("--steps", "tile") == forks
    assert scheduler_line() == threads  # tile and features: features use torch
    assert scheduler_line("--steps", "tile", "--executor", "threads") == threads
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nexecutor = "threads"\nsteps = ["tile"]\n')
    assert scheduler_line("--config", str(toml)) == threads
    assert scheduler_line("--config", str(toml), "--executor", "processes").endswith("2 worker process(es)")
    # The dashboard is the local dask cluster's: its processes run the slides, and the plan says so (it said
    # "forked from this one" before).
    assert (
        scheduler_line("--steps", "tile", "--dashboard")
        == "scheduler: local dask cluster, 2 worker process(es)"
    )
    monkeypatch.setattr(sys, "platform", "darwin")
    assert scheduler_line("--steps", "tile") == threads

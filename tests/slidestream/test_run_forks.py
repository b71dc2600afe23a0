"""`slidestream run --executor forks`: slides in worker processes forked from the run's process. Tile counts
come back to it; a worker that dies loses only its slide (the others are done in a fresh pool)."""

from __future__ import annotations

import os
import shutil

from slidestream.discovery import SlideInput
from slidestream.pipeline import load_config, run_batch
from slidestream.pipeline import runner as runner_module
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

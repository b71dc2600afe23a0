"""`run_batch`: every slide through every step, in parallel (threads of this process, or dask), isolated,
resumable, recorded.

Before any work starts, each slide's outputs are checked on disk (`slide_states`): finished slides are recorded as
skipped without starting a cluster, results made with other options are refused unless overwriting was asked,
and damaged stores are repaired. Each slide is worked on under its lock (`SlideLock`), so runs sharing an output
folder wait for each other's slides instead of writing them twice. A full disk ends the run cleanly.
"""

from __future__ import annotations

import contextlib
import functools
import gc
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from slidestream.discovery import SkippedInput, SlideInput
from slidestream.interrupts import deferring
from slidestream.pipeline.config import RunConfig
from slidestream.pipeline.lock import SlideLock
from slidestream.pipeline.manifest import (
    SUMMARY_COLUMNS,
    DiskFull,
    ManifestWriter,
    StepRecord,
    disk_full,
    read_manifest,
    slide_warnings,
    versions,
    write_summary,
)
from slidestream.pipeline.report import slide_lines
from slidestream.pipeline.state import StepState, slide_states
from slidestream.pipeline.steps import STEPS, SlideContext, uses_torch

__all__ = ["BatchResult", "plan", "process_slide", "run_batch"]

log = logging.getLogger("slidestream.run")


@dataclass(frozen=True)
class BatchResult:
    records: list[StepRecord]
    failed: list[str]  # slide ids
    out: Path
    others: tuple[str, ...] = ()  # slide folders in OUT/slides of slides not in this run's input (kept)
    disk_full: str | None = None  # "disk full at PATH (N bytes free)" when the run ended for lack of space
    not_started: tuple[str, ...] = ()  # slides left undone when the run ended early (disk full)
    started_cluster: bool = True
    skipped: tuple[SkippedInput, ...] = ()  # input files that are not slides, with why (also in the manifest)
    seconds: float = 0.0  # elapsed, from the start of run_batch to the summary written

    @property
    def ok(self) -> bool:
        return not self.failed and self.disk_full is None


def _check_steps(config: RunConfig) -> None:
    unknown = [s for s in config.steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; available: {list(STEPS)}")


def process_slide(item: SlideInput, config: RunConfig, on_tiles: Callable[[int], None] | None = None,
                  on_total: Callable[[int], None] | None = None) -> list[StepRecord]:  # fmt: skip
    """Run the configured steps on one slide; a failing step is recorded and later steps are not run.

    `on_tiles(n)` / `on_total(n)` report tiles written / to write (progress); inside a dask worker, without
    them, they go to the client as events."""
    if uses_torch(config.steps):
        import torch  # only then: importing it costs seconds and hundreds of MB per worker

        # One worker's share of the machine: without this each worker's torch would use every core.
        torch.set_num_threads(max(1, config.threads_per_worker))
    dask_worker = _dask_worker()
    if dask_worker is not None and on_tiles is None and on_total is None:
        on_tiles, on_total = _tile_reporters(dask_worker)
    folder = config.out / "slides" / item.slide_id
    worker = f"{socket.gethostname()}:{os.getpid()}"
    # Another run working on this slide: wait for it; then the steps it finished are skipped.
    lock = SlideLock(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.__enter__()
    except OSError as exc:
        error = str(disk_full(exc, folder) or f"{folder}: cannot make the slide's folder or its lock ({exc})")
        return [StepRecord(item.slide_id, str(item.path), config.steps[0], "failed", error=error, finished=_now(),
                           worker=worker)]  # fmt: skip
    try:
        notes = []
        if lock.waited_for:
            notes.append(
                f"waited {lock.waited:.1f} s for another run working on this slide ({lock.waited_for})"
            )
        if lock.took_over:
            notes.append(f"took over a stale lock left by a process that died ({lock.took_over})")
        records = _run_steps(item, config, folder, worker, on_tiles, on_total)
    finally:
        lock.__exit__(None, None, None)
    if notes and records:
        records[0] = replace(records[0], warnings=(*notes, *records[0].warnings))
    return records


def _run_steps(item: SlideInput, config: RunConfig, folder: Path, worker: str, on_tiles=None,
               on_total=None) -> list[StepRecord]:  # fmt: skip
    ctx = SlideContext(item.slide_id, Path(item.path), folder, config, on_tiles=on_tiles, on_total=on_total)
    records = []
    failed = False
    for name in [s for s in STEPS if s in config.steps]:
        if failed:
            records.append(StepRecord(item.slide_id, str(item.path), name, "not-run", error="an earlier step failed",
                                      finished=_now(), worker=worker))  # fmt: skip
            continue
        start = time.perf_counter()
        try:
            outcome = STEPS[name].run(ctx)
        except Exception as exc:  # one bad slide never stops a batch: record why and go on
            failed = True
            log.debug("%s %s failed:\n%s", item.slide_id, name, traceback.format_exc())
            full = disk_full(exc, folder)
            error = str(full) if full else f"{type(exc).__name__}: {exc}"
            records.append(StepRecord(item.slide_id, str(item.path), name, "failed", time.perf_counter() - start,
                                      error=error, finished=_now(), worker=worker))  # fmt: skip
            continue
        rss_mb = peak_rss_mb()
        records.append(StepRecord(item.slide_id, str(item.path), name, outcome.status, time.perf_counter() - start,
                                  measurements={**outcome.measurements, "worker_peak_rss_mb": round(rss_mb)},
                                  warnings=outcome.warnings, finished=_now(), worker=worker))  # fmt: skip
    return records


TILES_TOPIC = "slidestream-tiles"


def _thread_tqdm_lock() -> None:
    """Give tqdm a fresh lock of this process's threads (its bars: `tqdm.auto`'s class and the plain one share
    it). tqdm's default, a multiprocessing semaphore, would be left behind by a dask worker ended by Ctrl-C
    (and multiprocessing would warn about it on the console); a forked worker must not keep the parent's lock,
    which a thread of the parent that does not exist in the fork may have been holding when it was forked."""
    from tqdm import std

    lock = threading.RLock()
    for cls in {std.tqdm, tqdm}:
        cls.set_lock(lock)


_thread_tqdm_lock_once = functools.cache(_thread_tqdm_lock)


def _dask_worker():
    """The dask worker running this task, or None (not in a dask worker). In a worker, once per process: tqdm's
    lock becomes a thread lock (`_thread_tqdm_lock`)."""
    if "distributed" not in sys.modules:  # not a dask worker; and importing it (a second) is not needed here
        return None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    _thread_tqdm_lock_once()
    return worker


def _tile_reporters(worker):
    """Report written tiles, and the tiles a slide will write, from dask `worker` to the client (events `n` and
    `("total", n)` on one topic)."""
    return (lambda n: worker.log_event(TILES_TOPIC, n)), (
        lambda n: worker.log_event(TILES_TOPIC, ("total", n))
    )


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss it does not carry a parent's peak over exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _done(records: list[dict]) -> set[tuple[str, str]]:
    """(slide id, step) of the steps done or skipped in `records` (a manifest's, `read_manifest`)."""
    return {(r["slide_id"], r["step"]) for r in records if r["status"] in ("done", "skipped")}


def _resolution(tiling) -> str:
    if tiling.magnification is not None:
        return f"{tiling.magnification:g}x (the mpp from each slide's objective power)"
    return f"{tiling.mpp} um/px"


def _tiling_description(tiling) -> str:
    """The run's tiling options as --dry-run shows them: size, resolution and tissue, then each option given."""
    said = [f"{tiling.size} px at {_resolution(tiling)}"]
    if tiling.stride is not None and tiling.stride != tiling.size:
        shared = tiling.size - tiling.stride
        said.append(f"stride {tiling.stride} ({shared} px overlap)" if shared > 0 else
                    f"stride {tiling.stride} ({-shared} px gap)")  # fmt: skip
    said.append(f"min tissue {tiling.min_tissue}")
    if tiling.roi is not None:
        said.append(
            f"ROI {tiling.roi} ({'instead of' if tiling.roi_mode == 'replace' else 'restricting'} the tissue)"
        )
    said += [f"QC {', '.join(tiling.qc)}"] if tiling.qc else []
    said += [f"slide mpp {tiling.slide_mpp} where the file has none"] if tiling.slide_mpp is not None else []
    said += ["coordinates only"] if tiling.coords_only else [f"codec {tiling.codec}"]
    said += ["exact resampling"] if tiling.exact else []
    return ", ".join(said)


def plan(slides: list[SlideInput], config: RunConfig) -> list[str]:
    """Human-readable lines saying what a run would do (for --dry-run): the same checks `run_batch` makes."""
    _check_steps(config)
    lines = [f"{len(slides)} slide(s) -> {config.out}/slides/<slide_id>/; steps: {', '.join(config.steps)}",
             f"tiling: {_tiling_description(config.tiling)}",
             f"features: {config.features.encoder} on {config.features.device}",
             f"scheduler: {config.scheduler_address or _local_description(config)}"]  # fmt: skip
    done = _done(read_manifest(config.out / "manifest.jsonl"))
    for item in slides:
        states = slide_states(item, config, done)
        state = ", ".join(f"{s}: {states[s].describe(config.overwrite)}" for s in config.steps)
        lines.append(f"  {item.slide_id:30s} {item.path}  [{state}]")
    others = _others(config.out, slides)
    if others:
        lines.append(f"outputs in {config.out}/slides of {len(others)} slide(s) not in this input, kept: "
                     f"{', '.join(others[:20])}")  # fmt: skip
    return lines


def _local_description(config: RunConfig) -> str:
    n = config.slide_workers or os.cpu_count()
    if config.run_executor == "processes":
        return f"local dask cluster, {n} worker process(es)"
    if config.run_executor == "forks":
        return f"{n} worker process(es) forked from this one"
    return f"this process, {n} slide(s) at a time in threads"


def _others(out: Path, slides: list[SlideInput]) -> list[str]:
    ids = {s.slide_id for s in slides}
    folder = out / "slides"
    return (
        sorted(p.name for p in folder.iterdir() if p.is_dir() and p.name not in ids)
        if folder.is_dir()
        else []
    )


def _check_out(out: Path) -> None:
    """Refuse an output folder whose run files are not ours (a user's summary.csv is never overwritten)."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder; choose another output folder (-o)")
    for path in (out / "slides",):
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} exists and is not a folder; choose another output folder (-o)")
    summary = out / "summary.csv"
    if summary.exists():
        with open(summary, errors="replace") as f:
            header = f.readline().strip()
        if header.split(",")[:3] != SUMMARY_COLUMNS[:3]:  # ours, also when later versions add columns
            raise ValueError(f"{summary} exists and was not written by slidestream; it is left as it is "
                             "(move it, or choose another output folder with -o)")  # fmt: skip


def _refuse_other_options(states: dict[str, dict[str, StepState]]) -> None:
    changed = {
        sid: s["tile"].changes
        for sid, s in states.items()
        if "tile" in s and s["tile"].status == "other options"
    }
    if changed:
        listed = "; ".join(f"{sid} ({', '.join(c)})" for sid, c in sorted(changed.items())[:10])
        raise ValueError(f"{len(changed)} slide(s) have results made with other options: {listed}; not replacing "
                         "them: pass --overwrite to replace them, or write to another output folder (-o)")  # fmt: skip


def _skipped_records(
    item: SlideInput, config: RunConfig, previous: dict[tuple[str, str], dict]
) -> list[StepRecord]:
    """Records for a slide found finished before any work: skipped, with the measurements recorded earlier."""
    records = []
    for step in config.steps:
        earlier = previous.get((item.slide_id, step), {})
        records.append(StepRecord(item.slide_id, str(item.path), step, "skipped", measurements=earlier.get("measurements", {}),
                                  warnings=tuple(slide_warnings(earlier.get("warnings", ()))), finished=_now(),
                                  worker="(checked before starting)"))  # fmt: skip
    return records


def _workers_ignore_interrupts() -> None:
    """Make the local cluster's worker processes ignore Ctrl-C; this process alone ends the run, with the hint.

    A terminal sends SIGINT to every process of its foreground group: each dask worker would print its own
    KeyboardInterrupt traceback (also while it imports, before any code of ours runs there). Workers are forked
    from multiprocessing's fork server, started here with SIGINT ignored: Python then leaves it ignored, and
    the fork server gives its children the disposition it started with. Only the fork server's start (a few
    milliseconds) runs with the interrupt ignored in this process.
    """
    from distributed.utils import get_mp_context

    get_mp_context()  # sets the fork server's preloaded modules (distributed, numpy, ...) before it starts
    if threading.current_thread() is not threading.main_thread():
        return
    from multiprocessing import forkserver

    # A worker ended by Ctrl-C leaves a semaphore (torch's) to multiprocessing's resource tracker, which removes
    # it and warns on the console; the tracker starts with this process's -W options.
    if "ignore:resource_tracker:UserWarning" not in sys.warnoptions:
        sys.warnoptions.append("ignore:resource_tracker:UserWarning")
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)


# The local cluster's workers are forked from multiprocessing's fork server (see _workers_ignore_interrupts).
FORKSERVER = {"distributed.worker.multiprocessing-method": "forkserver"}


@contextlib.contextmanager
def _client(config: RunConfig):
    # dask.distributed takes a second or more to import: a Ctrl-C then may land in one of importlib's weakref
    # callbacks, where Python prints it as an ignored exception and the run goes on. It waits for the import.
    with deferring():
        import dask
        from dask.distributed import Client, LocalCluster

    if config.scheduler_address:
        try:
            client = Client(config.scheduler_address, timeout=f"{config.scheduler_timeout}s")
        except (OSError, TimeoutError) as exc:  # unreachable, refused, or no answer in time
            raise ValueError(
                f"could not reach the dask scheduler at {config.scheduler_address} within "
                f"{config.scheduler_timeout:g} s ({type(exc).__name__}: {exc}); check the address, or wait longer "
                "with --scheduler-timeout"
            ) from None
        try:
            yield client
        finally:
            client.close()
        return
    workers = config.slide_workers or os.cpu_count() or 1
    # Without a dashboard the scheduler still serves HTTP, by default on 8787 (a warning when it is taken): any
    # free port, silently. With one, the usual port (or the next free one) and its address on the console.
    http = (
        {"dashboard": True, "dashboard_address": ":8787"}
        if config.dashboard
        else {"dashboard": False, "dashboard_address": ":0"}
    )
    # Closing, a nanny waits a few seconds for its worker to exit, and the scheduler drops the finished results
    # the workers held: warnings about the cluster's own business, not for the console (errors still are).
    quiet = {name: logging.getLogger(name) for name in ("distributed.nanny", "distributed.scheduler")}
    levels = {name: logger.level for name, logger in quiet.items()}
    for logger in quiet.values():
        logger.setLevel(logging.ERROR)
    # Ctrl-C while the cluster starts or closes waits for that to finish: a half-made cluster cannot be closed
    # (dask's exit handler then prints a traceback); an interrupt during the work ends it at once.
    cluster = client = None
    try:
        try:
            with (
                deferring(),  # an interrupt raised here, once the cluster is up, closes it in the finally
                warnings.catch_warnings(),
                dask.config.set({**FORKSERVER, **LOCAL_WORKER_CONFIG}),
            ):
                _workers_ignore_interrupts()
                warnings.filterwarnings("ignore", "Port 8787 is already in use", UserWarning)
                cluster = LocalCluster(n_workers=workers, threads_per_worker=config.threads_per_worker,
                                       processes=True, dashboard_address=None, scheduler_kwargs=http,
                                       silence_logs=logging.ERROR)  # fmt: skip
                client = Client(cluster)
            if config.dashboard:
                tqdm.write(f"dask dashboard: {client.dashboard_link}")
            yield client
        finally:
            with deferring():
                if client is not None:
                    client.close()
                if cluster is not None:
                    cluster.close()
    finally:
        for name, logger in quiet.items():
            logger.setLevel(levels[name])


# Workers of the local cluster, set up for tile work (benchmarks/RESULTS.md, issue 13: the two together cost
# about 0.3 s of CPU per small slide, 60% more than tiling it): no statistical profiler (it samples every
# thread every 10 ms, for a dashboard we do not start), and glibc's own malloc trimming instead of dask's
# MALLOC_TRIM_THRESHOLD_=65536 (which also fixes the mmap threshold, so that every large buffer a slide
# reader allocates is mapped, zeroed by page faults and unmapped again).
LOCAL_WORKER_CONFIG = {
    "distributed.worker.profile.enabled": False,
    "distributed.nanny.pre-spawn-environ": {
        "OMP_NUM_THREADS": 1,
        "MKL_NUM_THREADS": 1,
        "OPENBLAS_NUM_THREADS": 1,
    },
}


def run_batch(
    slides: list[SlideInput],
    config: RunConfig,
    *,
    skipped: tuple[SkippedInput, ...] | list[SkippedInput] = (),
) -> BatchResult:
    """Process `slides` in threads of this process, processes forked from it or a local dask cluster
    (`config.run_executor`: threads unless `config.executor` says otherwise), or on the dask cluster at
    `config.scheduler_address`, appending to OUT/manifest.jsonl and rewriting OUT/summary.csv (this run's
    slides). Returns the records and the ids of slides with a failed step.

    `skipped` (from `find_slides`) are recorded in the manifest too, one line each: step "input", status "ignored",
    the reason in `error`, no slide id.

    Raises ValueError, before any work, for an output folder holding files that are not ours, or results made
    with other options (without `config.overwrite`). A full disk ends the run with `BatchResult.disk_full` set.
    """
    _check_steps(config)
    start = time.perf_counter()
    slides = [
        replace(item, path=Path(os.path.abspath(item.path))) for item in slides
    ]  # absolute in every record
    out = Path(config.out).resolve()
    _check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    config = replace(config, out=out)
    manifest = out / "manifest.jsonl"
    earlier = read_manifest(manifest)  # read once for what is done and what was measured
    done = _done(earlier)
    states = {item.slide_id: slide_states(item, config, done) for item in slides}
    if not config.overwrite:
        _refuse_other_options(states)
    finished = (
        []
        if config.overwrite
        else [item for item in slides if all(s.done for s in states[item.slide_id].values())]
    )
    todo = [item for item in slides if item not in finished]
    previous: dict[tuple[str, str], dict] = {}
    for record in earlier:
        if record["status"] in ("done", "skipped") and record.get("measurements"):
            previous[(record["slide_id"], record["step"])] = record
    handler = _BestEffortFileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # details go to run.log; the console gets the progress bar and the final report
    log.info("run: %d slide(s), steps %s, config %s", len(slides), list(config.steps), config.to_dict())
    others = _others(out, slides)
    if others:  # kept, never deleted; not in this run's summary
        log.info("slide folders of slides not in this input (kept): %s", ", ".join(others))
    stamp = versions()
    records: list[StepRecord] = []
    full: DiskFull | None = None
    not_started: list[str] = []
    try:
        with ManifestWriter(manifest) as sink:
            for item in skipped:
                record = StepRecord("", str(item.path), "input", "ignored", error=item.reason, finished=_now(),
                                    worker="(not a slide)")  # fmt: skip
                sink.append(record.line(stamp))
                log.info("ignored %s: %s", item.path, item.reason)
            for item in finished:  # nothing left to do: no cluster needed for these
                slide_records = _skipped_records(item, config, previous)
                print("\n".join(slide_lines(item.slide_id, slide_records)), flush=True)
                for record in slide_records:
                    sink.append(record.line(stamp))
                records.extend(slide_records)
            if todo:
                full, not_started = _run_on_cluster(todo, config, sink, stamp, records)
    except DiskFull as exc:  # the manifest itself could not grow
        full = exc
        not_started = sorted({item.slide_id for item in todo} - {r.slide_id for r in records})
    finally:
        log.removeHandler(handler)
        log.propagate = True
        handler.close()
    try:
        write_summary(out / "summary.csv", read_manifest(manifest), {item.slide_id for item in slides})
    except DiskFull as exc:
        full = full or exc
    failed = sorted({r.slide_id for r in records if r.status == "failed"})
    return BatchResult(records, failed, out, tuple(others), str(full) if full else None,
                       tuple(not_started), bool(todo), tuple(skipped), time.perf_counter() - start)  # fmt: skip


class _BestEffortFileHandler(logging.FileHandler):
    """run.log: details only; a write that fails (a full disk) must not print a traceback or stop the run."""

    def handleError(self, record) -> None:
        pass


def _run_on_cluster(slides: list[SlideInput], config: RunConfig, sink: ManifestWriter, stamp: dict,
                    records: list[StepRecord]) -> tuple[DiskFull | None, list[str]]:  # fmt: skip
    """Process `slides` in parallel (`_pool`), appending each finished slide's records; stops at a full disk."""
    full: DiskFull | None = None
    pending = {item.slide_id for item in slides}
    with _pool(config) as pool:
        bar = tqdm(total=len(slides), desc="slides", unit="slide", disable=not config.progress, position=0)
        tiles_bar = tqdm(total=0, desc="tiles", unit="tile", disable=not config.progress, position=1)
        futures = pool.submit(slides, config, lambda event: _count_tiles(tiles_bar, event))
        for future in pool.as_completed(futures):
            item = futures[future]
            try:
                slide_records = future.result()
            except Exception as exc:  # the worker itself died (memory, segfault in a codec)
                slide_records = [StepRecord(item.slide_id, str(item.path), config.steps[0], "failed",
                                            error=pool.lost(exc), finished=_now())]  # fmt: skip
            pending.discard(item.slide_id)
            # Above the bars, and kept on screen when they are gone.
            tqdm.write("\n".join(slide_lines(item.slide_id, slide_records)))
            for record in slide_records:
                sink.append(record.line(stamp))  # DiskFull here ends the run; earlier records are safe
                level = logging.WARNING if record.status == "failed" else logging.INFO
                log.log(level, "%s %s %s %.1fs %s", record.slide_id, record.step, record.status, record.seconds,
                        record.error or "")  # fmt: skip
                for warning in record.warnings:
                    log.warning("%s %s: %s", record.slide_id, record.step, warning)
            records.extend(slide_records)
            bar.update(1)
            disk = next(
                (r.error for r in slide_records if r.error and r.error.startswith("disk full at ")), None
            )
            if disk:  # every other slide would fail the same way: stop, keep what is finished
                full = DiskFull(28, disk)
                pool.cancel([f for f in futures if not f.done()])
                break
        tiles_bar.close()
        bar.close()
    return full, sorted(pending)


@contextlib.contextmanager
def _pool(config: RunConfig):
    """Where the slides run: the dask cluster at `config.scheduler_address`, else this process's threads
    (`config.run_executor` "threads"), processes forked from this one ("forks") or a local dask cluster of worker
    processes ("processes", also with a dashboard)."""
    if config.scheduler_address or config.run_executor == "processes":
        with _client(config) as client:
            pool = _DaskPool(client)
            yield pool
            pool.close()  # not after Ctrl-C: the client is closed then, without another round trip
        return
    if config.run_executor == "forks":
        with _forks(config) as pool:
            yield pool
        return
    with _threads(config) as pool:
        yield pool


def _worker_lost(exc: BaseException) -> str:
    """A slide's error when the process running it died (dask and forked workers)."""
    return f"worker lost: {type(exc).__name__}: {exc}"


class _DaskPool:
    """Slides as tasks of a dask cluster; tile counts come back as events."""

    def __init__(self, client):
        self.client = client

    def submit(self, slides: list[SlideInput], config: RunConfig, count: Callable) -> dict:
        self.client.subscribe_topic(TILES_TOPIC, lambda event: count(event[1]))
        return {self.client.submit(process_slide, item, config, key=f"slide-{item.slide_id}-{time.time_ns()}",
                                   pure=False): item for item in slides}  # fmt: skip

    def as_completed(self, futures):
        from dask.distributed import as_completed

        return as_completed(futures)

    def cancel(self, futures) -> None:
        self.client.cancel(futures)

    lost = staticmethod(_worker_lost)

    def close(self) -> None:
        self.client.unsubscribe_topic(TILES_TOPIC)


class _Stopped(BaseException):
    """Raised in a slide's thread at its next batch of tiles once the run is stopping (Ctrl-C, a full disk):
    not an Exception, so that no step records it as the slide's failure."""


def _stoppable(count: Callable, stopping) -> Callable:
    """`count(event)` (a slide's tile counts), which raises `_Stopped` instead once `stopping` (an Event) is set."""

    def counted(event) -> None:
        if stopping.is_set():
            raise _Stopped
        count(event)

    return counted


class _LocalPool:
    """Slides in a `concurrent.futures` executor of this machine (`self.executor`), with an Event `self.stopping`
    that each running slide checks at its next batch of tiles."""

    executor: Any
    stopping: Any

    def as_completed(self, futures):
        from concurrent.futures import as_completed

        return as_completed(futures)

    def cancel(self, futures) -> None:
        self.stopping.set()
        for future in futures:
            future.cancel()

    def close(self) -> None:
        """Stop: slides not started are cancelled, running ones end at their next batch of tiles."""
        self.stopping.set()
        self.executor.shutdown(wait=True, cancel_futures=True)
        self._closed()

    def _closed(self) -> None:
        """After the executor's shutdown: whatever else the pool holds is let go."""


class _ThreadPool(_LocalPool):
    """Slides in threads of this process: nothing to start or import again, nothing to close. A stopped run
    ends each running slide at its next batch of tiles (its store stays partial: a re-run redoes it)."""

    def __init__(self, workers: int):
        from concurrent.futures import ThreadPoolExecutor

        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="slide")
        self.stopping = threading.Event()
        self._lock = threading.Lock()

    def submit(self, slides: list[SlideInput], config: RunConfig, count: Callable) -> dict:
        def locked(event) -> None:
            with self._lock:  # the bar is shared by the slides' threads
                count(event)

        counted = _stoppable(locked, self.stopping)
        return {self.executor.submit(process_slide, item, config, counted, lambda n: counted(("total", n))): item
                for item in slides}  # fmt: skip

    def lost(self, exc: BaseException) -> str:
        return f"not finished: {type(exc).__name__}: {exc}"


@contextlib.contextmanager
def _stopping(pool: _LocalPool, *contexts):
    """`pool`, used inside `contexts` and closed on the way out; Ctrl-C while it closes waits for the running
    slides to stop at their next batch of tiles, then ends the run."""
    with contextlib.ExitStack() as stack:
        for context in contexts:
            stack.enter_context(context)
        try:
            yield pool
        finally:
            with deferring():
                pool.close()


def _threads(config: RunConfig):
    """A `_ThreadPool` of `config.slide_workers` threads (default one per core), as a context (`_stopping`).
    Each slide's warnings are its own (`wsi.thread_warnings`)."""
    from wsi.thread_warnings import warnings_by_thread

    return _stopping(_ThreadPool(config.slide_workers or os.cpu_count() or 1), warnings_by_thread())


class _ForkPool(_LocalPool):
    """Slides in worker processes forked from this one (`concurrent.futures`, "fork" start): each starts with
    what this process has imported (nothing imported twice, nothing to close but the processes), and runs its
    slides without sharing a GIL with the others.

    Workers ignore Ctrl-C (this process stops the run). Tile counts and each slide's start come back on a
    queue, read by a thread here. A stopped run ends each running slide at its next batch of tiles. A worker
    that dies (a crash in a native codec) breaks the pool: a fresh one takes the slides left; a slide that was
    running in two broken pools is recorded as lost, the others are tried again (a slide running beside a
    crashing one is redone).
    """

    def __init__(self, workers: int):
        import multiprocessing

        self.context = multiprocessing.get_context("fork")
        self.workers = workers
        self.stopping = self.context.Event()
        self.events = self.context.SimpleQueue()
        self.started: set[str] = set()  # slides a worker has begun (from the queue)
        self.strikes: dict[str, int] = {}  # slide id -> broken pools it was running in
        self.executor = self._executor()
        self._count: Callable | None = None
        self.config: RunConfig | None = None  # from submit: slides of a broken pool go again
        self._lock = threading.Lock()
        self._listener: threading.Thread | None = None
        self._drained = threading.Event()  # set by the reader at the ("drained",) marker (`_drain`)

    def _executor(self):
        from concurrent.futures import ProcessPoolExecutor

        executor = ProcessPoolExecutor(self.workers, mp_context=self.context, initializer=_fork_worker_start,
                                       initargs=(self.stopping, self.events))  # fmt: skip
        # Fork every worker now, with Ctrl-C ignored meanwhile: a worker forked then starts ignoring it (its
        # initializer says so too). The first pool is forked before this process starts threads of its own (the
        # queue's reader, progress); a fresh one after a broken pool is forked while they run, so a worker
        # takes no lock those threads may hold (tqdm's: the initializer gives it its own).
        # The objects of this process are frozen for the forks' garbage collector: its passes would touch
        # (and so copy) every page of them in each worker.
        main = threading.current_thread() is threading.main_thread()
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
        gc.freeze()
        try:
            executor.submit(int).result()
        finally:
            gc.unfreeze()
            if main:
                signal.signal(signal.SIGINT, previous)
        return executor

    def _listen(self) -> None:
        while True:
            event = self.events.get()
            if event is None:
                return
            if isinstance(event, tuple) and event[0] == "start":
                with self._lock:
                    self.started.add(event[1])
            elif isinstance(event, tuple) and event[0] == "drained":
                self._drained.set()
            elif self._count is not None:
                self._count(event)

    def submit(self, slides: list[SlideInput], config: RunConfig, count: Callable) -> dict:
        self._count, self.config = count, config
        if self._listener is None:
            self._listener = threading.Thread(target=self._listen, name="slide-events", daemon=True)
            self._listener.start()
        return {self.executor.submit(_forked_slide, item, config): item for item in slides}

    def as_completed(self, futures: dict):
        """Futures as they finish; slides of a broken pool are submitted again to a fresh one (added to
        `futures`), except a slide that was running in two broken pools: its future is given as it is."""
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        pool_of = dict.fromkeys(futures, self.executor)
        running: set[str] = set()  # slides started in the pool that broke last
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                item = futures[future]
                if (
                    self.stopping.is_set()
                    or future.cancelled()
                    or not isinstance(future.exception(), BrokenProcessPool)
                ):
                    with self._lock:
                        self.started.discard(item.slide_id)
                    yield future
                    continue
                if pool_of[future] is self.executor:  # the first news of this pool's end: a fresh one
                    self.executor.shutdown(wait=True, cancel_futures=True)
                    running = self._drain()
                    self.executor = self._executor()
                strikes = self.strikes[item.slide_id] = self.strikes.get(item.slide_id, 0) + (
                    item.slide_id in running
                )
                if strikes >= 2:
                    yield future  # recorded as lost
                    continue
                again = self.executor.submit(_forked_slide, item, self.config)
                futures[again], pool_of[again] = item, self.executor
                pending.add(again)

    def _drain(self) -> set[str]:
        """The slides started in the pool that has just ended (every worker of it gone), read to the last one:
        after the workers' events, a marker this process puts on the queue (FIFO) comes back through the
        reader. Without that, a dead worker's start event not read yet would be missed here, and would be
        counted later against the fresh pool."""
        if self._listener is not None:
            self._drained.clear()
            self.events.put(("drained",))
            self._drained.wait()
        with self._lock:
            running, self.started = self.started, set()
        return running

    lost = staticmethod(_worker_lost)

    def _closed(self) -> None:
        if self._listener is not None:
            self.events.put(None)
            self._listener.join()


_fork_worker: dict = {}  # in a forked worker: the run's stop event and event queue


def _fork_worker_start(stopping, events) -> None:
    """A forked worker's start: Ctrl-C is for the main process (a terminal sends it to the whole group), and
    tqdm gets a lock of its own (`_thread_tqdm_lock`): a fresh pool is forked while this process's threads
    (the queue's reader updating the tiles bar, tqdm's monitor) may hold tqdm's lock, and every slide makes
    a bar, which takes it."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _thread_tqdm_lock()
    _fork_worker.update(stopping=stopping, events=events)


def _forked_slide(item: SlideInput, config: RunConfig) -> list[StepRecord]:
    """`process_slide` in a forked worker: its start and tile counts go to the main process; once the run is
    stopping, the slide ends at its next batch of tiles."""
    events = _fork_worker["events"]
    counted = _stoppable(events.put, _fork_worker["stopping"])
    events.put(("start", item.slide_id))
    return process_slide(item, config, counted, lambda n: counted(("total", n)))


def _forks(config: RunConfig):
    """A `_ForkPool` of `config.slide_workers` processes (default one per core), as a context (`_stopping`).
    The steps' `preload` (where a step has one) runs here first: what every worker would import and set up on
    its first slide is then done once, and the workers share it."""
    for name in config.steps:
        preload = getattr(STEPS.get(name), "preload", None)
        if preload is not None:
            preload()
    return _stopping(_ForkPool(config.slide_workers or os.cpu_count() or 1))


def _count_tiles(bar: tqdm, event) -> None:
    """A tiles event from a worker: `("total", n)` adds a slide's tiles to the total, `n` tiles are written."""
    if isinstance(event, list | tuple):
        bar.total += event[1]
        bar.refresh()
    else:
        bar.update(event)

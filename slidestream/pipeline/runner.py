"""`run_batch`: every slide through every step, in parallel on dask, isolated, resumable, recorded."""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from tqdm.auto import tqdm

from slidestream.discovery import SlideInput
from slidestream.pipeline.config import RunConfig
from slidestream.pipeline.manifest import StepRecord, read_manifest, versions, write_summary
from slidestream.pipeline.steps import STEPS, SlideContext

__all__ = ["BatchResult", "plan", "process_slide", "run_batch"]

log = logging.getLogger("slidestream.run")


@dataclass(frozen=True)
class BatchResult:
    records: list[StepRecord]
    failed: list[str]  # slide ids
    out: Path

    @property
    def ok(self) -> bool:
        return not self.failed


def _check_steps(config: RunConfig) -> None:
    unknown = [s for s in config.steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown step(s) {unknown}; available: {list(STEPS)}")


def process_slide(item: SlideInput, config: RunConfig) -> list[StepRecord]:
    """Run the configured steps on one slide; a failing step is recorded and later steps are not run."""
    import torch

    # One worker's share of the machine: without this each worker's torch would use every core.
    torch.set_num_threads(max(1, config.threads_per_worker))
    folder = config.out / "slides" / item.slide_id
    folder.mkdir(parents=True, exist_ok=True)
    ctx = SlideContext(item.slide_id, Path(item.path), folder, config, on_tiles=_tile_reporter())
    records = []
    failed = False
    worker = f"{socket.gethostname()}:{os.getpid()}"
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
            records.append(StepRecord(item.slide_id, str(item.path), name, "failed", time.perf_counter() - start,
                                      error=f"{type(exc).__name__}: {exc}", finished=_now(), worker=worker))  # fmt: skip
            continue
        rss_mb = peak_rss_mb()
        records.append(StepRecord(item.slide_id, str(item.path), name, outcome.status, time.perf_counter() - start,
                                  measurements={**outcome.measurements, "worker_peak_rss_mb": round(rss_mb)},
                                  warnings=outcome.warnings, finished=_now(), worker=worker))  # fmt: skip
    return records


TILES_TOPIC = "slidestream-tiles"


def _tile_reporter():
    """Inside a dask worker: report written tiles to the client (an event topic); elsewhere: nothing."""
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return None
    return lambda n: worker.log_event(TILES_TOPIC, n)


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


def _one_line(slide_id: str, records: list[StepRecord]) -> str:
    steps = ", ".join(f"{r.step} {r.status}" + (f" ({r.error})" if r.error and r.status == "failed" else "")
                      for r in records)  # fmt: skip
    return f"{slide_id}: {steps}"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def plan(slides: list[SlideInput], config: RunConfig) -> list[str]:
    """Human-readable lines saying what a run would do (for --dry-run)."""
    _check_steps(config)
    lines = [f"{len(slides)} slide(s) -> {config.out}/slides/<slide_id>/; steps: {', '.join(config.steps)}",
             f"tiling: {config.tiling.size} px at {config.tiling.mpp} um/px, min tissue {config.tiling.min_tissue}",
             f"features: {config.features.encoder} on {config.features.device}",
             f"scheduler: {config.scheduler_address or f'local dask cluster, {config.slide_workers or os.cpu_count()} worker(s)'}"]  # fmt: skip
    done = {
        (r["slide_id"], r["step"])
        for r in read_manifest(config.out / "manifest.jsonl")
        if r["status"] in ("done", "skipped")
    }

    def state_of(item: SlideInput, step: str) -> str:
        ctx = SlideContext(item.slide_id, Path(item.path), config.out / "slides" / item.slide_id, config)
        present = all(path.exists() for path in STEPS[step].outputs(ctx))
        return "done before" if (item.slide_id, step) in done and present else "to do"

    for item in slides:
        state = ", ".join(f"{s}: {state_of(item, s)}" for s in config.steps)
        lines.append(f"  {item.slide_id:30s} {item.path}  [{state}]")
    return lines


@contextlib.contextmanager
def _client(config: RunConfig):
    from dask.distributed import Client, LocalCluster

    if config.scheduler_address:
        client = Client(config.scheduler_address, timeout="20s")
        try:
            yield client
        finally:
            client.close()
        return
    workers = config.slide_workers or os.cpu_count() or 1
    with LocalCluster(n_workers=workers, threads_per_worker=config.threads_per_worker, processes=True,
                      dashboard_address=None, silence_logs=logging.ERROR) as cluster, Client(cluster) as client:  # fmt: skip
        yield client


def run_batch(slides: list[SlideInput], config: RunConfig) -> BatchResult:
    """Process `slides` on a local dask cluster (or `config.scheduler_address`), appending to OUT/manifest.jsonl and
    rewriting OUT/summary.csv. Returns the records and the ids of slides with a failed step."""
    from dask.distributed import as_completed

    _check_steps(config)
    out = Path(config.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = replace(config, out=out)
    handler = logging.FileHandler(out / "run.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    log.propagate = False  # details go to run.log; the console gets the progress bar and the final report
    log.info("run: %d slide(s), steps %s, config %s", len(slides), list(config.steps), config.to_dict())
    manifest = out / "manifest.jsonl"
    stamp = versions()
    records: list[StepRecord] = []
    try:
        with _client(config) as client, open(manifest, "a") as sink:
            futures = {client.submit(process_slide, item, config, key=f"slide-{item.slide_id}-{time.time_ns()}",
                                     pure=False): item for item in slides}  # fmt: skip
            bar = tqdm(
                total=len(slides), desc="slides", unit="slide", disable=not config.progress, position=0
            )
            tiles_bar = tqdm(desc="tiles", unit="tile", disable=not config.progress, position=1)
            client.subscribe_topic(TILES_TOPIC, lambda event: tiles_bar.update(event[1]))
            for future in as_completed(futures):
                item = futures[future]
                try:
                    slide_records = future.result()
                except Exception as exc:  # the worker itself died (memory, segfault in a codec)
                    slide_records = [StepRecord(item.slide_id, str(item.path), config.steps[0], "failed",
                                                error=f"worker lost: {type(exc).__name__}: {exc}", finished=_now())]  # fmt: skip
                if not config.progress:
                    print(_one_line(item.slide_id, slide_records), flush=True)
                for record in slide_records:
                    sink.write(record.line(stamp) + "\n")
                    sink.flush()
                    level = logging.WARNING if record.status == "failed" else logging.INFO
                    log.log(level, "%s %s %s %.1fs %s", record.slide_id, record.step, record.status, record.seconds,
                            record.error or "")  # fmt: skip
                    for warning in record.warnings:
                        log.warning("%s %s: %s", record.slide_id, record.step, warning)
                records.extend(slide_records)
                bar.update(1)
            client.unsubscribe_topic(TILES_TOPIC)
            tiles_bar.close()
            bar.close()
    finally:
        log.removeHandler(handler)
        log.propagate = True
        handler.close()
    write_summary(out / "summary.csv", read_manifest(manifest))
    failed = sorted({r.slide_id for r in records if r.status == "failed"})
    return BatchResult(records, failed, out)

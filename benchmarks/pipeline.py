"""Slides per hour for `slidestream run` on a folder of synthetic slides, with 1 and 2 workers.

    python -m benchmarks.pipeline [--slides 4] [--size 8192x6144]

Both runs process the same folder from scratch (tile + features with the default settings) on a local dask
cluster. Prints slides/hour for each, the scaling ratio (target >= 1.7 on two cores) and each worker's peak
resident memory (from the manifest).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from benchmarks._slides import cached_slide_folder
from slidestream.discovery import find_slides
from slidestream.pipeline import load_config, read_manifest, run_batch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--slides", type=int, default=4)
    parser.add_argument("--size", default="8192x6144")
    parser.add_argument("--data", default="bench-data")
    args = parser.parse_args()
    folder = cached_slide_folder(args.data, "pipeline", args.slides, args.size, first_seed=100)
    slides, _ = find_slides([folder])
    slides = slides[: args.slides]
    startup = {workers: cluster_startup(workers) for workers in (1, 2)}
    rates, busy = {}, {}
    for workers in (1, 2):
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "run"
            config = load_config(out=out, slide_workers=workers, progress=False)
            start = time.perf_counter()
            result = run_batch(slides, config)
            elapsed = time.perf_counter() - start
            assert result.ok, result.failed
            rates[workers] = len(slides) / elapsed * 3600
            busy[workers] = elapsed - startup[workers]
            peaks = {}
            for record in read_manifest(out / "manifest.jsonl"):
                rss = record["measurements"].get("worker_peak_rss_mb")
                if rss:
                    peaks[record["worker"]] = max(peaks.get(record["worker"], 0), rss)
            tiles = sum(r["measurements"].get("tiles", 0) for r in read_manifest(out / "manifest.jsonl"))
            print(f"{workers} worker(s): {len(slides)} slides ({args.size}, {tiles} tiles) in {elapsed:.1f} s = "
                  f"{rates[workers]:.0f} slides/hour; peak RSS per worker {sorted(round(v) for v in peaks.values())} MB")  # fmt: skip
            shutil.rmtree(out, ignore_errors=True)
    print(f"scaling 2 workers / 1 worker: {rates[2] / rates[1]:.2f} (target >= 1.7)")
    print(f"local cluster start, imports and stop: {startup[1]:.1f} s (1 worker), {startup[2]:.1f} s (2 workers); scaling "
          f"without it: {busy[1] / busy[2]:.2f}")  # fmt: skip


def cluster_startup(workers: int) -> float:
    """Seconds to start and stop a local cluster of `workers` processes that import the pipeline's libraries
    (torch, timm, zarr, openslide): what each run pays before its first slide."""
    from dask.distributed import Client, LocalCluster

    start = time.perf_counter()
    with LocalCluster(
        n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with Client(cluster) as client:
            client.run(_import_pipeline)
    return time.perf_counter() - start


def _import_pipeline() -> None:
    import mil  # noqa: F401
    import slidestream.pipeline.steps  # noqa: F401
    import tiling  # noqa: F401


if __name__ == "__main__":
    main()

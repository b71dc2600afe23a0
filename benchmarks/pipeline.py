"""Slides per hour for `slidestream run` on a folder of synthetic slides, with 1 and 2 workers.

    python -m benchmarks.pipeline [--slides 4] [--size 8192x6144]
    python -m benchmarks.pipeline --small 20 [--repeat 2]

Both runs process the same folder from scratch (tile + features with the default settings) on a local dask
cluster. Prints slides/hour for each, the scaling ratio (target >= 1.7 on two cores) and each worker's peak
resident memory (from the manifest).

--small N (issue 13, biopsy folders): N copies of tests/data/CMU-1-Small-Region.svs (38 tiles each), tile step
only. In one run, each in a fresh process, from scratch: `slidestream run DIR -o OUT --steps tile --workers 2`
and a bare single-process loop of `tiling.tile_slide` over the same files. Prints both wall times (the loop's
also without its interpreter start and imports) and the ratio run / loop (target <= 0.6).
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
    parser.add_argument(
        "--small", type=int, default=0, help="N copies of CMU-1-Small-Region: run vs bare loop"
    )
    parser.add_argument("--repeat", type=int, default=1, help="--small: pairs of runs (alternating)")
    args = parser.parse_args()
    if args.small:
        small_slides(args.data, args.small, args.repeat)
        return
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


CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"

# The bare loop, in a fresh process: what a user writing the loop by hand pays.
_BARE_LOOP = """
import sys, time
from pathlib import Path
start = time.perf_counter()
from tiling import tile_slide
loop = time.perf_counter()
for path in sorted(Path(sys.argv[1]).glob("*.svs")):
    tile_slide(path, Path(sys.argv[2]) / path.stem / "patches.zarr")
print(time.perf_counter() - loop)
"""


def small_slides(data: str, n: int, repeat: int) -> None:
    """`slidestream run --steps tile` on 2 workers against the bare tile_slide loop on n small slides."""
    import os
    import subprocess
    import sys

    folder = Path(data) / f"cmu-copies-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (folder / f"cmu-{i:03d}.svs").exists():
            shutil.copy(CMU, folder / f"cmu-{i:03d}.svs")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs, loops, loop_only, cpu_run, cpu_loop = [], [], [], [], []
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), _children_cpu()
            done = subprocess.run([sys.executable, "-c", _BARE_LOOP, str(folder), f"{tmp}/bare"], env=env,
                                  check=True, capture_output=True, text=True)  # fmt: skip
            loops.append(time.perf_counter() - start)
            cpu_loop.append(_children_cpu() - cpu)
            loop_only.append(float(done.stdout.split()[-1]))
            start, cpu = time.perf_counter(), _children_cpu()
            subprocess.run([sys.executable, "-m", "slidestream", "run", str(folder), "-o", f"{tmp}/run", "--steps",
                            "tile", "--workers", "2", "--quiet"], env=env, check=True, capture_output=True)  # fmt: skip
            runs.append(time.perf_counter() - start)
            cpu_run.append(_children_cpu() - cpu)
            manifest = read_manifest(Path(tmp) / "run" / "manifest.jsonl")
            tiles = sum(r["measurements"].get("tiles", 0) for r in manifest)
        print(f"{n} slides, {tiles} tiles: run on 2 workers {runs[-1]:.1f} s ({cpu_run[-1]:.1f} s CPU, all its "
              f"processes); bare loop {loops[-1]:.1f} s ({cpu_loop[-1]:.1f} s CPU; {loop_only[-1]:.1f} s without "
              f"interpreter start and imports); ratio run / loop {runs[-1] / loops[-1]:.2f} "
              f"({runs[-1] / loop_only[-1]:.2f})", flush=True)  # fmt: skip
    best = min(runs) / min(loops)
    print(f"ratio run / bare loop, best of each: {best:.2f} (target <= 0.6); against the loop without its start: "
          f"{min(runs) / min(loop_only):.2f}")  # fmt: skip
    print(f"CPU time run / loop: {min(cpu_run) / min(cpu_loop):.2f} (on two idle cores the run's wall time is at "
          f"least half its CPU time, and the loop's about its CPU time: ratio >= "
          f"{min(cpu_run) / 2 / min(cpu_loop):.2f})")  # fmt: skip


def _children_cpu() -> float:
    """User + system seconds of this process's finished children (and theirs: the cluster's workers)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


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

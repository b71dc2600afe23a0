"""Slides per hour for `slidestream run` on a folder of synthetic slides, with 1 and 2 workers.

    python -m benchmarks.pipeline [--slides 4] [--size 8192x6144]
    python -m benchmarks.pipeline --small 20 [--repeat 2]

Both runs process the same folder from scratch (tile + features with the default settings) on a local dask
cluster. Prints slides/hour for each, the scaling ratio (target >= 1.7 on two cores) and each worker's peak
resident memory (from the manifest).

--small N (issue 13, biopsy folders): N copies of tests/data/CMU-1-Small-Region.svs (38 tiles each), tile step
only. In one run, each in a fresh process, from scratch: `slidestream run DIR -o OUT --steps tile --workers 2`
with `--executor threads`, `forks` (worker processes forked from the run's; the command's default on Linux)
and `processes` (a local dask cluster), and a bare single-process loop of `tiling.tile_slide` over the same
files. Prints wall and CPU times (the loop's also without its interpreter start and imports), the size of one
slide's pictures, and the ratio run / loop (target <= 0.6), the default executor's first; then the tile step in
this process in 1 and 2 threads and 2 forked workers, and tissue detection per slide on CMU-1-Small-Region,
from DCT-scaled native tiles (the default) and by read_region (`exact`).

Before timing, --small compiles the project's own packages into their __pycache__ folders (`compileall`; git
ignores them): a process that runs with PYTHONDONTWRITEBYTECODE=1 (as this machine's environment sets it) never
writes them itself and would compile every module it imports from source, in each fresh process, a fixed cost
that an installed tree (pip writes .pyc) or a plain python (writes them on first import) does not pay.
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
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
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
    """`slidestream run --steps tile` on 2 workers (threads, forks, processes) against the bare tile_slide loop
    on n small slides; then CPU per slide and per process of each, GIL contention, and tissue detection's time
    per slide, fast and exact."""
    import os
    import subprocess
    import sys

    folder = Path(data) / f"cmu-copies-{n}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        if not (folder / f"cmu-{i:03d}.svs").exists():
            shutil.copy(CMU, folder / f"cmu-{i:03d}.svs")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    compiled = compile_project()
    print(f"compiled the project's packages into __pycache__ ({compiled} modules compiled now; "
          f"PYTHONDONTWRITEBYTECODE={os.environ.get('PYTHONDONTWRITEBYTECODE', '')!r} here)", flush=True)  # fmt: skip
    print(f"load average before: {' '.join(f'{x:.1f}' for x in os.getloadavg())}", flush=True)
    executors = ("threads", "forks", "processes")
    walls: dict[str, list[float]] = {name: [] for name in (*executors, "loop")}
    cpus: dict[str, list[float]] = {name: [] for name in (*executors, "loop")}
    loop_only = []
    pictures = None
    for _ in range(repeat):
        with tempfile.TemporaryDirectory() as tmp:
            start, cpu = time.perf_counter(), _children_cpu()
            done = subprocess.run([sys.executable, "-c", _BARE_LOOP, str(folder), f"{tmp}/bare"], env=env,
                                  check=True, capture_output=True, text=True)  # fmt: skip
            walls["loop"].append(time.perf_counter() - start)
            cpus["loop"].append(_children_cpu() - cpu)
            loop_only.append(float(done.stdout.split()[-1]))
            for executor in executors:
                start, cpu = time.perf_counter(), _children_cpu()
                subprocess.run([sys.executable, "-m", "slidestream", "run", str(folder), "-o", f"{tmp}/{executor}",
                                "--steps", "tile", "--workers", "2", "--executor", executor, "--quiet"], env=env,
                               check=True, capture_output=True)  # fmt: skip
                walls[executor].append(time.perf_counter() - start)
                cpus[executor].append(_children_cpu() - cpu)
            manifest = read_manifest(Path(tmp) / "threads" / "manifest.jsonl")
            tiles = sum(r["measurements"].get("tiles", 0) for r in manifest)
            if pictures is None:  # the same every time
                pictures = _picture_sizes(Path(tmp) / "forks" / "slides" / "cmu-000")
        loop = walls["loop"][-1]
        print(f"{n} slides, {tiles} tiles: bare loop {loop:.1f} s ({cpus['loop'][-1]:.1f} s CPU; {loop_only[-1]:.1f} s "
              f"without interpreter start and imports)", flush=True)  # fmt: skip
        for executor in executors:
            wall = walls[executor][-1]
            print(f"  run, 2 workers, {executor:9s}: {wall:.1f} s ({cpus[executor][-1]:.1f} s CPU"
                  f"{', not counting the fork-server workers' if executor == 'processes' else ''}); ratio run / loop "
                  f"{wall / loop:.2f} ({wall / loop_only[-1]:.2f} against the loop without its start)", flush=True)  # fmt: skip
    print(f"pictures of one slide: {pictures}", flush=True)
    from slidestream.pipeline.steps import default_executor

    default = default_executor(("tile",))  # what `slidestream run --steps tile` uses here without --executor
    for executor in sorted(executors, key=lambda e: e != default):
        said = f"{executor}, the default here" if executor == default else executor
        print(f"ratio run ({said}) / bare loop, best of each: {min(walls[executor]) / min(walls['loop']):.2f} "
              f"(target <= 0.6); against the loop without its start: {min(walls[executor]) / min(loop_only):.2f}")  # fmt: skip
    for executor in ("threads", "forks"):
        print(f"CPU time run ({executor}) / loop: {min(cpus[executor]) / min(cpus['loop']):.2f} (on two idle cores the "
              f"run's wall time is at least half its CPU time: ratio >= {min(cpus[executor]) / 2 / min(cpus['loop']):.2f})")  # fmt: skip
    per_slide_and_fixed(folder, env)
    thread_scaling(folder)
    tissue_speed()
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


PACKAGES = ("wsi", "tiling", "mil", "nuclei", "survival", "slidestream")  # pyproject.toml's


def compile_project() -> int:
    """Compile the project's packages (PACKAGES, beside this folder) into their __pycache__ folders, as pip does
    for an installed tree; returns how many modules were compiled now (0 when the cache was up to date)."""
    import compileall
    import io
    import re
    from contextlib import redirect_stdout

    root = Path(__file__).resolve().parents[1]
    said = io.StringIO()
    with redirect_stdout(said):  # compileall prints "Compiling '...'..." for each module it compiles
        for name in PACKAGES:
            if not compileall.compile_dir(root / name, quiet=0):
                raise RuntimeError(f"{root / name}: a module did not compile:\n{said.getvalue()}")
    return len(re.findall(r"^Compiling ", said.getvalue(), flags=re.MULTILINE))


def _picture_sizes(folder: Path) -> str:
    """ "thumbnail.png 555 x 822 px, 494,399 bytes; ..." for the pictures in a slide's folder."""
    from PIL import Image

    from slidestream.pipeline.steps import PICTURES

    said = []
    for name in PICTURES:
        with Image.open(folder / name) as image:
            w, h = image.size
        said.append(f"{name} {w} x {h} px, {(folder / name).stat().st_size:,} bytes")
    return "; ".join(said)


def per_slide_and_fixed(folder: Path, env: dict, n: int = 10) -> None:
    """CPU per slide in this process (after a warm-up slide): `tile_slide` against the run's tile step
    (`process_slide`); and each one's fixed CPU per process (interpreter, imports, parser, executor start,
    summary): a fresh process on one slide, less the CPU of one slide (the first slide's first-use costs
    count as fixed)."""
    import subprocess
    import sys

    from slidestream.discovery import SlideInput
    from slidestream.pipeline import process_slide
    from tiling import tile_slide

    paths = sorted(folder.glob("*.svs"))[: n + 1]
    per_slide = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = load_config(out=tmp / "run", steps=("tile",), progress=False)
        tile_slide(paths[0], tmp / "warm" / "patches.zarr")
        process_slide(SlideInput(paths[0].stem, paths[0]), config)
        for name in ("loop", "run"):
            start = time.process_time()
            for path in paths[1:]:
                if name == "loop":
                    tile_slide(path, tmp / "loop" / path.stem / "patches.zarr")
                else:
                    process_slide(SlideInput(path.stem, path), config)
            per_slide[name] = (time.process_time() - start) / (len(paths) - 1)
        one = tmp / "one"
        one.mkdir()
        shutil.copy(paths[0], one / paths[0].name)
        fixed = {}
        for name, command in (("loop", ["-c", _BARE_LOOP, str(one), str(tmp / "bare")]),
                              ("run", ["-m", "slidestream", "run", str(one), "-o", str(tmp / "one-run"), "--steps",
                                       "tile", "--workers", "2", "--quiet"])):  # fmt: skip
            cpu = _children_cpu()
            subprocess.run([sys.executable, *command], env=env, check=True, capture_output=True)
            fixed[name] = _children_cpu() - cpu - per_slide[name]
    print(f"CPU per slide, in process ({len(paths) - 1} slides): tile_slide {per_slide['loop'] * 1e3:.0f} ms, the "
          f"run's tile step {per_slide['run'] * 1e3:.0f} ms ({per_slide['run'] / per_slide['loop']:.2f}x); fixed CPU "
          f"per process: loop {fixed['loop']:.2f} s, run (default executor) {fixed['run']:.2f} s")  # fmt: skip


def thread_scaling(folder: Path, n: int = 10) -> None:
    """GIL contention: `process_slide` (tile step) on n of the slides in this process, in 1 then 2 threads; then
    in 2 worker processes forked from this one (`run --executor forks`)."""
    from concurrent.futures import ThreadPoolExecutor

    from slidestream.discovery import SlideInput
    from slidestream.pipeline import process_slide
    from slidestream.pipeline.runner import _forks

    slides = [SlideInput(p.stem, p) for p in sorted(folder.glob("*.svs"))[:n]]
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        warm = load_config(out=Path(tmp) / "warm", steps=("tile",), progress=False)
        process_slide(slides[0], warm)  # imports and first-use costs out of the figure
        for threads in (1, 2):
            config = load_config(out=Path(tmp) / str(threads), steps=("tile",), progress=False)
            start = time.perf_counter()
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(lambda item, c=config: process_slide(item, c), slides))
            seconds[threads] = time.perf_counter() - start
        config = load_config(out=Path(tmp) / "forks", steps=("tile",), progress=False, slide_workers=2,
                             executor="forks")  # fmt: skip
        start = time.perf_counter()
        with _forks(config) as pool:  # forked from this process: imports and first-use costs are done
            futures = pool.submit(slides, config, lambda event: None)
            for future in pool.as_completed(futures):
                future.result()
        seconds["forks"] = time.perf_counter() - start
    print(f"tile step in this process, {len(slides)} slides: 1 thread {seconds[1]:.1f} s, 2 threads {seconds[2]:.1f} s; "
          f"speed-up {seconds[1] / seconds[2]:.2f} (2.0 on two idle cores without GIL contention); 2 forked worker "
          f"processes {seconds['forks']:.1f} s (with their start), speed-up {seconds[1] / seconds['forks']:.2f}")  # fmt: skip


def tissue_speed(repeats: int = 5) -> None:
    """Tissue detection on CMU-1-Small-Region, per slide: DCT-scaled native tiles (default) and read_region."""
    import wsi
    from tiling import detect_tissue_result

    best = {}
    with wsi.open_slide(CMU) as slide:
        for _ in range(repeats):
            for exact in (False, True):
                start = time.perf_counter()
                detect_tissue_result(slide, exact=exact)
                elapsed = time.perf_counter() - start
                best[exact] = min(best.get(exact, elapsed), elapsed)
    print(f"tissue detection per slide (CMU-1-Small-Region, best of {repeats}): native DCT {best[False] * 1e3:.0f} ms, "
          f"read_region {best[True] * 1e3:.0f} ms; speed-up {best[True] / best[False]:.1f}x")  # fmt: skip


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

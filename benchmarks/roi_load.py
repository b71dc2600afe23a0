"""Loading large, self-intersecting ROIs (hand-drawn QuPath annotations), against a 1 s limit.

    python -m benchmarks.roi_load [--vertices 50000] [--repeats 3]

Polygons written as GeoJSON: three of `--vertices` vertices, a figure of eight (one self-crossing), a circle with
3 px hand-drawn jitter (many tiny self-crossings) and a wavy ring; a cross-hatching scribbled as one path (50
strokes each way: 2,500 crossings, `--vertices` in all); and a star of 1,000 vertices at random angles and radii
(about 10^5 crossings: no one draws it, it shows where the time goes). Each is loaded with `tiling.load_roi` (read,
simplify by `tiling.roi.ROI_TOLERANCE`, repair); printed: the best time of `--repeats`, its ratio to the 1 s limit,
and, measured in the same run, shapely's default `make_valid` on the unsimplified polygon (what loading did
before, capped at 60 s).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np

LIMIT_S = 1.0


def _rings(n: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    r = 1000 + 3 * rng.standard_normal((2, n))
    wave_r, wave_a = 1000 + 300 * np.sin(40 * t), t + 0.05 * np.sin(37 * t)
    star_a, star_r = 2 * np.pi * rng.random(1000), 1000 + 400 * rng.random(1000)
    return {
        "figure of eight": np.c_[1500 + 1000 * np.sin(t), 1500 + 600 * np.sin(2 * t)],
        "jittered circle": np.c_[1500 + r[0] * np.cos(t), 1500 + r[1] * np.sin(t)],
        "wavy ring": np.c_[1500 + wave_r * np.cos(wave_a), 1500 + wave_r * np.sin(wave_a)],
        "cross-hatching": _hatching(n, rng),
        "random star": np.c_[1500 + star_r * np.cos(star_a), 1500 + star_r * np.sin(star_a)],
    }


def _hatching(n: int, rng: np.random.Generator, strokes: int = 50) -> np.ndarray:
    """One path shading a 3,000 px square: `strokes` back-and-forth strokes across, then as many up and down, each
    with 2 px of hand tremor; every stroke crosses every stroke of the other direction."""
    per = max(2, n // (2 * strokes))
    along = np.linspace(0, 3000, per)
    paths = []
    for vertical in (False, True):
        for i in range(strokes):
            a = along if i % 2 == 0 else along[::-1]
            b = np.full(per, 3000 * i / strokes) + rng.normal(0, 2, per)
            paths.append(np.c_[b, a] if vertical else np.c_[a, b])
    return np.concatenate(paths)


def _old_make_valid(ring: np.ndarray) -> None:
    import shapely
    from shapely.geometry import Polygon

    shapely.make_valid(Polygon(ring))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--vertices", type=int, default=50_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import tiling

    print(f"{'ROI':<16} {'vertices':>8} {'load_roi s':>10} {'/ limit':>8} {'make_valid before s':>20}")
    with tempfile.TemporaryDirectory() as tmp:
        for name, ring in _rings(args.vertices).items():
            path = Path(tmp) / "roi.geojson"
            path.write_text(json.dumps({"type": "Polygon", "coordinates": [np.r_[ring, ring[:1]].tolist()]}))
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                roi = tiling.load_roi(path)
                times.append(time.perf_counter() - start)
            assert roi.is_valid
            process = multiprocessing.Process(target=_old_make_valid, args=(ring,))
            start = time.perf_counter()
            process.start()
            process.join(60)
            before = time.perf_counter() - start
            if process.is_alive():
                process.terminate()
                process.join()
                before_text = "> 60"
            else:
                before_text = f"{before:.2f}"
            best = min(times)
            print(
                f"{name:<16} {len(ring):>8} {best:>10.3f} {best / LIMIT_S:>8.2f} {before_text:>20}",
                flush=True,
            )


if __name__ == "__main__":
    main()

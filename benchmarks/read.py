"""Random 256 x 256 level-0 reads per second per backend, against the raw JPEG decode rate of the same tiles.

    python -m benchmarks.read [--size 20000] [--reads 2000]

The limit measured in the same run: decoding the slide's own JPEG tiles with imagecodecs on one core (what any
reader must at least do). The ratio is reads/s over decodes/s; 1.0 would be a reader with no overhead.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

import wsi
from wsi.synthetic import SyntheticSpec, write_slide


def _slide(folder: Path, size: int) -> Path:
    path = folder / f"bench-read-{size}.svs"
    if not path.exists():
        write_slide(path, SyntheticSpec(size, size, mpp=0.25, seed=11, tumor=True))
    return path


def decode_rate(path: Path, n: int) -> float:
    """Decodes per second of n random native tiles of level 0 (raw bytes read first, not timed)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        rng = np.random.default_rng(0)
        index = rng.choice(len(page.dataoffsets), size=min(n, len(page.dataoffsets)), replace=False)
        fh = tif.filehandle
        blobs = []
        for i in index:
            fh.seek(page.dataoffsets[i])
            blobs.append(fh.read(page.databytecounts[i]))
    start = time.perf_counter()
    for blob in blobs:
        imagecodecs.jpeg8_decode(blob)
    return len(blobs) / (time.perf_counter() - start)


def read_rate(path: Path, backend: str, n: int) -> float:
    with wsi.open_slide(path, backend=backend) as slide:
        w, h = slide.meta.dimensions
        rng = np.random.default_rng(1)
        xs, ys = rng.integers(0, w - 256, n), rng.integers(0, h - 256, n)
        slide.read_region((0, 0), 0, (256, 256))
        start = time.perf_counter()
        for x, y in zip(xs, ys, strict=True):
            slide.read_region((int(x), int(y)), 0, (256, 256))
        return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=20000, help="synthetic slide side in pixels")
    parser.add_argument("--reads", type=int, default=2000)
    parser.add_argument(
        "--data", default=None, help="folder to keep the synthetic slide (default: temporary)"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.data or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = _slide(folder, args.size)
        floor = decode_rate(path, args.reads)
        print(f"slide {args.size} x {args.size}, 256 px tiles, {args.reads} random unaligned reads")
        print(f"raw JPEG decode (imagecodecs, 1 core): {floor:8.0f} tiles/s")
        for backend in wsi.backends.list_backends():
            rate = read_rate(path, backend, args.reads)
            print(
                f"{backend:>10} read_region:           {rate:8.0f} reads/s   ratio to decode {rate / floor:.3f}"
            )


if __name__ == "__main__":
    main()

"""Tiling throughput against the JPEG decode floor and a naive openslide loop, codecs, and peak memory.

    python -m benchmarks.tiling [--size 50000] [--big] [--data bench-data]

On a synthetic slide (0.25 um/px, 256 px JPEG tiles) tiled at its native level (mpp 0.25, 256 px):
- tiles/s and MPix/s of `tile_slide` end to end (tissue detection included), in a fresh process;
- ratio to the decode floor: the same tiles' raw JPEG decoded with imagecodecs on all cores (target >= 0.5);
- ratio to a naive loop of openslide read_region per tile writing PNG files (target >= 20);
- each store codec: encode rate per core and compression on the same tiles, and tiling end to end with it;
- peak RSS of tiling a 20,000 px slide and the large one (100,000 px with --big): under 1.5 GB, growing < 25%.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import imagecodecs
import numpy as np
import tifffile

# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
_CHILD = """
import json, sys, time
from tiling import tile_slide_result
t = time.perf_counter()
r = tile_slide_result(sys.argv[1], sys.argv[2], size=256, mpp=0.25, codec=sys.argv[3], overwrite=True)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"tiles": r.tiles, "seconds": time.perf_counter() - t, "codec": r.store.codec,
                  "rss_mb": int(hwm) / 1024}))
"""


def ensure_slide(folder: Path, size: int) -> Path:
    from wsi.synthetic import SyntheticSpec, write_slide

    path = folder / f"synthetic-{size}.svs"
    if not path.exists():
        print(f"writing synthetic slide {size} x {size} (cached in {folder}) ...", flush=True)
        write_slide(path, SyntheticSpec(size, size, mpp=0.25, seed=11, tumor=True), progress=False)
    return path


def tile_in_child(slide: Path, store: Path, codec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _CHILD, str(slide), str(store), codec], check=True,
                         capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def raw_tiles(slide: Path, coords: np.ndarray) -> list[bytes]:
    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        fh = tif.filehandle
        blobs = []
        for x, y in coords:
            index = (y // 256) * across + x // 256
            fh.seek(page.dataoffsets[index])
            blobs.append(fh.read(page.databytecounts[index]))
    return blobs


def decode_floor(blobs: list[bytes]) -> float:
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(imagecodecs.jpeg8_decode, blobs[:64]))
        start = time.perf_counter()
        list(pool.map(imagecodecs.jpeg8_decode, blobs, chunksize=64))
        return len(blobs) / (time.perf_counter() - start)


def naive_loop(slide: Path, coords: np.ndarray, folder: Path) -> float:
    import openslide

    raw = openslide.OpenSlide(str(slide))
    start = time.perf_counter()
    for i, (x, y) in enumerate(coords):
        raw.read_region((int(x), int(y)), 0, (256, 256)).convert("RGB").save(folder / f"{i}.png")
    return len(coords) / (time.perf_counter() - start)


def codec_table(blobs: list[bytes]) -> list[tuple[str, float, float]]:
    import numcodecs

    from tiling.jpeg_codec import encode_lossless
    from tiling.shards import _chunk_encoder
    from tiling.store import CODECS

    tiles = [imagecodecs.jpeg8_decode(b) for b in blobs]
    raw = sum(t.nbytes for t in tiles)
    rows = [("jpeg (copy of the slide's tiles)", float("inf"), raw / sum(len(b) for b in blobs))]
    numcodecs.blosc.use_threads = False
    for name in ("lz4", "zstd", "zstd3", "none"):
        codec = CODECS[name]()
        encode = _chunk_encoder([codec] if codec is not None else [])
        start = time.perf_counter()
        sizes = [len(encode(t)) for t in tiles]
        rows.append((name, len(tiles) / (time.perf_counter() - start), raw / sum(sizes)))
    start = time.perf_counter()
    sizes = [len(encode_lossless(t)) for t in tiles]
    rows.append(("lossless jpeg (edge tiles)", len(tiles) / (time.perf_counter() - start), raw / sum(sizes)))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=50_000, help="side of the main synthetic slide")
    parser.add_argument("--big", action="store_true", help="also measure peak RSS on a 100,000 px slide")
    parser.add_argument("--data", default="bench-data", help="folder caching the synthetic slides")
    parser.add_argument("--naive-tiles", type=int, default=300)
    args = parser.parse_args()
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = ensure_slide(folder, args.size)

    from tiling import PatchStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_path = tmp / "main.zarr"
        run = tile_in_child(slide, store_path, "auto")
        coords = PatchStore.open(store_path).coords
        rate = run["tiles"] / run["seconds"]
        print(f"slide {args.size} x {args.size}: {run['tiles']} tissue tiles of 256 px at 0.25 um/px, "
              f"codec {run['codec']}")  # fmt: skip
        print(f"tile_slide end to end: {run['seconds']:.1f} s, {rate:.0f} tiles/s, "
              f"{rate * 256 * 256 / 1e6:.0f} MPix/s, peak RSS {run['rss_mb']:.0f} MB")  # fmt: skip
        blobs = raw_tiles(slide, coords)
        floor = decode_floor(blobs)
        print(f"decode floor (imagecodecs, {os.cpu_count()} cores): {floor:.0f} tiles/s -> ratio {rate / floor:.2f} "
              "(target >= 0.5)")  # fmt: skip
        (tmp / "png").mkdir()
        sample = coords[
            np.random.default_rng(0).choice(len(coords), min(args.naive_tiles, len(coords)), replace=False)
        ]
        naive = naive_loop(slide, sample, tmp / "png")
        print(
            f"naive openslide read_region + PNG loop: {naive:.0f} tiles/s -> ratio {rate / naive:.1f} (target >= 20)"
        )
        print("\ncodec                              encode/core   compression   tile_slide end to end")
        end_to_end = {"jpeg (copy of the slide's tiles)": rate}
        for name in ("lz4", "zstd"):
            other = tile_in_child(slide, tmp / f"{name}.zarr", name)
            end_to_end[name] = other["tiles"] / other["seconds"]
        for name, encode, ratio in codec_table(blobs[:1000]):
            e2e = f"{end_to_end[name]:.0f} tiles/s" if name in end_to_end else ""
            enc = "no encode" if encode == float("inf") else f"{encode:.0f} tiles/s"
            print(f"{name:34s} {enc:>12s}   {ratio:9.2f}x   {e2e}")
        sizes = [20_000] + ([100_000] if args.big else [args.size])
        print("\npeak RSS of tile_slide (fresh process):")
        rss = []
        for size in sizes:
            path = ensure_slide(folder, size)
            result = tile_in_child(path, tmp / f"rss{size}.zarr", "auto")
            rss.append(result["rss_mb"])
            print(f"  {size:>7} px: {result['rss_mb']:.0f} MB ({result['tiles']} tiles)")
        print(f"  growth {rss[-1] / rss[0] - 1:+.0%} (target < 25%, and under 1,500 MB)")


if __name__ == "__main__":
    main()

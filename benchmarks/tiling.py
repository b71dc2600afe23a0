"""Tiling throughput where labs tile: resampled (0.5 um/px from a 0.25 um/px slide), unaligned and overlapping grids.

    python -m benchmarks.tiling [--size 16384] [--data bench-data] [--naive-tiles 200]

The slide is an Aperio-style SVS (0.25 um/px, 256 px JPEG tiles, 4x pyramid) whose pixels repeat the real
tissue of tests/data/CMU-1-Small-Region.svs (mirrored copies), written in seconds and cached in --data.
For each grid (256 px at 0.5 um/px; 224 px at 0.5 um/px; 256 px at 0.5 um/px with stride 128), in one run:
- tiles/s of `tile_slide` end to end (fresh process, tissue detection included, codec lz4), in the default
  (DCT-scaled) and the exact mode, with the peak RSS of the process;
- the decode floor of the same work: every native tile the grid covers decoded once (imagecodecs, all
  cores) plus an area resize of each output tile (OpenCV-free: Pillow BOX), in output tiles/s; the ratio
  end to end / floor (target >= 0.5; the DCT-scaled mode may exceed 1);
- a naive loop: openslide read_region of each tile's box + resize, one thread;
- pixel differences of the default mode from read_region + area resize and from read_region + resize_rgb.
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

CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"
GRIDS = {"256@0.5": (256, None), "224@0.5": (224, None), "256@0.5 stride 128": (256, 128)}

# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
_CHILD = """
import json, sys, time
from tiling import tile_slide_result
stride = None if sys.argv[4] == "none" else int(sys.argv[4])
t = time.perf_counter()
r = tile_slide_result(sys.argv[1], sys.argv[2], size=int(sys.argv[3]), mpp=0.5, stride=stride, codec="lz4",
                      exact=sys.argv[5] == "exact", overwrite=True)
seconds = time.perf_counter() - t
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"tiles": r.tiles, "seconds": seconds, "rss_mb": int(hwm) / 1024}))
"""


def ensure_slide(folder: Path, size: int) -> Path:
    """An SVS of `size` x `size` px at 0.25 um/px tiled with mirrored copies of CMU-1-Small-Region's pixels."""
    from PIL import Image

    from wsi.synthetic.writer import pyramid_sizes

    path = folder / f"cmu-mosaic-{size}.svs"
    if path.exists():
        return path
    print(f"writing {path} ...", flush=True)
    with tifffile.TiffFile(CMU) as tif:
        base = tif.pages[0].asarray()[..., :3]
    pattern = np.concatenate([np.concatenate([base, base[:, ::-1]], 1)] * 2, 0)
    pattern[base.shape[0] :] = pattern[base.shape[0] :][::-1]
    ph, pw = pattern.shape[:2]

    def tiles(w: int, h: int, d: int):
        for y in range(0, h, 256):
            rows = (np.arange(y, y + 256) * d) % ph
            for x in range(0, w, 256):
                yield pattern[rows][:, (np.arange(x, x + 256) * d) % pw]

    desc = "Aperio Image Library v12.0.16\r\n{0}x{0} [0,0 {0}x{0}] (256x256) JPEG/RGB Q=85|AppMag = 40|MPP = 0.25"
    jpeg = {"compression": "jpeg", "compressionargs": {"level": 85}, "photometric": "rgb", "metadata": None}
    tmp = path.with_name(path.name + ".partial")
    with tifffile.TiffWriter(tmp, bigtiff=size * size * 3 > 2**31) as tif:
        for index, (w, h, d) in enumerate(pyramid_sizes(size, size, 256)):
            text = desc.format(size) + ("" if index == 0 else f" -> {w}x{h}")
            tif.write(tiles(w, h, d), shape=(h, w, 3), dtype=np.uint8, tile=(256, 256), description=text,
                      subfiletype=0, **jpeg)  # fmt: skip
            if index == 0:
                thumb = np.asarray(Image.fromarray(pattern).resize((768, 768 * ph // pw)))
                tif.write(thumb, description=f"{desc.format(size)} -> thumbnail", rowsperstrip=16, subfiletype=0,
                          **jpeg)  # fmt: skip
    tmp.replace(path)
    return path


def tile_in_child(slide: Path, store: Path, size: int, stride: int | None, mode: str) -> dict:
    args = [str(slide), str(store), str(size), str(stride or "none"), mode]
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def covered_tiles(coords: np.ndarray, box: int, tile: int = 256) -> np.ndarray:
    """Indices (row, column) of the native tiles that the level-0 boxes at `coords` cover, each once."""
    seen = set()
    for x, y in coords:
        for ty in range(y // tile, (y + box - 1) // tile + 1):
            for tx in range(x // tile, (x + box - 1) // tile + 1):
                seen.add((ty, tx))
    return np.array(sorted(seen))


def decode_floor(slide: Path, coords: np.ndarray, size: int, box: int) -> float:
    """Output tiles/s when every covered native tile is decoded once (all cores) and each output tile is one
    area resize of its box (paste not counted)."""
    from PIL import Image

    with tifffile.TiffFile(slide) as tif:
        page = tif.pages[0]
        across = -(-page.imagewidth // page.tilewidth)
        tables = bytes(page.jpegtables) if page.jpegtables else b""
        fh = tif.filehandle
        blobs = []
        for ty, tx in covered_tiles(coords, box):
            index = ty * across + tx
            fh.seek(page.dataoffsets[index])
            data = fh.read(page.databytecounts[index])
            blobs.append(data[:2] + tables[2:-2] + data[2:] if tables else data)
    boxes = [np.zeros((box, box, 3), np.uint8) + i for i in range(8)]

    def decode(blob):
        return imagecodecs.jpeg8_decode(blob, colorspace="RGB", outcolorspace="RGB")

    def resize(i):
        return np.asarray(Image.fromarray(boxes[i % 8]).resize((size, size), Image.Resampling.BOX))

    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        list(pool.map(decode, blobs[:32]))
        start = time.perf_counter()
        list(pool.map(decode, blobs, chunksize=64))
        list(pool.map(resize, range(len(coords)), chunksize=64))
        return len(coords) / (time.perf_counter() - start)


def naive_loop(slide: Path, coords: np.ndarray, size: int, box: int) -> float:
    import openslide

    import wsi

    raw = openslide.OpenSlide(str(slide))
    start = time.perf_counter()
    for x, y in coords:
        region = np.asarray(raw.read_region((int(x), int(y)), 0, (box, box)).convert("RGB"))
        wsi.resize_rgb(region, (size, size))
    return len(coords) / (time.perf_counter() - start)


def pixel_diffs(slide_path: Path, coords: np.ndarray, size: int, stride: int | None) -> dict[str, tuple]:
    """(mean, max) abs difference of the default mode's tiles from read_region + area / + resize_rgb."""
    import wsi
    from tiling.config import TilingConfig
    from tiling.grid import TileSpec
    from tiling.reader import TileReader
    from tiling.resample import area_resize

    out = {}
    with wsi.open_slide(slide_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=size, mpp=0.5, stride=stride))
        reader = TileReader(slide_path, spec)
        diffs = {"area": [], "resize_rgb": []}
        for x, y in coords:
            tile = reader.read(int(x), int(y)).astype(np.int16)
            region = slide.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
            for name, fn in (("area", area_resize), ("resize_rgb", wsi.resize_rgb)):
                diffs[name].append(np.abs(tile - fn(region, (size, size)).astype(np.int16)))
        for name, values in diffs.items():
            stack = np.stack(values)
            out[name] = (float(stack.mean()), int(stack.max()))
        out["path"] = reader.path_name
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", type=int, default=16_384, help="side of the slide in level-0 pixels")
    parser.add_argument("--data", default="bench-data", help="folder caching the slide")
    parser.add_argument("--naive-tiles", type=int, default=200)
    args = parser.parse_args()
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = ensure_slide(folder, args.size)

    from tiling import PatchStore

    print(f"slide {slide.name}: {args.size} x {args.size} px at 0.25 um/px, 256 px JPEG tiles; "
          f"{os.cpu_count()} cores; tile_slide codec lz4")  # fmt: skip
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        for name, (size, stride) in GRIDS.items():
            store_path = Path(tmp) / "s.zarr"
            fast = tile_in_child(slide, store_path, size, stride, "fast")
            exact = tile_in_child(slide, store_path, size, stride, "exact")
            store = PatchStore.open(store_path)
            coords, box = store.coords, int(store.attrs["tiling"]["read_size"])
            floor = decode_floor(slide, coords, size, box)
            sample = coords[rng.choice(len(coords), min(args.naive_tiles, len(coords)), replace=False)]
            naive = naive_loop(slide, sample, size, box)
            diffs = pixel_diffs(slide, sample[:50], size, stride)
            rate_fast, rate_exact = (r["tiles"] / r["seconds"] for r in (fast, exact))
            print(f"\n{name}: {fast['tiles']} tiles, box {box} px at level 0 ({diffs['path']})")
            print(f"  decode floor (covered native tiles decoded once + area resize): {floor:.0f} tiles/s")
            print(f"  tile_slide default (DCT): {rate_fast:.0f} tiles/s -> {rate_fast / floor:.2f} of the floor, "
                  f"peak RSS {fast['rss_mb']:.0f} MB")  # fmt: skip
            print(f"  tile_slide exact:         {rate_exact:.0f} tiles/s -> {rate_exact / floor:.2f} of the floor, "
                  f"peak RSS {exact['rss_mb']:.0f} MB")  # fmt: skip
            print(f"  naive openslide read_region + resize loop (1 thread): {naive:.0f} tiles/s -> default is "
                  f"{rate_fast / naive:.1f}x")  # fmt: skip
            a, b = diffs["area"], diffs["resize_rgb"]
            print(f"  default pixels vs read_region + area resize: mean {a[0]:.2f}, max {a[1]}; "
                  f"vs read_region + resize_rgb (= exact): mean {b[0]:.2f}, max {b[1]}")  # fmt: skip


if __name__ == "__main__":
    main()

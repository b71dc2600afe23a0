"""Tiling throughput: resampled, unaligned and overlapping grids (default) and the aligned case (--native).

    python -m benchmarks.tiling [--size 24576] [--data bench-data] [--naive-tiles 200]
    python -m benchmarks.tiling --memory [--size 100000] [--data bench-data]
    python -m benchmarks.tiling --strips
    python -m benchmarks.tiling --native [--size 50000] [--big] [--data bench-data]

Default (issue 13): an Aperio-style SVS (0.25 um/px, 256 px JPEG tiles, 4x pyramid) whose pixels repeat the
real tissue of tests/data/CMU-1-Small-Region.svs (mirrored copies), written in seconds and cached in --data.
For each grid (256 px at 0.5 um/px; 224 px at 0.5 um/px; 256 px at 0.5 um/px with stride 128), in one run:
- tiles/s of `tile_slide` end to end (fresh process, tissue detection included, codec lz4), in the default
  (DCT-scaled) and the exact mode, with the peak RSS of the process;
- the decode floor of the same work: every native tile the grid covers decoded once (imagecodecs, all
  cores) plus an area resize (Pillow BOX) per output tile, in output tiles/s; the ratio end to end / floor
  (target >= 0.5; the DCT-scaled mode may exceed 1);
- a naive loop: openslide read_region of each tile's box + resize, one thread;
- pixel differences of the default mode from read_region + area resize and from read_region + resize_rgb;
- the decoders compared, ms per native tile on one thread (what decided the DCT decoder);
- a non-JPEG (deflate) tiled TIFF: TileReader's tile-by-tile decode against read_region + resize, one thread.

--memory [--size 100000]: peak RSS of `tile_slide` (fresh process) on a mosaic slide of that side (256 px at
0.5 um/px, default mode) and on a 20,000 px one (also exact, and stride 128); target < 1.5 GB.

--strips: the read_region path (slides tifffile cannot read tile by tile) on CMU-1-Small-Region through
openslide: `TileReader.read_many` (overlapping neighbours of a row read as one strip) against one read_region
per tile, one thread, best of 3, for grids with and without overlap.

--native, on a synthetic slide tiled at its native level (mpp 0.25, 256 px: JPEG streams copied):
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

CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"
GRIDS = {"256@0.5": (256, None), "224@0.5": (224, None), "256@0.5 stride 128": (256, 128)}

# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
_CHILD = """
import json, sys, time
from tiling import tile_slide_result
stride = None if sys.argv[4] == "none" else int(sys.argv[4])
batches = []  # (time, tiles) as each shard is written: the rate once tissue detection and set-up are done
t = time.perf_counter()
r = tile_slide_result(sys.argv[1], sys.argv[2], size=int(sys.argv[3]), mpp=0.5, stride=stride, codec="lz4",
                      exact=sys.argv[5] == "exact", overwrite=True,
                      on_tiles=lambda n: batches.append((time.perf_counter(), n)))
seconds = time.perf_counter() - t
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
shards = sum(n for _, n in batches[1:]) / (batches[-1][0] - batches[0][0]) if len(batches) > 2 else None
print(json.dumps({"tiles": r.tiles, "seconds": seconds, "rss_mb": int(hwm) / 1024, "shard_rate": shards}))
"""


def ensure_slide(folder: Path, size: int, bank: int | None = None) -> Path:
    """An SVS of `size` x `size` px at 0.25 um/px tiled with mirrored copies of CMU-1-Small-Region's pixels.

    `bank`: each level repeats its first `bank` x `bank` tiles, encoded once (a 100,000 px slide is then
    written in about a minute, I/O bound, instead of an hour of JPEG encoding); tissue all over, with seams
    every `bank` tiles.
    """
    from PIL import Image

    from wsi.synthetic.writer import pyramid_sizes

    path = folder / (f"cmu-mosaic-{size}.svs" if bank is None else f"cmu-bank{bank}-{size}.svs")
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
            data = (
                tiles(w, h, d)
                if bank is None
                else _repeat_bank(list(tiles(*_bank_size(w, h, bank), d)), w, h, bank)
            )
            tif.write(data, shape=(h, w, 3), dtype=np.uint8, tile=(256, 256), description=text, subfiletype=0,
                      **jpeg)  # fmt: skip
            if index == 0:
                thumb = np.asarray(Image.fromarray(pattern).resize((768, 768 * ph // pw)))
                tif.write(thumb, description=f"{desc.format(size)} -> thumbnail", rowsperstrip=16, subfiletype=0,
                          **jpeg)  # fmt: skip
    tmp.replace(path)
    return path


def _bank_size(w: int, h: int, bank: int) -> tuple[int, int]:
    return min(w, bank * 256), min(h, bank * 256)


def _repeat_bank(tiles: list[np.ndarray], w: int, h: int, bank: int):
    """Encoded tiles of a w x h level (row-major) cycling through the bank's tiles, each JPEG-encoded once the
    way tifffile encodes them (a small TIFF written in memory)."""
    import io

    bw, bh = _bank_size(w, h, bank)
    across, down = -(-bw // 256), -(-bh // 256)
    image = np.zeros((down * 256, across * 256, 3), np.uint8)
    for i, tile in enumerate(tiles):
        ty, tx = divmod(i, across)
        image[ty * 256 : ty * 256 + 256, tx * 256 : tx * 256 + 256] = tile
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, image, tile=(256, 256), compression="jpeg", compressionargs={"level": 85},
                     photometric="rgb", metadata=None)  # fmt: skip
    with tifffile.TiffFile(io.BytesIO(buffer.getvalue())) as tif:
        page = tif.pages[0]
        assert not page.jpegtables, "bank tiles must be self-contained JPEG streams"
        data = buffer.getvalue()
        encoded = [data[o : o + n] for o, n in zip(page.dataoffsets, page.databytecounts, strict=True)]
    for ty in range(-(-h // 256)):
        for tx in range(-(-w // 256)):
            yield encoded[(ty % down) * across + tx % across]


def tile_in_child(slide: Path, store: Path, size: int, stride: int | None, mode: str) -> dict:
    args = [str(slide), str(store), str(size), str(stride or "none"), mode]
    out = subprocess.run([sys.executable, "-c", _CHILD, *args], check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def covered_tiles(coords: np.ndarray, box: int, across: int, down: int, tile: int = 256) -> np.ndarray:
    """Indices (row, column) of the native tiles that the level-0 boxes at `coords` cover, each once."""
    seen = set()
    for x, y in coords:
        for ty in range(y // tile, min(down, (y + box - 1) // tile + 1)):
            for tx in range(x // tile, min(across, (x + box - 1) // tile + 1)):
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
        down = -(-page.imagelength // page.tilelength)
        for ty, tx in covered_tiles(coords, box, across, down):
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


def decoder_table(slide: Path, tiles: int = 40, repeats: int = 7) -> list[tuple[str, float]]:
    """ms per native 256 px tile, one thread (best of `repeats` passes over `tiles` tissue tiles), for the
    ways to get a tile at half size: full decode + area resize, and DCT-scaled decodes (Pillow, simplejpeg)."""
    import io

    import simplejpeg
    from PIL import Image

    import wsi
    from tiling.reader import NativeTiles
    from tiling.resample import _ADOBE_RGB, decode_scaled

    with wsi.open_slide(slide) as s:
        native = NativeTiles.open_level(slide, 0, s.meta.level_dimensions[0], 1.0)
    mid = native.height // 2 // 256 * 256
    streams = [native.read_stream(256 * i, mid) for i in range(tiles)]
    marked = [st[:2] + _ADOBE_RGB + st[2:] for st in streams]

    def pillow_draft(st):
        with Image.open(io.BytesIO(st)) as im:
            im.draft("RGB", (128, 128))
            return np.asarray(im.convert("RGB"))

    def full_area(st):
        return np.asarray(Image.fromarray(native._decode(st)).resize((128, 128), Image.Resampling.BOX))

    ways = {
        "imagecodecs full decode": (native._decode, streams),
        "imagecodecs full decode + area resize to 1/2": (full_area, streams),
        "simplejpeg full decode": (lambda st: simplejpeg.decode_jpeg(st, colorspace="RGB"), marked),
        "Pillow draft, DCT 1/2": (pillow_draft, marked),
        "simplejpeg, DCT 1/2 (used)": (lambda st: decode_scaled(st, 2, "RGB"), streams),
        "simplejpeg, DCT 1/4 (used)": (lambda st: decode_scaled(st, 4, "RGB"), streams),
    }
    best = {name: float("inf") for name in ways}
    for _ in range(repeats):
        for name, (fn, data) in ways.items():
            start = time.perf_counter()
            for st in data:
                fn(st)
            best[name] = min(best[name], (time.perf_counter() - start) / len(data) * 1e3)
    return list(best.items())


def non_jpeg_rates(folder: Path, size: int = 8192) -> list[tuple[str, str, float, float]]:
    """Tiles/s on one thread of `TileReader` (tile-by-tile decode, cached) against read_region + resize, on a
    deflate-compressed tiled TIFF (single level, 0.25 um/px) cut from the mosaic, for each grid."""
    import wsi
    from tiling.config import TilingConfig
    from tiling.grid import TileSpec
    from tiling.reader import TileReader

    path = folder / f"cmu-mosaic-deflate-{size}.tiff"
    if not path.exists():
        with tifffile.TiffFile(ensure_slide(folder, 16_384)) as tif:
            image = tif.pages[0].asarray()[:size, :size]
        tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", compression="zlib",
                         resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")  # fmt: skip
    rows = []
    with wsi.open_slide(path) as slide:
        for name, (tile, stride) in GRIDS.items():
            spec = TileSpec.for_slide(slide, TilingConfig(size=tile, mpp=0.5, stride=stride))
            step = spec.stride_level0
            coords = np.array([(round(i * step), round(j * step)) for j in range(int(size // step))
                               for i in range(int(size // step))])[:400]  # fmt: skip
            reader = TileReader(path, spec)
            reader.read(0, 0)  # set-up and check
            start = time.perf_counter()
            reader.read_many(coords)
            ours = len(coords) / (time.perf_counter() - start)
            start = time.perf_counter()
            for x, y in coords:
                region = slide.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
                wsi.resize_rgb(region, (tile, tile))
            rows.append((name, reader.path_name, ours, len(coords) / (time.perf_counter() - start)))
    return rows


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


def resampled_main(args) -> None:
    """The grids of issue 13: resampled, unaligned and overlapping."""
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = ensure_slide(folder, args.size)

    from tiling import PatchStore

    print(f"slide {slide.name}: {args.size} x {args.size} px at 0.25 um/px, 256 px JPEG tiles; "
          f"{os.cpu_count()} cores; tile_slide codec lz4")  # fmt: skip
    print("\ndecoders, ms per native 256 px tile, one thread (best of 7 passes over 40 tiles):")
    for name, ms in decoder_table(slide):
        print(f"  {name:46s} {ms:.3f}")
    print("\nnon-JPEG (deflate) tiled TIFF, 8,192 px, one thread, up to 400 tiles per grid:")
    for name, path, ours, region in non_jpeg_rates(folder):
        print(f"  {name:20s} TileReader ({path}) {ours:.0f} tiles/s, read_region + resize {region:.0f} tiles/s "
              f"-> {ours / region:.1f}x")  # fmt: skip
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
            for label, run, rate in (("default (DCT)", fast, rate_fast), ("exact", exact, rate_exact)):
                print(f"  tile_slide {label:13s}: {rate:.0f} tiles/s end to end -> {rate / floor:.2f} of the floor; "
                      f"after start-up {run['shard_rate']:.0f} tiles/s -> {run['shard_rate'] / floor:.2f}; "
                      f"peak RSS {run['rss_mb']:.0f} MB")  # fmt: skip
            print(f"  naive openslide read_region + resize loop (1 thread): {naive:.0f} tiles/s -> default is "
                  f"{rate_fast / naive:.1f}x")  # fmt: skip
            a, b = diffs["area"], diffs["resize_rgb"]
            print(f"  default pixels vs read_region + area resize: mean {a[0]:.2f}, max {a[1]}; "
                  f"vs read_region + resize_rgb (= exact): mean {b[0]:.2f}, max {b[1]}")  # fmt: skip


# Peak RSS from VmHWM: ru_maxrss survives exec on Linux and would report the parent's peak.
_NATIVE_CHILD = """
import json, sys, time
from tiling import tile_slide_result
t = time.perf_counter()
r = tile_slide_result(sys.argv[1], sys.argv[2], size=256, mpp=0.25, codec=sys.argv[3], overwrite=True)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM")][0].split()[1]
print(json.dumps({"tiles": r.tiles, "seconds": time.perf_counter() - t, "codec": r.store.codec,
                  "rss_mb": int(hwm) / 1024}))
"""


def ensure_synthetic(folder: Path, size: int) -> Path:
    from wsi.synthetic import SyntheticSpec, write_slide

    path = folder / f"synthetic-{size}.svs"
    if not path.exists():
        print(f"writing synthetic slide {size} x {size} (cached in {folder}) ...", flush=True)
        write_slide(path, SyntheticSpec(size, size, mpp=0.25, seed=11, tumor=True), progress=False)
    return path


def native_in_child(slide: Path, store: Path, codec: str) -> dict:
    out = subprocess.run([sys.executable, "-c", _NATIVE_CHILD, str(slide), str(store), codec], check=True,
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


def native_decode_floor(blobs: list[bytes]) -> float:
    workers = os.cpu_count() or 1
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(imagecodecs.jpeg8_decode, blobs[:64]))
        start = time.perf_counter()
        list(pool.map(imagecodecs.jpeg8_decode, blobs, chunksize=64))
        return len(blobs) / (time.perf_counter() - start)


def naive_png_loop(slide: Path, coords: np.ndarray, folder: Path) -> float:
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


def native_main(args) -> None:
    """The aligned case: tiles at the slide's own level and tile size (JPEG streams copied)."""
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = ensure_synthetic(folder, args.size)

    from tiling import PatchStore

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        store_path = tmp / "main.zarr"
        run = native_in_child(slide, store_path, "auto")
        coords = PatchStore.open(store_path).coords
        rate = run["tiles"] / run["seconds"]
        print(f"slide {args.size} x {args.size}: {run['tiles']} tissue tiles of 256 px at 0.25 um/px, "
              f"codec {run['codec']}")  # fmt: skip
        print(f"tile_slide end to end: {run['seconds']:.1f} s, {rate:.0f} tiles/s, "
              f"{rate * 256 * 256 / 1e6:.0f} MPix/s, peak RSS {run['rss_mb']:.0f} MB")  # fmt: skip
        blobs = raw_tiles(slide, coords)
        floor = native_decode_floor(blobs)
        print(f"decode floor (imagecodecs, {os.cpu_count()} cores): {floor:.0f} tiles/s -> ratio {rate / floor:.2f} "
              "(target >= 0.5)")  # fmt: skip
        (tmp / "png").mkdir()
        sample = coords[
            np.random.default_rng(0).choice(len(coords), min(args.naive_tiles, len(coords)), replace=False)
        ]
        naive = naive_png_loop(slide, sample, tmp / "png")
        print(
            f"naive openslide read_region + PNG loop: {naive:.0f} tiles/s -> ratio {rate / naive:.1f} (target >= 20)"
        )
        print("\ncodec                              encode/core   compression   tile_slide end to end")
        end_to_end = {"jpeg (copy of the slide's tiles)": rate}
        for name in ("lz4", "zstd"):
            other = native_in_child(slide, tmp / f"{name}.zarr", name)
            end_to_end[name] = other["tiles"] / other["seconds"]
        for name, encode, ratio in codec_table(blobs[:1000]):
            e2e = f"{end_to_end[name]:.0f} tiles/s" if name in end_to_end else ""
            enc = "no encode" if encode == float("inf") else f"{encode:.0f} tiles/s"
            print(f"{name:34s} {enc:>12s}   {ratio:9.2f}x   {e2e}")
        sizes = [20_000] + ([100_000] if args.big else [args.size])
        print("\npeak RSS of tile_slide (fresh process):")
        rss = []
        for size in sizes:
            path = ensure_synthetic(folder, size)
            result = native_in_child(path, tmp / f"rss{size}.zarr", "auto")
            rss.append(result["rss_mb"])
            print(f"  {size:>7} px: {result['rss_mb']:.0f} MB ({result['tiles']} tiles)")
        print(f"  growth {rss[-1] / rss[0] - 1:+.0%} (target < 25%, and under 1,500 MB)")


def memory_main(args) -> None:
    """Peak RSS of resampled tiling on a large mosaic against a 20,000 px one (the caches are bounded; what
    grows with the slide is the grid and the tissue work image)."""
    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    runs = [(256, None, "fast"), (256, None, "exact"), (256, 128, "fast")]
    with tempfile.TemporaryDirectory() as tmp:
        for side in (20_000, args.size):
            slide = ensure_slide(folder, side, bank=16)
            for size, stride, mode in (
                runs if side == 20_000 else runs[:1]
            ):  # the large one: about 20 min each
                run = tile_in_child(slide, Path(tmp) / "m.zarr", size, stride, mode)
                print(f"{side:>7} px, {size} px at 0.5 um/px, stride {stride or size}, {mode:5s}: {run['tiles']} tiles "
                      f"in {run['seconds']:.0f} s, peak RSS {run['rss_mb']:.0f} MB (target < 1,500)", flush=True)  # fmt: skip


def strips_main() -> None:
    """read_region path: strips of overlapping neighbours against one read per tile (CMU-1-Small-Region)."""
    import wsi
    from tiling.config import TilingConfig
    from tiling.grid import TileGrid
    from tiling.reader import TileReader

    grids = [(256, 0.499, None), (256, 0.499, 128), (128, 1.0, None), (128, 1.0, 64)]
    with wsi.open_slide(CMU, backend="openslide") as slide:
        for size, mpp, stride in grids:
            grid = TileGrid.from_config(slide, TilingConfig(size=size, mpp=mpp, stride=stride, min_tissue=0))
            reader = TileReader(CMU, grid.spec, backend="openslide", native=False)
            batched = reader.read_many(grid.coords[:8])  # opens the slide, checks the first strip
            best = {"strips": float("inf"), "tile by tile": float("inf")}
            for _ in range(3):
                start = time.perf_counter()
                single = np.stack([reader.read(int(x), int(y)) for x, y in grid.coords])
                best["tile by tile"] = min(best["tile by tile"], time.perf_counter() - start)
                start = time.perf_counter()
                batched = reader.read_many(grid.coords)
                best["strips"] = min(best["strips"], time.perf_counter() - start)
            assert np.array_equal(batched, single) and reader.path_name == "read_region"
            rates = {k: len(grid) / v for k, v in best.items()}
            print(f"{size} px at {mpp} um/px, stride {stride or size}: {len(grid)} tiles; read_many "
                  f"{rates['strips']:.0f} tiles/s, one read_region per tile {rates['tile by tile']:.0f} tiles/s "
                  f"-> {rates['strips'] / rates['tile by tile']:.2f}x (same pixels)", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--native", action="store_true", help="the aligned case instead (see above)")
    parser.add_argument("--memory", action="store_true", help="peak RSS on a large mosaic (see above)")
    parser.add_argument("--strips", action="store_true", help="the read_region path, strips (see above)")
    parser.add_argument("--size", type=int, help="side of the slide (default 24,576; 50,000 with --native)")
    parser.add_argument("--big", action="store_true", help="--native: peak RSS on a 100,000 px slide too")
    parser.add_argument("--data", default="bench-data", help="folder caching the slides")
    parser.add_argument("--naive-tiles", type=int, default=200)
    args = parser.parse_args()
    if args.native:
        args.size = args.size or 50_000
        native_main(args)
    elif args.strips:
        strips_main()
    elif args.memory:
        args.size = args.size or 100_000
        memory_main(args)
    else:
        args.size = args.size or 24_576
        resampled_main(args)


if __name__ == "__main__":
    main()

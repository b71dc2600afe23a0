"""Write synthetic slides as pyramidal, tiled, JPEG-compressed Aperio-SVS-style TIFFs, tile by tile.

Layout (what openslide's Aperio driver and tifffile's SVS series expect): page 0 is level 0, page 1 a stripped
thumbnail, pages 2.. the reduced levels (each 4x smaller, not marked as reduced); the ImageDescription starts with
"Aperio " and carries AppMag and MPP. Tiles are rendered on demand, so memory does not grow with the slide.
"""

from __future__ import annotations

import json
import math
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image
from tqdm.auto import tqdm

from wsi.atomic import atomic_file
from wsi.deprecation import renamed_keywords
from wsi.synthetic.content import SyntheticSpec, field_at, nuclei_in_box, render_region

__all__ = ["SyntheticSlide", "pyramid_sizes", "truth_downsample", "write_slide"]

_APERIO = "Aperio Image Library v12.0.16"
_LEVEL_FACTOR = 4
# Nuclei polygons are written to GeoJSON only up to this many level-0 pixels (bigger slides: nuclei_in_box()).
NUCLEI_GEOJSON_MAX_PIXELS = 150_000_000


@dataclass(frozen=True)
class SyntheticSlide:
    """Where a synthetic slide and its ground truth were written."""

    path: Path
    spec: SyntheticSpec
    truth: Path
    tissue_mask: Path
    tumor_mask: Path
    nuclei: Path | None
    mask_downsample: int
    level_dimensions: tuple[tuple[int, int], ...]


def pyramid_sizes(width: int, height: int, tile: int) -> list[tuple[int, int, int]]:
    """(w, h, downsample) per level: 4x steps while the level is still larger than a couple of tiles."""
    levels = [(width, height, 1)]
    d = _LEVEL_FACTOR
    while max(width // d, height // d) >= 4 * tile and min(width // d, height // d) >= tile // 2:
        levels.append((width // d, height // d, d))
        d *= _LEVEL_FACTOR
    return levels


def truth_downsample(width: int, height: int) -> int:
    """Downsample of the ground-truth masks: a power of two, at least 8, keeping masks under 4096 px."""
    return max(8, 2 ** math.ceil(math.log2(max(width, height) / 4096)))


def _ordered_map(fn: Callable, items: list, workers: int) -> Iterator:
    """Map in threads, yielding in order, with at most 2 * workers results in flight (bounded memory)."""
    if workers <= 1:
        yield from map(fn, items)
        return
    with ThreadPoolExecutor(workers) as pool:
        pending: deque = deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _render_in_tiles(spec: SyntheticSpec, size: tuple[int, int], downsample: float, tile: int) -> np.ndarray:
    """A whole image at `downsample`, rendered tile by tile (one call over a large slide would hold every
    nucleus of the slide in memory at once)."""
    w, h = size
    out = np.empty((h, w, 3), np.uint8)
    for y in range(0, h, tile):
        for x in range(0, w, tile):
            tw, th = min(tile, w - x), min(tile, h - y)
            out[y : y + th, x : x + tw] = render_region(
                spec, (x * downsample, y * downsample), (tw, th), downsample
            )[0]
    return out


def _power_text(mpp: float) -> str:
    power = 10.0 / mpp
    return str(int(round(power))) if abs(power - round(power)) < 1e-6 else f"{power:.3g}"


def _render_mask(spec: SyntheticSpec, downsample: int) -> tuple[np.ndarray, np.ndarray]:
    w, h = math.ceil(spec.width / downsample), math.ceil(spec.height / downsample)
    xs = (np.arange(w) + 0.5) * downsample
    tissue = np.zeros((h, w), dtype=bool)
    tumor = np.zeros((h, w), dtype=bool)
    for r0 in range(0, h, 256):
        ys = (np.arange(r0, min(h, r0 + 256)) + 0.5) * downsample
        t, u = field_at(spec, xs[None, :], ys[:, None])
        tissue[r0 : r0 + len(ys)], tumor[r0 : r0 + len(ys)] = t, u
    return tissue, tumor


# QuPath classes of the nucleus kinds (content.NUCLEUS_KINDS: fibroblast, epithelial, tumor, lymphocyte).
_NUCLEUS_CLASSES = ("Stroma", "Epithelial", "Tumor", "Immune cells")


def _write_nuclei(spec: SyntheticSpec, path: Path) -> int:
    from shapely.geometry import Polygon

    from wsi import qupath

    objects = []
    block = 4096
    for y0 in range(0, spec.height, block):
        for x0 in range(0, spec.width, block):
            nuc = nuclei_in_box(spec, (x0, y0, min(x0 + block, spec.width), min(y0 + block, spec.height)))
            for i, outline in enumerate(nuc.polygons()):
                objects.append(
                    qupath.QuPathObject(
                        geometry=Polygon(outline),
                        object_type="detection",
                        classification=_NUCLEUS_CLASSES[int(nuc.kind[i])],
                        measurements={"truth_id": int(nuc.ids[i])},
                    )
                )
    qupath.write_geojson(path, objects)
    return len(objects)


@renamed_keywords(workers="render_workers")
def write_slide(
    path: str | Path,
    spec: SyntheticSpec,
    tile_size: int = 256,
    quality: int = 85,
    render_workers: int | None = None,
    progress: bool = True,
) -> SyntheticSlide:
    """Write `spec` as an SVS-like slide at `path` plus ground truth beside it (<stem>.truth.json, masks, nuclei)."""
    if isinstance(tile_size, bool) or not isinstance(tile_size, int) or tile_size < 16 or tile_size % 16:
        raise ValueError(f"tile_size must be a positive multiple of 16 (TIFF tiles), got {tile_size!r}")
    if isinstance(quality, bool) or not isinstance(quality, int) or not 1 <= quality <= 100:
        raise ValueError(f"quality must be a JPEG quality between 1 and 100, got {quality!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    workers = render_workers or min(4, os.cpu_count() or 1)
    levels = pyramid_sizes(spec.width, spec.height, tile_size)
    w0, h0 = spec.width, spec.height
    mag = _power_text(spec.mpp)
    meta = f"|AppMag = {mag}|MPP = {spec.mpp}|Filename = {path.stem}|Seed = {spec.seed}"
    total_tiles = sum(math.ceil(w / tile_size) * math.ceil(h / tile_size) for w, h, _ in levels)
    bar = tqdm(total=total_tiles, desc=f"synth {path.name}", unit="tile", disable=not progress)

    def tiles(w: int, h: int, d: int) -> Iterator[np.ndarray]:
        boxes = [(x, y) for y in range(0, h, tile_size) for x in range(0, w, tile_size)]

        def one(xy):
            return render_region(spec, (xy[0] * d, xy[1] * d), (tile_size, tile_size), d)[0]

        for tile in _ordered_map(one, boxes, workers):
            bar.update(1)
            yield tile

    tmp = path.with_name(path.name + ".partial")
    jpeg = {"compression": "jpeg", "compressionargs": {"level": quality}, "photometric": "rgb"}
    with tifffile.TiffWriter(tmp, bigtiff=w0 * h0 * 3 > 2**31) as tif:
        for index, (w, h, d) in enumerate(levels):
            if index == 0:
                desc = f"{_APERIO}\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile_size}x{tile_size}) JPEG/RGB Q={quality}{meta}"
            else:
                desc = f"{_APERIO}\r\n{w0}x{h0} [0,0 {w0}x{h0}] ({tile_size}x{tile_size}) -> {w}x{h} JPEG/RGB Q={quality}"
            tif.write(
                tiles(w, h, d), shape=(h, w, 3), dtype=np.uint8, tile=(tile_size, tile_size), description=desc,
                subfiletype=0, metadata=None, **jpeg,
            )  # fmt: skip
            if index == 0:
                scale = min(1.0, 768 / max(w0, h0))
                tw, th = max(1, int(w0 * scale)), max(1, int(h0 * scale))
                thumb = _render_in_tiles(spec, (tw, th), w0 / tw, tile_size)
                tif.write(
                    thumb, description=f"{_APERIO}\r\n{w0}x{h0} -> {tw}x{th} - {meta}", rowsperstrip=16,
                    subfiletype=0, metadata=None, **jpeg,
                )  # fmt: skip
    bar.close()
    # The ground truth first, the slide last: one interrupted in between leaves no slide without its truth (the
    # demo would refuse it as not its own), and a re-run writes both again.
    written = _write_truth(path, spec, tuple((w, h) for w, h, _ in levels))
    tmp.replace(path)
    return written


def _write_truth(path: Path, spec: SyntheticSpec, level_dimensions) -> SyntheticSlide:
    d = truth_downsample(spec.width, spec.height)
    tissue, tumor = _render_mask(spec, d)
    stem = path.with_suffix("")
    tissue_path, tumor_path = Path(f"{stem}.tissue.png"), Path(f"{stem}.tumor.png")
    Image.fromarray(tissue.astype(np.uint8) * 255).save(tissue_path)
    Image.fromarray(tumor.astype(np.uint8) * 255).save(tumor_path)
    nuclei_path = None
    count = None
    if spec.width * spec.height <= NUCLEI_GEOJSON_MAX_PIXELS:
        nuclei_path = Path(f"{stem}.nuclei.geojson")
        count = _write_nuclei(spec, nuclei_path)
    truth = Path(f"{stem}.truth.json")
    record = {
        "format": "slidestream.synthetic/1",
        "slide": path.name,
        "spec": asdict(spec),
        "mask_downsample": d,
        "tissue_mask": tissue_path.name,
        "tumor_mask": tumor_path.name,
        "tissue_fraction": float(tissue.mean()),
        "tumor_fraction": float(tumor.mean()),
        "nuclei": nuclei_path.name if nuclei_path else None,
        "nuclei_count": count,
        "note": "Masks: pixel (i, j) covers level-0 box [j*d, (j+1)*d) x [i*d, (i+1)*d). Nuclei for any region: "
        "wsi.synthetic.nuclei_in_box(spec, box); instance labels: render_region(..., with_labels=True).",
    }
    with atomic_file(truth) as tmp:
        tmp.write_text(json.dumps(record, indent=2))
    return SyntheticSlide(path, spec, truth, tissue_path, tumor_path, nuclei_path, d, level_dimensions)

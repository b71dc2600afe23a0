"""Nuclei over whole slides: tiles over the tissue (or an ROI) at the segmenter's mpp, each read with a halo; a
nucleus belongs to the tile whose core holds its centroid, so nuclei across tile borders come out once and whole.

    table = nuclei.segment_slide(slide)                      # shipped CNN over the detected tissue
    table = nuclei.segment_slide(slide, model="classical")   # the classical baseline
    for shard, part in nuclei.iter_slide_nuclei(plan, segmenter): ...   # bounded memory, shard by shard

A nuclei table is a pandas DataFrame with `nuclei.TABLE_COLUMNS`: centroid `x`, `y` and `geometry` (a polygon
as WKB) in level-0 pixels, the measurements and `type` / `type_probability`, and `tile` (nuclei-grid tile).
"""

from __future__ import annotations

import math
import multiprocessing
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import pandas as pd
import shapely
from shapely.geometry.base import BaseGeometry

import wsi
from nuclei.measure import TABLE_COLUMNS, Placement
from nuclei.segmenters import ClassicalSegmenter, CnnSegmenter, postprocess_tile
from nuclei.stitch import near_seam, seam_duplicates

__all__ = ["SlideNucleiConfig", "SlidePlan", "empty_table", "iter_slide_nuclei", "make_segmenter", "plan_slide",
           "segment_slide"]  # fmt: skip


@dataclass(frozen=True)
class SlideNucleiConfig:
    """How a slide is cut for nuclei. Sizes are pixels at the segmenter's mpp.

    `tile` is the core each tile owns and `halo` the context read around it on every side (it must exceed the
    radius of the largest nucleus, so an owned nucleus is whole in its tile); `batch_size` tiles go through the
    network at once; `shard_tiles` tiles make one shard (the unit of resume and of memory); `workers`
    post-processing processes (0: in the calling thread; threads inside daemonic processes such as dask
    workers); tiles with less than `min_tissue` of tissue are skipped.
    """

    tile: int = 256
    halo: int = 32
    batch_size: int = 8
    shard_tiles: int = 64
    workers: int = 1
    min_tissue: float = 1 / 64
    guard: int = 4

    def __post_init__(self):
        if (self.tile < 32 or self.halo < 0 or self.batch_size < 1 or self.shard_tiles < 1 or self.workers < 0
                or not 0 <= self.guard <= self.halo):  # fmt: skip
            raise ValueError(f"bad SlideNucleiConfig {self}: tile >= 32, halo >= 0, batch_size >= 1, "
                             "shard_tiles >= 1, workers >= 0 and 0 <= guard <= halo are needed")  # fmt: skip
        if not 0 <= self.min_tissue <= 1:
            raise ValueError(f"min_tissue must be in [0, 1], got {self.min_tissue}")


@dataclass(frozen=True)
class SlidePlan:
    """The tiles of one slide: level-0 top-left `coords` (N, 2) of each core, its level-0 side `stride0`, the
    segmenter's `mpp`, the slide's `slide_mpp`, and the region tiled with its area in mm^2."""

    slide: wsi.Slide
    config: SlideNucleiConfig
    coords: np.ndarray
    stride0: float
    mpp: float
    slide_mpp: float
    region_mm2: float

    def __len__(self) -> int:
        return len(self.coords)

    @property
    def n_shards(self) -> int:
        return math.ceil(len(self) / self.config.shard_tiles)

    def shard_range(self, shard: int) -> range:
        n = self.config.shard_tiles
        return range(shard * n, min(len(self), (shard + 1) * n))

    def core_box(self, index: int) -> tuple[int, int, int, int]:
        """Level-0 (x0, y0, x1, y1) owned by tile `index`: neighbouring cores share edges, never pixels."""
        x, y = self.coords[index]
        col, row = round(x / self.stride0), round(y / self.stride0)
        return (
            int(x),
            int(y),
            int(np.round((col + 1) * self.stride0)),
            int(np.round((row + 1) * self.stride0)),
        )

    def cores(self) -> np.ndarray:
        """(N, 4) level-0 core boxes of every tile (see `core_box`)."""
        col = np.round(self.coords[:, 0] / self.stride0)
        row = np.round(self.coords[:, 1] / self.stride0)
        x1, y1 = np.round((col + 1) * self.stride0), np.round((row + 1) * self.stride0)
        return np.column_stack([self.coords[:, 0], self.coords[:, 1], x1, y1]).astype(np.float64)

    @property
    def guard0(self) -> float:
        """The guard band in level-0 px."""
        return self.config.guard * self.stride0 / self.config.tile

    @property
    def seam_margin0(self) -> float:
        """How far inside its core a nucleus is still compared with the neighbours' (level-0 px): 12 px at the
        model's mpp (6 um at 0.5 um/px, about a nucleus radius) or the guard band, the larger."""
        return max(12, self.config.guard) * self.stride0 / self.config.tile

    def read_box(self, index: int) -> tuple[int, int, int, int]:
        """Level-0 (x, y, w, h) read for tile `index`: the core grown by the halo on every side."""
        x, y = self.coords[index]
        halo0 = self.config.halo * self.stride0 / self.config.tile
        side = round((self.config.tile + 2 * self.config.halo) * self.stride0 / self.config.tile)
        return (round(x - halo0), round(y - halo0), side, side)


def make_segmenter(model=None, device: str = "auto", mpp: float | None = None, tta: bool = False):
    """A segmenter from `model`: None (the shipped CNN), a NucleiNet, "classical", or a segmenter already (an
    object with `maps`, see `nuclei.segmenters`). `tta` (the CNN's maps averaged over four flips) is refused
    with the classical baseline or a ready segmenter (give that one its own)."""
    if tta and (hasattr(model, "maps") or isinstance(model, str)):
        raise ValueError(f"tta applies to the CNN (a NucleiNet or None), not to {model!r}")
    if hasattr(model, "maps"):
        return model
    if isinstance(model, str):
        if model != "classical":
            raise ValueError(f"model must be a NucleiNet, 'classical' or None, got {model!r}")
        return ClassicalSegmenter(mpp if mpp is not None else 0.5)
    if model is None:
        from nuclei.segment import default_model

        model = default_model(device)
    return CnnSegmenter(model, device=device, tta=tta)


def plan_slide(slide: wsi.Slide, mpp: float, config: SlideNucleiConfig | None = None,
               roi: BaseGeometry | None = None, tissue: bool | BaseGeometry = True) -> SlidePlan:  # fmt: skip
    """The nuclei tiles of `slide` at `mpp`: over the detected tissue (`tissue=True`), a given tissue geometry,
    or the whole slide (`tissue=False`), restricted to `roi` (level-0 geometry) when given; with
    `tissue=False` and an ROI, the ROI alone. Raises `wsi.MissingMppError` for a slide without mpp."""
    from tiling import TileGrid, TileSpec, detect_tissue

    config = config or SlideNucleiConfig()
    slide_mpp = slide.mpp
    spec = TileSpec(config.tile, config.tile, float(mpp), slide_mpp, 0, 1.0)
    if tissue is True:
        region = detect_tissue(slide)
    elif tissue is False:
        region = None
    else:
        region = tissue
    if roi is not None:
        region = roi if region is None else region.intersection(roi)
    grid = TileGrid.from_region(spec, slide.meta.dimensions, region, config.min_tissue)
    w0, h0 = slide.meta.dimensions
    area_px = float(w0 * h0) if region is None else float(region.area)
    return SlidePlan(slide, config, grid.coords, spec.stride_level0, float(mpp), slide_mpp,
                     area_px * slide_mpp**2 / 1e6)  # fmt: skip


def _read_tile(slide: wsi.Slide, box: tuple[int, int, int, int], out: int, mpp: float) -> np.ndarray:
    """(out, out, 3) pixels of the level-0 box (x, y, w, h) at `mpp`; outside the slide reads as white."""
    x, y, w, h = box
    w0, h0 = slide.meta.dimensions
    cx0, cy0, cx1, cy1 = max(0, x), max(0, y), min(w0, x + w), min(h0, y + h)
    image = np.full((out, out, 3), 255, np.uint8)
    if cx1 <= cx0 or cy1 <= cy0:
        return image
    scale = w / out
    part = slide.read((cx0, cy0), (cx1 - cx0, cy1 - cy0), mpp=mpp)
    ox, oy = round((cx0 - x) / scale), round((cy0 - y) / scale)
    part = part[: out - oy, : out - ox]
    image[oy : oy + part.shape[0], ox : ox + part.shape[1]] = part
    return image


def _executor(workers: int) -> Executor | None:
    if workers == 0:
        return None
    if multiprocessing.current_process().daemon or "fork" not in multiprocessing.get_all_start_methods():
        return ThreadPoolExecutor(workers)  # dask worker processes may not have children
    # Forked (no re-import of the caller's __main__), and started now, before the reader thread exists.
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"))
    pool.submit(int).result()
    return pool


def empty_table() -> pd.DataFrame:
    """A nuclei table without rows (the columns and their types)."""
    table = pd.DataFrame({name: pd.Series(dtype="float64") for name in TABLE_COLUMNS})
    return table.astype({"geometry": object, "type": object, "tile": "int64"})


def _table(columns: dict[str, list], tile: int, dimensions: tuple[int, int]) -> pd.DataFrame:
    """One tile's nuclei as a table, outlines clipped to the slide (edge pixels may reach past it)."""
    table = pd.DataFrame(columns) if columns["x"] else empty_table().drop(columns="tile")
    table["tile"] = np.int64(tile)
    if len(table):
        polygons = shapely.from_wkb(table["geometry"].to_numpy())
        bounds = shapely.bounds(polygons)
        out = (
            (bounds[:, 0] < 0)
            | (bounds[:, 1] < 0)
            | (bounds[:, 2] > dimensions[0])
            | (bounds[:, 3] > dimensions[1])
        )
        if out.any():
            clipped = [_largest_polygon(g) for g in shapely.clip_by_rect(polygons[out], 0, 0, *dimensions)]
            table.loc[out, "geometry"] = pd.Series(
                [None if g is None else shapely.to_wkb(g) for g in clipped], index=table.index[out]
            )
            # An outline whose largest part lies past the slide's edge leaves nothing areal: no nucleus to write.
            table = table[table["geometry"].notna()].reset_index(drop=True)
    return table


def _largest_polygon(geometry) -> shapely.Polygon | None:
    """The largest polygon of a clipped outline (clipping may split it or leave nothing), or None."""
    parts = [g for g in shapely.get_parts(geometry) if g.geom_type == "Polygon" and not g.is_empty]
    return max(parts, key=lambda g: g.area) if parts else None


def iter_slide_nuclei(plan: SlidePlan, segmenter, shards: list[int] | None = None,
                      on_tiles: Callable[[int], None] | None = None) -> Iterator[tuple[int, pd.DataFrame]]:  # fmt: skip
    """(shard, nuclei table) for each shard of `plan` (all, or those listed), in order.

    Tiles are read a batch ahead in a thread, go through `segmenter.maps` a batch at a time, and are
    post-processed in `plan.config.workers` workers while the next batch runs; memory holds one shard.
    `on_tiles(n)` is called as tiles finish (progress).
    """
    config = plan.config
    size = config.tile + 2 * config.halo
    shards = list(range(plan.n_shards)) if shards is None else shards
    classes, mpp, post = segmenter.classes, segmenter.mpp, segmenter.postprocess
    pool = _executor(config.workers)
    reader = ThreadPoolExecutor(1)
    lock = threading.Lock()  # one read at a time per slide handle

    def read(indices: list[int]) -> np.ndarray:
        with lock:
            return np.stack([_read_tile(plan.slide, plan.read_box(i), size, mpp) for i in indices])

    g = plan.guard0
    w0, h0 = plan.slide.meta.dimensions

    def placement(index: int) -> Placement:
        x, y, w, _ = plan.read_box(index)
        scale = w / size
        cx0, cy0, cx1, cy1 = plan.core_box(index)
        return Placement(x, y, scale, scale * plan.slide_mpp, owns=(cx0 - g, cy0 - g, cx1 + g, cy1 + g))

    try:
        for shard in shards:
            indices = list(plan.shard_range(shard))
            batches = [indices[i : i + config.batch_size] for i in range(0, len(indices), config.batch_size)]
            pending = reader.submit(read, batches[0]) if batches else None
            jobs = []
            for b, batch in enumerate(batches):
                images = pending.result()
                pending = reader.submit(read, batches[b + 1]) if b + 1 < len(batches) else None
                for index, work in zip(batch, segmenter.maps(images), strict=True):
                    args = (work, placement(index), classes, mpp, post)
                    jobs.append(
                        (index, pool.submit(postprocess_tile, *args) if pool else postprocess_tile(*args))
                    )
                if on_tiles:
                    on_tiles(len(batch))
            parts = [_table(job.result() if pool else job, index, (w0, h0)) for index, job in jobs]
            yield shard, (pd.concat(parts, ignore_index=True) if parts else empty_table())
    finally:
        reader.shutdown(wait=True, cancel_futures=True)
        if pool:
            pool.shutdown(wait=True, cancel_futures=True)


def segment_slide(slide: wsi.Slide, model=None, roi: BaseGeometry | None = None, tissue: bool = True,
                  mpp: float | None = None, batch_size: int = 8, device: str = "auto",
                  config: SlideNucleiConfig | None = None, progress: bool = False, tta: bool = False) -> pd.DataFrame:  # fmt: skip
    """Every nucleus of `slide` as one nuclei table (see the module docstring), in memory.

    `model`: None (the shipped CNN), a NucleiNet, or "classical". Tiles cover the detected tissue (`tissue`),
    restricted to `roi` (level-0 geometry, e.g. `tiling.load_roi(path)`), or the ROI alone with
    `tissue=False`. `mpp` defaults to the model's (the classical baseline's 0.5). `batch_size` overrides
    `config.batch_size`. `tta` averages the CNN's maps over four flips (4 forward passes per tile). For slides too large to hold every nucleus in memory, `nuclei.write_slide_nuclei`
    streams shards to disk instead.
    """
    from dataclasses import replace

    from tqdm.auto import tqdm

    segmenter = make_segmenter(model, device=device, mpp=mpp, tta=tta)
    config = replace(config or SlideNucleiConfig(), batch_size=batch_size)
    plan = plan_slide(slide, mpp if mpp is not None else segmenter.mpp, config, roi=roi, tissue=tissue)
    with tqdm(total=len(plan), desc=f"nuclei {slide.path.name}", unit="tile", disable=not progress) as bar:
        parts = [part for _, part in iter_slide_nuclei(plan, segmenter, on_tiles=bar.update)]
    table = pd.concat(parts, ignore_index=True) if parts else empty_table()
    cores = plan.cores()
    near = np.flatnonzero(near_seam(table, cores, plan.seam_margin0))
    drop = near[seam_duplicates(table.iloc[near], cores)]
    return table.drop(index=drop).reset_index(drop=True)

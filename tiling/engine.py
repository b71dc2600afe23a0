"""`tile_slide`: slide -> PatchStore, in shard-sized batches, in parallel with dask, resumable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import dask
import numpy as np
from dask.callbacks import Callback
from shapely.geometry.base import BaseGeometry
from tqdm.auto import tqdm

import wsi
from tiling.grid import TileGrid, TileSpec
from tiling.inputs import prepare_store_path, slide_identity, tiling_inputs
from tiling.reader import TileReader
from tiling.store import PatchStore, StoreError
from tiling.tissue import detect_tissue_result, write_tissue_geojson

__all__ = ["TilingConfig", "TilingResult", "tile_slide"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingConfig:
    """Everything that decides a store's content (so a changed value rewrites the store)."""

    size: int = 256
    mpp: float = 0.5
    stride: int | None = None
    min_tissue: float = 0.5
    coords_only: bool = False
    codec: str = "auto"
    shard_tiles: int = 64
    roi_mode: str = "restrict"


@dataclass(frozen=True)
class TilingResult:
    store: PatchStore
    status: str  # "done", "resumed" or "skipped" (already complete)
    tiles: int
    seconds: float
    tissue_mm2: float | None


def _slide_identity(path: Path) -> dict:
    return slide_identity(path)  # by content: a moved or copied slide is the same slide


def _fingerprint(
    identity: dict, config: TilingConfig, roi: BaseGeometry | None, mpp_override: float | None
) -> str:
    payload = {"slide": identity, "config": asdict(config), "roi": roi.wkb_hex if roi is not None else None,
               "mpp": mpp_override}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _existing(store_path: Path, fingerprint: str) -> PatchStore | None:
    """The store at `store_path` if it was made with the same inputs, else None (it will be rewritten)."""
    try:
        store = PatchStore.open(store_path, mode="r+")
    except StoreError:
        return None
    return store if store.attrs.get("fingerprint") == fingerprint else None


class _Progress(Callback):
    """Advance a tqdm bar (and tell `on_tiles`, if given) by each finished shard task."""

    def __init__(self, bar: tqdm, sizes: dict[str, int], on_tiles: Callable[[int], None] | None):
        super().__init__()
        self._bar, self._sizes, self._on_tiles = bar, sizes, on_tiles

    def _posttask(self, key, result, dsk, state, worker_id):
        name = key[0] if isinstance(key, tuple) else key
        tiles = self._sizes.get(str(name), 0)
        self._bar.update(tiles)
        if self._on_tiles is not None:
            self._on_tiles(tiles)


def _write_shard(store_path: str, reader: TileReader, shard: int, coords: np.ndarray) -> int:
    """Read the tiles at `coords` (this shard's rows) and write the shard; returns the number of tiles."""
    store = PatchStore.open(store_path, mode="r+")
    if store.patches is None:
        store.write_shard(shard, None)
    elif store.codec == "jpeg":
        store.write_shard(shard, reader.read_streams(coords))
    else:
        store.write_shard(shard, reader.read_many(coords))
    return len(coords)


def tile_slide(
    slide_or_path: wsi.Slide | str | Path,
    store_path: str | Path,
    size: int = 256,
    mpp: float = 0.5,
    stride: int | None = None,
    min_tissue: float = 0.5,
    roi: BaseGeometry | None = None,
    roi_mode: str = "restrict",
    coords_only: bool = False,
    workers: int | None = None,
    scheduler: str = "threads",
    codec: str = "auto",
    shard_tiles: int = 64,
    overwrite: bool = False,
    progress: bool = False,
    backend: str | None = None,
    slide_mpp: float | None = None,
    tissue_geojson: str | Path | None = None,
    on_tiles: Callable[[int], None] | None = None,
) -> PatchStore:
    """Tile a slide into a PatchStore at `store_path` and return it (see `tile_slide_result` for details).

    `mpp` is the target resolution; `slide_mpp` is used as the slide's own when its metadata has none. A complete
    store made with the same inputs is returned untouched; a partial or damaged one is resumed; a complete store
    made with other inputs is replaced only with `overwrite=True` (else `OptionsChanged` names the differences);
    anything at `store_path` that is not a patch store is never replaced. `scheduler` is a dask scheduler:
    "threads", "processes" or "synchronous". `codec` "auto" keeps the slide's own JPEG tiles when the grid lines up with them ("jpeg",
    exact and fastest) and uses "lz4" otherwise; "zstd" and "none" are the other choices. `on_tiles(n)` is
    called as each batch of n tiles is written (progress reporting from elsewhere, e.g. a dask worker).
    """
    return tile_slide_result(**locals()).store


def tile_slide_result(
    slide_or_path, store_path, size=256, mpp=0.5, stride=None, min_tissue=0.5, roi=None, roi_mode="restrict",
    coords_only=False, workers=None, scheduler="threads", codec="auto", shard_tiles=64, overwrite=False,
    progress=False, backend=None, slide_mpp=None, tissue_geojson=None, on_tiles=None,
) -> TilingResult:  # fmt: skip
    """`tile_slide` returning a `TilingResult` (status done / resumed / skipped, tiles, seconds, tissue area)."""
    start = time.perf_counter()
    own = not isinstance(slide_or_path, wsi.Slide)
    slide = wsi.open_slide(slide_or_path, backend=backend) if own else slide_or_path
    if own and slide.meta.mpp is None and slide_mpp is not None:
        slide.close()
        slide = wsi.open_slide(slide_or_path, backend=backend, mpp=slide_mpp)
    try:
        config = TilingConfig(
            size, float(mpp), stride, float(min_tissue), coords_only, codec, shard_tiles, roi_mode
        )
        store_path = Path(store_path)
        fingerprint = _fingerprint(_slide_identity(slide.path), config, roi, slide_mpp)
        inputs = tiling_inputs(slide.path, config, roi, slide_mpp)
        store = None if overwrite else _existing(store_path, fingerprint)
        if store is not None and store.is_complete and store.missing_chunks() and not store.reopen_shards():
            store = None  # damaged beyond its shards: rewritten from the same inputs
        if store is not None and store.is_complete:
            log.info("%s: complete store with the same inputs, skipped", store_path)
            return TilingResult(store, "skipped", len(store), time.perf_counter() - start,
                                store.attrs.get("tissue_mm2"))  # fmt: skip
        status = "resumed" if store is not None else "done"
        tissue_mm2 = None
        if store is None:
            prepare_store_path(store_path, inputs, overwrite)
            store, tissue_mm2 = _create_store(slide, store_path, config, roi, fingerprint, tissue_geojson)
        else:
            tissue_mm2 = store.attrs.get("tissue_mm2")
            for stale in store.path.glob("patches/c/**/.*.tmp"):  # shard writes cut off by the interruption
                stale.unlink()
        spec = TileSpec.from_dict(store.attrs["tiling"])
        reader = TileReader(slide.path, spec, backend=slide.meta.backend, mpp=slide.meta.mpp)
        pending = [int(i) for i in np.flatnonzero(~store.shards_done())]
        _run_shards(store, reader, pending, workers, scheduler, progress, slide.path.name, on_tiles)
        store.mark_complete(inputs=inputs)
        return TilingResult(
            PatchStore.open(store_path), status, len(store), time.perf_counter() - start, tissue_mm2
        )
    finally:
        if own:
            slide.close()


def _create_store(slide, store_path, config: TilingConfig, roi, fingerprint, tissue_geojson):
    if roi is not None and config.roi_mode == "replace":
        tissue = roi
    else:
        tissue = detect_tissue_result(slide).geometry
        tissue = tissue if roi is None else tissue.intersection(roi)
    grid = TileGrid.from_slide(slide, size=config.size, mpp=config.mpp, stride=config.stride,
                               min_tissue=config.min_tissue, tissue=tissue)  # fmt: skip
    mpp0 = slide.meta.mpp
    tissue_mm2 = float(tissue.area * mpp0**2 / 1e6) if mpp0 else None
    if tissue_geojson is not None:
        write_tissue_geojson(tissue_geojson, tissue, mpp0)
    if len(grid) == 0:
        warnings.warn(f"{slide.path}: no tiles with at least {config.min_tissue:.0%} tissue; the store is empty",
                      stacklevel=3)  # fmt: skip
    codec, colorspace = config.codec, None
    if codec in ("auto", "jpeg"):
        reader = TileReader(slide.path, grid.spec, backend=slide.meta.backend, mpp=slide.meta.mpp)
        copy = reader.can_copy_jpeg
        codec = "jpeg" if copy or codec == "jpeg" else "lz4"
        colorspace = reader.jpeg_colorspace if copy else None
    m = slide.meta
    attrs = {
        "slide": {"path": str(slide.path.resolve()), "size": os.path.getsize(slide.path),
                  "mtime": os.path.getmtime(slide.path), "backend": m.backend, "vendor": m.vendor,
                  "dimensions": list(m.dimensions), "mpp": m.mpp},
        "tiling": {**grid.spec.to_dict(), "min_tissue": config.min_tissue, "roi_mode": config.roi_mode},
        "slide_id": slide.path.stem,
        "fingerprint": fingerprint,
        "tissue_mm2": tissue_mm2,
    }  # fmt: skip
    store = PatchStore.create(store_path, grid.coords, grid.tissue, grid.edge, attrs,
                              None if config.coords_only else config.size, config.shard_tiles, codec,
                              jpeg_colorspace=colorspace)  # fmt: skip
    return store, tissue_mm2


def _run_shards(store, reader, pending, workers, scheduler, progress, name, on_tiles=None) -> None:
    if not pending:
        return
    workers = workers or os.cpu_count() or 1
    bar = tqdm(total=sum(len(store.shard_range(s)) for s in pending), desc=f"tile {name}", unit="tile",
               disable=not progress, leave=False)  # fmt: skip
    coords = store.coords  # read once; each task gets its own rows
    tasks, sizes = [], {}
    for shard in pending:
        rows = store.shard_range(shard)
        task = dask.delayed(_write_shard, pure=False)(str(store.path), reader, shard, coords[rows.start : rows.stop],
                                                      dask_key_name=f"shard-{shard}-{store.path.name}")  # fmt: skip
        tasks.append(task)
        sizes[f"shard-{shard}-{store.path.name}"] = len(store.shard_range(shard))
    try:
        with _Progress(bar, sizes, on_tiles):
            dask.compute(*tasks, scheduler=scheduler, num_workers=workers)
    finally:
        bar.close()

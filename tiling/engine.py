"""`tile_slide`: slide -> PatchStore, in shard-sized batches, in parallel with dask, resumable."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import dask
import numpy as np
from dask.callbacks import Callback
from shapely.geometry.base import BaseGeometry
from tqdm.auto import tqdm

import wsi
from tiling.config import TilingConfig, resolve_config
from tiling.grid import TileGrid, TileSpec, detection_min_area_um2, min_fragment_area, tile_region
from tiling.inputs import prepare_store_path, slide_identity, tiling_inputs
from tiling.qc import QCParams, flag_tiles, measure_tiles
from tiling.reader import TileReader
from tiling.store import PatchStore, StoreError
from tiling.tissue import TissueResult, detect_tissue_result, load_roi, write_tissue_geojson
from wsi.thread_warnings import record_warnings

__all__ = ["TilingConfig", "TilingResult", "open_for_tiling", "tile_slide", "tile_slide_result"]

log = logging.getLogger(__name__)

# Store attribute: how the tiles were read (`TileReader.path_name`); a partial store is resumed only by a run
# that reads the same way, so that one store never holds tiles of two kinds.
READ_PATH = "read_path"


@dataclass(frozen=True)
class TilingResult:
    """What `tile_slide_result` did; `tissue_mm2` is None for a slide without mpp.

    `tissue` is the tissue detection of this call (its work image serves as a thumbnail without reading the
    slide again); None when no tissue was detected here (skipped or resumed stores, a replacing ROI).
    `warnings` are the quality-control warnings of the store (no tissue, no tiles, upsampling), kept in its
    attributes so that a skipped or resumed store still reports them. `region` is the level-0 geometry the grid
    was laid on (tissue within the ROI; what `tissue_geojson` receives), None when the store was not made here.
    """

    store: PatchStore
    status: str  # "done", "resumed" or "skipped" (already complete)
    tiles: int
    seconds: float
    tissue_mm2: float | None
    tissue: TissueResult | None = None
    warnings: tuple[str, ...] = ()
    region: BaseGeometry | None = None


def _slide_identity(path: Path) -> dict:
    return slide_identity(path)  # by content: a moved or copied slide is the same slide


def _fingerprint(identity: dict, config: TilingConfig, roi: BaseGeometry | None) -> str:
    """A hash of everything that decides the store's content (laid out as before TilingConfig held
    slide_mpp, so that stores made then are still recognised)."""
    content = config.content()
    slide_mpp = content.pop("slide_mpp")
    payload = {"slide": identity, "config": content, "roi": roi.wkb_hex if roi is not None else None,
               "mpp": slide_mpp}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _existing(store_path: Path, fingerprint: str) -> PatchStore | None:
    """The store at `store_path` if it was made with the same inputs, else None (then `prepare_store_path`
    decides whether it may be replaced)."""
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
        self._thread = threading.get_ident()

    def _posttask(self, key, result, dsk, state, worker_id):
        if threading.get_ident() != self._thread:  # dask callbacks are global: another slide's thread
            return
        name = key[0] if isinstance(key, tuple) else key
        tiles = self._sizes.get(str(name), 0)
        self._bar.update(tiles)
        if self._on_tiles is not None:
            self._on_tiles(tiles)


def _write_shard(store_path: str, reader: TileReader, shard: int, coords: np.ndarray,
                 on_patches: Callable[[int, np.ndarray], None] | None = None) -> int:  # fmt: skip
    """Read the tiles at `coords` (this shard's rows) and write the shard; returns the number of tiles. With
    `on_patches`, a shard of pixels (not JPEG streams) is handed to it once written: (its first row, patches)."""
    store = PatchStore.open(store_path, mode="r+")
    if store.patches is None:
        store.write_shard(shard, None)
    elif store.codec == "jpeg":
        store.write_shard(shard, reader.read_streams(coords))
    else:
        patches = reader.read_many(coords)
        store.write_shard(shard, patches)
        if on_patches is not None:
            on_patches(store.shard_range(shard).start, patches)
    return len(coords)


def tile_slide(
    slide_or_path: wsi.Slide | str | Path,
    store_path: str | Path,
    config: TilingConfig | None = None,
    *,
    roi: BaseGeometry | str | Path | None = None,
    tissue_geojson: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_tiles: Callable[[int], None] | None = None,
    **overrides: Any,
) -> PatchStore:
    """Tile a slide into a PatchStore at `store_path` and return it.

    Options come from `config` (default `TilingConfig()`) with `overrides` (TilingConfig fields, e.g.
    `size=224, mpp=0.25`) applied; an unknown name is a TypeError. `roi` is a level-0 geometry or a QuPath
    GeoJSON file of annotations (see `TilingConfig.roi_mode`). A complete store made with the same inputs is
    returned untouched; a partial or damaged one is resumed (missing shards are rewritten); a complete store
    made with other inputs is replaced only with `overwrite=True` (else `tiling.inputs.OptionsChanged` names the
    differences); anything at `store_path` that is not a patch store is never replaced (`StoreError`).
    `tissue_geojson` receives the tissue as QuPath annotations when the store is made. With `qc` checks
    (tiling.qc) every tile is measured first and the flagged ones are left out of the store. `on_tiles(n)` is
    called as each batch of n tiles is written (progress reporting from elsewhere, e.g. a dask worker).
    `tile_slide_result` returns the status, tile count, time and tissue area as well.
    """
    config = resolve_config(config, overrides)
    return tile_slide_result(slide_or_path, store_path, config, roi=roi, tissue_geojson=tissue_geojson,
                             overwrite=overwrite, progress=progress, on_tiles=on_tiles).store  # fmt: skip


def tile_slide_result(
    slide_or_path: wsi.Slide | str | Path,
    store_path: str | Path,
    config: TilingConfig | None = None,
    *,
    roi: BaseGeometry | str | Path | None = None,
    tissue_geojson: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    on_tiles: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    on_patches: Callable[[int, np.ndarray], None] | None = None,
    **overrides: Any,
) -> TilingResult:
    """`tile_slide` returning a `TilingResult` (status done / resumed / skipped, tiles, seconds, tissue area,
    quality-control warnings). `on_total(n)` is called once with the number of tiles left to write, before
    `on_tiles` is (a progress total from elsewhere); not at all for a skipped store. `on_patches(row, patches)`
    receives each shard of pixels as written (the first row it holds, (n, S, S, 3) uint8): the same pixels
    as the store holds with a lossless codec; never called for a "jpeg" store (it holds streams), a
    coords-only one, or with the "processes" scheduler (the shards are written in other processes); from the
    tiling's threads when `shard_workers` > 1."""
    start = time.perf_counter()
    config = resolve_config(config, overrides)
    if isinstance(roi, str | Path):
        roi = load_roi(roi)
    own = not isinstance(slide_or_path, wsi.Slide)
    slide = open_for_tiling(slide_or_path, config) if own else slide_or_path
    try:
        store_path = Path(store_path)
        identity = _slide_identity(slide.path)  # hashed once: the fingerprint and the recorded inputs
        fingerprint = _fingerprint(identity, config, roi)
        inputs = tiling_inputs(slide.path, config, roi, identity)
        store = None if overwrite else _existing(store_path, fingerprint)
        if store is not None and store.is_complete and store.missing_chunks() and not store.reopen_shards():
            store = None  # damaged beyond its shards: rewritten from the same inputs
        if store is not None and store.is_complete:
            log.info("%s: complete store with the same inputs, skipped", store_path)
            return TilingResult(store, "skipped", len(store), time.perf_counter() - start,
                                store.attrs.get("tissue_mm2"), warnings=tuple(store.attrs.get("warnings", ())))  # fmt: skip
        reader = tissue = region = None
        if store is not None:
            reader = _reader(slide, TileSpec.from_dict(store.attrs["tiling"]), config)
            if store.patches is not None and store.attrs.get(READ_PATH) != reader.path_name:
                # Tiles read another way (a DCT-scaled or read_region tile next to an exact one) would mix
                # in one store: start it again.
                log.warning("%s: partial store written by the %r path, this run reads by %r: rewritten",
                            store_path, store.attrs.get(READ_PATH), reader.path_name)  # fmt: skip
                reader.close()  # _create_store opens its own; this one would leak its slide handle
                store = None
        status = "resumed" if store is not None else "done"
        if store is None:
            prepare_store_path(store_path, inputs, overwrite)
            store, tissue, region, reader = _create_store(slide, store_path, config, roi, fingerprint,
                                                          tissue_geojson)  # fmt: skip
        else:
            for stale in store.path.glob("patches/c/**/.*.tmp"):  # shard writes cut off by the interruption
                stale.unlink()
        pending = [int(i) for i in np.flatnonzero(~store.shards_done())]
        if on_total is not None:
            on_total(sum(len(store.shard_range(s)) for s in pending))
        try:
            _run_shards(store, reader, pending, config, progress, slide.path.name, on_tiles, on_patches)
        finally:
            reader.close()  # the slide handles its threads opened
        store.mark_complete(inputs=inputs)
        return TilingResult(PatchStore.open(store_path), status, len(store), time.perf_counter() - start,
                            store.attrs.get("tissue_mm2"), tissue, tuple(store.attrs.get("warnings", ())),
                            region)  # fmt: skip
    finally:
        if own:
            slide.close()


def open_for_tiling(path: str | Path, config: TilingConfig) -> wsi.Slide:
    """The slide at `path` as `tile_slide` opens it: with `config.backend`, and `config.slide_mpp` as its
    resolution when the file records none. The caller closes it."""
    slide = wsi.open_slide(path, backend=config.backend)
    if slide.meta.mpp is None and config.slide_mpp is not None:
        slide.close()
        slide = wsi.open_slide(path, backend=config.backend, slide_mpp=config.slide_mpp)
    return slide


def _reader(slide: wsi.Slide, spec: TileSpec, config: TilingConfig) -> TileReader:
    return TileReader(slide.path, spec, backend=slide.meta.backend, slide_mpp=slide.meta.mpp, exact=config.exact,
                      slide=slide)  # fmt: skip


# Tiles finer than the slide's own resolution by more than this factor are upsampled: warned about.
UPSAMPLING_TOLERANCE = 1.1


def upsampling_warning(path, slide_mpp: float | None, mpp: float) -> str | None:
    """The warning for tiles asked at `mpp` from a slide scanned at `slide_mpp`, when that upsamples them by
    more than `UPSAMPLING_TOLERANCE` (10%); None otherwise."""
    if not slide_mpp or slide_mpp / mpp <= UPSAMPLING_TOLERANCE:
        return None
    return (f"{path}: tiles at {mpp:g} um/px are upsampled {slide_mpp / mpp:.1f}x from the slide's {slide_mpp:g} "
            f"um/px: they hold no more detail than the scan (ask for --mpp {slide_mpp:.2g} or coarser)")  # fmt: skip


def _create_store(slide, store_path, config: TilingConfig, roi, fingerprint, tissue_geojson):
    """A new partial store, with the tissue detection it made (None with a replacing ROI), the region its grid
    covers and its reader. Its quality-control warnings are issued (UserWarning) and kept in its "warnings"
    attribute."""
    with record_warnings() as caught:  # this thread's only, when slides are worked on in threads
        tissue = None
        spec = TileSpec.for_slide(slide, config)
        min_fragment = min_fragment_area(spec, config)
        if roi is None or config.roi_mode != "replace":  # pieces down to the grid's min fragment are kept
            min_area = detection_min_area_um2(min_fragment, spec.slide_mpp)
            tissue = detect_tissue_result(slide, exact=config.exact, min_area_um2=min_area)
        region = tile_region(slide, roi, config.roi_mode, tissue=tissue.geometry if tissue is not None else None,
                             min_fragment=min_fragment)  # fmt: skip
        grid = TileGrid.from_region(spec, slide.meta.dimensions, region, config.min_tissue)
    messages = [str(w.message) for w in caught if issubclass(w.category, UserWarning)]
    for w in caught:  # issued again outside the recording, where the caller's filters decide
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
    mpp0 = slide.meta.mpp
    tissue_mm2 = float(region.area * mpp0**2 / 1e6) if mpp0 else None
    if tissue_geojson is not None:
        write_tissue_geojson(tissue_geojson, region, mpp0)
    qc, qc_attrs = None, None
    # One reader for the quality checks and the tiles: its checks against the slide reader (TileReader) run once.
    reader = _reader(slide, grid.spec, config)
    try:
        if config.qc and len(grid):
            grid, qc, qc_attrs = _quality_checked(slide, grid, config, reader)
        upsampled = upsampling_warning(slide.path, grid.spec.slide_mpp, grid.spec.mpp)
        if upsampled:
            messages.append(upsampled)
            warnings.warn(upsampled, stacklevel=3)
        if len(grid) == 0 and qc_attrs is not None:
            messages.append(f"{slide.path}: tile QC ({', '.join(config.qc)}) flagged all "
                            f"{qc_attrs['tiles_measured']} tiles {qc_attrs['dropped']}; the store is empty")  # fmt: skip
            warnings.warn(messages[-1], stacklevel=3)
        elif len(grid) == 0:
            messages.append(
                f"{slide.path}: no tiles with at least {config.min_tissue:.0%} tissue; the store is empty"
            )
            warnings.warn(messages[-1], stacklevel=3)
        codec, colorspace = config.codec, None
        if codec in ("auto", "jpeg"):
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
            "warnings": messages,
        }  # fmt: skip
        if qc_attrs is not None:
            attrs["qc"] = qc_attrs
        if not config.coords_only:
            attrs[READ_PATH] = reader.path_name
        store = PatchStore.create(store_path, grid.coords, grid.tissue, grid.edge, attrs,
                                  None if config.coords_only else config.size, config.shard_tiles, codec,
                                  jpeg_colorspace=colorspace, qc=qc)  # fmt: skip
        return store, tissue, region, reader
    except BaseException:  # the caller closes it only when it is returned
        reader.close()
        raise


def _measure_batch(reader: TileReader, coords: np.ndarray, checks: tuple[str, ...]) -> dict[str, np.ndarray]:
    return measure_tiles(reader.read_many(coords), checks)


def _quality_checked(slide, grid: TileGrid, config: TilingConfig, reader: TileReader):
    """The grid without the tiles `config.qc` flags, the kept tiles' measures, and attrs["qc"] (counts).

    Every tile is read by `reader` once for its measures before the store is made (a second read writes it), in
    batches of `shard_tiles` on the tiling's dask scheduler."""
    step = config.shard_tiles
    tasks = [dask.delayed(_measure_batch, pure=False)(reader, grid.coords[i : i + step], config.qc)
             for i in range(0, len(grid), step)]  # fmt: skip
    batches = _compute(tasks, config)
    measures = {c: np.concatenate([b[c] for b in batches]) for c in config.qc}
    flags = flag_tiles(measures, QCParams())
    flagged = np.logical_or.reduce(list(flags.values()))
    keep = ~flagged
    kept = replace(grid, coords=grid.coords[keep], tissue=grid.tissue[keep], edge=grid.edge[keep])
    attrs = {"checks": list(config.qc), "params": QCParams().to_dict(), "tiles_measured": len(grid),
             "dropped": {c: int(f.sum()) for c, f in flags.items()}, "dropped_total": int(flagged.sum())}  # fmt: skip
    if flagged.any():
        log.info(
            "%s: tile QC dropped %d of %d tiles %s", slide.path, flagged.sum(), len(grid), attrs["dropped"]
        )
    return kept, {c: v[keep] for c, v in measures.items()}, attrs


def _compute(tasks: list, config: TilingConfig) -> tuple:
    """`dask.compute(*tasks)` on `config.shard_workers` workers (default one per core) of dask's local scheduler
    named by `config.scheduler`, given as a function: dask looks a name up only after importing dask.distributed
    (a quarter of a second of CPU per process, which a tile run does not need). Threads with one worker run in
    the calling thread (a slide of `slidestream run`: no hand-over to a pool thread and back for every batch)."""
    from dask.base import named_schedulers

    workers = config.shard_workers or os.cpu_count() or 1
    name = "synchronous" if config.scheduler == "threads" and workers == 1 else config.scheduler
    return dask.compute(*tasks, scheduler=named_schedulers[name], num_workers=workers)


def _run_shards(store, reader, pending, config: TilingConfig, progress, name, on_tiles=None,
                on_patches=None) -> None:  # fmt: skip
    if not pending:
        return
    bar = tqdm(total=sum(len(store.shard_range(s)) for s in pending), desc=f"tile {name}", unit="tile",
               disable=not progress, leave=False)  # fmt: skip
    coords = store.coords  # read once; each task gets its own rows
    if config.scheduler == "processes":
        on_patches = None  # it would be called in the worker processes, with copies of the shards
    tasks, sizes = [], {}
    for shard in pending:
        rows = store.shard_range(shard)
        task = dask.delayed(_write_shard, pure=False)(str(store.path), reader, shard, coords[rows.start : rows.stop],
                                                      on_patches, dask_key_name=f"shard-{shard}-{store.path.name}")  # fmt: skip
        tasks.append(task)
        sizes[f"shard-{shard}-{store.path.name}"] = len(store.shard_range(shard))
    try:
        with _Progress(bar, sizes, on_tiles):
            _compute(tasks, config)
    finally:
        bar.close()

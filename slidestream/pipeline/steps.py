"""Pipeline steps: one small protocol, so a new step (nuclei, MIL prediction, heatmaps) plugs in by registering.

A step reads what earlier steps wrote in the slide's folder, writes its own outputs there, and knows whether
they are already complete for the current configuration (then it reports "skipped"). It returns measurements
for the summary table. Steps run in registration order; `STEPS` maps names to steps.
"""

from __future__ import annotations

import contextlib
import os
import threading
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from slidestream.pipeline.config import RunConfig, TileOptions
from tiling.tissue import TissueParams

if TYPE_CHECKING:
    from shapely.geometry.base import BaseGeometry

__all__ = [
    "PICTURES",
    "STEPS",
    "SlideContext",
    "Step",
    "StepOutcome",
    "TilesKept",
    "default_executor",
    "register_step",
    "slide_pictures",
    "step_names",
    "uses_torch",
    "write_pictures",
]


@dataclass(frozen=True)
class SlideContext:
    """One slide in one run: where it is, where its outputs go, and the run's configuration."""

    slide_id: str
    slide_path: Path
    folder: Path
    config: RunConfig
    on_tiles: Callable[[int], None] | None = None  # progress: called with each batch of tiles written
    on_total: Callable[[int], None] | None = None  # progress: called once with the tiles a slide will write

    @property
    def store_path(self) -> Path:
        return self.folder / "patches.zarr"


@dataclass(frozen=True)
class StepOutcome:
    status: str  # "done" or "skipped"
    measurements: dict[str, Any]
    warnings: tuple[str, ...] = ()


class Step(Protocol):
    name: str

    def outputs(self, ctx: SlideContext) -> list[Path]: ...

    def run(self, ctx: SlideContext) -> StepOutcome: ...


STEPS: dict[str, Step] = {}


def register_step(step: Step) -> Step:
    STEPS[step.name] = step
    return step


def uses_torch(steps) -> bool:
    """Whether any of `steps` (names) uses torch: a registered step without `uses_torch = False` is taken to."""
    return any(getattr(STEPS[s], "uses_torch", True) for s in steps if s in STEPS)


def default_executor(steps) -> str:
    """The executor of `slidestream run` for `steps` (names) when neither --executor nor [run] executor names
    one, nor a scheduler address or a dashboard sets it: "forks" on Linux when no other thread runs in this
    process (the command line's own: nothing that a fork could catch half-way) for steps that do not use torch
    (`uses_torch`: the tile step), else "threads": macOS, where forking a process that has used system
    frameworks is unsafe and Python spawns instead; Windows, which cannot fork; a caller with threads of its
    own (a notebook, a GUI, a server, even calling from its main thread); and torch steps (features, nuclei,
    predict), which in forked workers would each hold a CUDA context and a copy of the model, not measured.
    zarr's and tqdm's own threads are not counted (`_threads_of_others`).

    Forks ran a folder of small slides faster than threads on two cores (no GIL shared between the slides;
    benchmarks/RESULTS.md, "Many small slides, session 14")."""
    import sys

    called_from_main = threading.current_thread() is threading.main_thread()
    if (
        not uses_torch(steps)
        and sys.platform.startswith("linux")
        and called_from_main
        and not _threads_of_others()
    ):
        return "forks"
    return "threads"


def _threads_of_others() -> list[threading.Thread]:
    """The threads of this process other than the main one, zarr's (its event loop "zarr_io", "zarr_pool_<n>",
    and the file-I/O threads of zarr's own event loop), which zarr replaces in a forked child, and tqdm's
    monitor, whose lock a forked worker does not take (its initializer gives tqdm a fresh one,
    runner._fork_worker_start). Another event loop's threads count as the caller's."""
    known = ("zarr_io", "zarr_pool", "tqdm_monitor")
    zarrs = _zarr_loop_threads()
    return [t for t in threading.enumerate()
            if t is not threading.main_thread() and not t.name.startswith(known) and t not in zarrs]  # fmt: skip


def _zarr_loop_threads() -> set[threading.Thread]:
    """The worker threads of zarr's event loop's default executor (none when zarr has not started one)."""
    import sys

    sync = sys.modules.get("zarr.core.sync")
    loop = (getattr(sync, "loop", None) or [None])[0]
    executor = getattr(loop, "_default_executor", None)
    return set(getattr(executor, "_threads", ()))


def step_names() -> list[str]:
    """Deprecated: use `list(STEPS)`."""
    warnings.warn("step_names() is deprecated and will be removed; use list(STEPS)", DeprecationWarning,
                  stacklevel=2)  # fmt: skip
    return list(STEPS)


def _collect_warnings(fn: Callable[[], Any]) -> tuple[Any, tuple[str, ...]]:
    from wsi.thread_warnings import record_warnings

    with record_warnings() as caught:  # this slide's own, also when slides share the process as threads
        result = fn()
    # Once each: a slide is opened several times per step (tissue, tiles, thumbnail), each open warning again.
    return result, tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))


def without_path(message: str, path: Path) -> str:
    """`message` without a leading "PATH: " naming the slide (the console and the summary name it already)."""
    for prefix in dict.fromkeys((str(path), os.path.abspath(path), str(Path(path).resolve()))):
        if message.startswith(f"{prefix}: "):
            return message[len(prefix) + 2 :]
    return message


class TileStep:
    """Tissue detection and the patch store; tissue.geojson (QuPath annotations) and the pictures
    (thumbnail.png, tissue_mask.png, stitch.png)."""

    name = "tile"
    uses_torch = False  # a step without this attribute is taken to use torch (the runner limits its threads)

    def preload(self) -> None:
        """The imports and first uses of a slide's pictures (Pillow's drawing and fonts, the PNG encoder,
        tissue outlines), done by drawing and encoding a tiny picture: called by the run before it forks its
        workers, so that each does not pay them on its first slide (15 - 35 ms each)."""
        from skimage import measure

        from tiling.png import encode_png
        from tiling.thumbnail import Overlay, draw_thumbnail

        measure.find_contours(np.zeros((4, 4)), 0.5)  # skimage loads its submodules lazily
        figure = draw_thumbnail(np.zeros((8, 8, 3), np.uint8), 1.0,
                                Overlay(coords=np.zeros((1, 2)), extent=4, title="t", subtitle="s", slide_mpp=1.0),
                                min_size=THUMBNAIL_MIN)  # fmt: skip
        encode_png(figure.image)

    def outputs(self, ctx: SlideContext) -> list[Path]:
        return [ctx.store_path, ctx.folder / "tissue.geojson", *(ctx.folder / name for name in PICTURES)]

    def run(self, ctx: SlideContext) -> StepOutcome:
        options = ctx.config.tiling
        if options.shard_workers is None:  # inside a dask worker: its own threads, not every core of the host
            options = replace(options, shard_workers=ctx.config.threads_per_worker)
        result, said = tile_with_pictures(ctx.folder, ctx.slide_path, ctx.slide_id, options,
                                          overwrite=ctx.config.overwrite, on_tiles=ctx.on_tiles,
                                          on_total=ctx.on_total)  # fmt: skip
        store = result.store
        slide = store.attrs["slide"]
        tiling = store.attrs["tiling"]
        tissue = store.attrs.get("tissue_mm2")
        return StepOutcome(
            "skipped" if result.status == "skipped" else "done",
            {"mpp": slide["mpp"], "width": slide["dimensions"][0], "height": slide["dimensions"][1],
             "vendor": slide["vendor"], "tile_mpp": tiling["mpp"], "tile_size": tiling["size"], "tiles": len(store),
             "tissue_mm2": round(tissue, 3) if tissue is not None else None, "codec": store.codec,
             "qc_dropped": (store.attrs.get("qc") or {}).get("dropped_total")},
            said,
        )  # fmt: skip


def tile_with_pictures(folder: Path, slide_path: Path, slide_id: str, options: TileOptions, *,
                       overwrite: bool = False, progress: bool = False,
                       on_tiles: Callable[[int], None] | None = None,
                       on_total: Callable[[int], None] | None = None):  # fmt: skip
    """One slide's tile work, shared by `tile` and `run`: folder/patches.zarr and folder/tissue.geojson
    (`tiling.tile_slide_result` with `options` as they are), then the pictures (`slide_pictures`) when the store
    was (re)made or one of them is missing. The slide's ROI is parsed once for both.

    Returns the `tiling.TilingResult` and the slide's warnings meant for users: the store's quality-control
    warnings (also those of a skipped store), then the others issued meanwhile (UserWarnings; every open of the
    slide warns again: kept once each), without a leading path naming the slide.
    """

    def tile_and_pictures():
        from tiling import tile_slide_result
        from tiling.engine import open_for_tiling

        roi = roi_for(options.roi, slide_id)  # its warning (no ROI file for this slide) is the slide's
        kept = TilesKept()  # the tiles' pixels as written: the stitch reads none back (a small slide's)

        def total(n: int) -> None:
            kept.expect(n)
            if on_total is not None:
                on_total(n)

        with open_for_tiling(slide_path, options) as slide:  # one open for the tiles and the pictures
            result = tile_slide_result(slide, folder / "patches.zarr", options, roi=roi,
                                       tissue_geojson=folder / "tissue.geojson", overwrite=overwrite,
                                       progress=progress, on_tiles=on_tiles, on_total=total,
                                       on_patches=kept)  # fmt: skip
            if result.status != "skipped" or not all((folder / name).exists() for name in PICTURES):
                slide_pictures(folder, slide_path, result.store, roi, tissue=result.tissue, exact=options.exact,
                               region=result.region, slide=slide, patches=kept.patches(len(result.store)))  # fmt: skip
        return result

    result, caught = _collect_warnings(tile_and_pictures)
    said = tuple(dict.fromkeys(without_path(w, slide_path) for w in (*result.warnings, *caught)))
    return result, said


def roi_for(roi: str | None, slide_id: str):
    """The ROI geometry of a slide: from one GeoJSON file, or <slide_id>.geojson in a folder (None if absent)."""
    from tiling import load_roi

    if roi is None:
        return None
    path = Path(roi)
    if path.is_dir():
        candidate = path / f"{slide_id}.geojson"
        if not candidate.exists():
            warnings.warn(f"no ROI file {candidate}: the slide is tiled without a ROI", stacklevel=2)
            return None
        return load_roi(candidate)
    return load_roi(path)


PICTURES = ("thumbnail.png", "tissue_mask.png", "stitch.png")

# The most tile pixels a slide's tile step keeps in memory for its stitch (about 340 tiles of 256 px: a biopsy;
# one copy, per slide worker); past it the stitch reads the tiles back from the store, a batch at a time.
KEEP_TILES_BYTES = 64 * 2**20


class TilesKept:
    """`on_patches` of `tiling.tile_slide_result`: the shards of pixels it writes, copied into one (n, S, S, 3)
    array while that holds at most `budget` bytes (default `KEEP_TILES_BYTES`), so that the stitch need not read
    them back from the store (about 20 ms of a small slide's 0.3 s). `expect(n)` (its `on_total`) says how many
    rows come; shards may come from several threads, in any order. One copy of the tiles is held, never two
    (the shards are not kept and then put together)."""

    def __init__(self, budget: int | None = None):
        self.budget = KEEP_TILES_BYTES if budget is None else budget
        self.expected: int | None = None
        self.array: np.ndarray | None = None  # allocated at the first shard (its tile size), filled in place
        self.filled = 0
        self.over = False
        self._lock = threading.Lock()

    def expect(self, n: int) -> None:
        """The number of rows the tiling will write (`on_total`); without it nothing is kept."""
        with self._lock:
            self.expected = n

    def _drop(self) -> None:
        self.over, self.array = True, None

    def __call__(self, row: int, patches: np.ndarray) -> None:
        with self._lock:
            if self.over:
                return
            n = self.expected
            if self.array is None:
                if n is None or n * patches[:1].nbytes > self.budget:
                    return self._drop()
                self.array = np.empty((n, *patches.shape[1:]), patches.dtype)
            array = self.array
            if row + len(patches) > len(array) or patches.shape[1:] != array.shape[1:]:
                return self._drop()  # rows past those expected: a resumed store, written only in part here
        array[row : row + len(patches)] = patches  # shards do not overlap: copied outside the lock
        with self._lock:
            self.filled += len(patches)

    def patches(self, n: int) -> np.ndarray | None:
        """The (n, S, S, 3) pixels of all `n` tiles in store order, or None unless every row was kept."""
        with self._lock:
            if self.over or self.array is None or len(self.array) != n or self.filled != n:
                return None
            return self.array


THUMBNAIL_SIZE = 1024  # longest side at most
# Tissue detection's image (about 8 um/px) serves as the thumbnail when it has at least this many pixels on its
# longest side: a large slide is then not read again. A smaller one (a biopsy) has the finer image that its work
# image was averaged from (`tiling.TissueResult.preview`, at least as large unless the slide is smaller);
# else (read_region, `exact`, a level too small for a preview) it is read again, for a figure-quality picture.
# The same threshold as tissue detection's: a work image under it is the one that gets a preview.
THUMBNAIL_MIN = TissueParams.preview_size
# The slide in a figure is enlarged to this many px on its longest side (`draw_thumbnail`'s `min_size`),
# except a preview, drawn as it is (it has THUMBNAIL_MIN px or more, unless the slide is smaller).
FIGURE_MIN = 800


def slide_pictures(folder: Path, slide_path: Path, store, roi=None, tissue=None, exact: bool = False,
                   region: BaseGeometry | None = None, slide=None, patches: np.ndarray | None = None) -> list[Path]:  # fmt: skip
    """`write_pictures` on an image of the whole slide that tissue detection has just read (`tissue`, a
    `tiling.TissueResult`): its work image when that has at least THUMBNAIL_MIN px on its longest side, else
    its preview (a small slide's native tiles at the coarsest DCT scale that gives at least THUMBNAIL_MIN px on
    the longest side, as decoded: under 1024 px, but for a single-level slide finer than 1 um/px whose 1/8
    decode is already larger), drawn as it is; without either (read_region, `exact`, a level too small for a
    preview, no tissue detection here), the slide shrunk to THUMBNAIL_SIZE px on its longest side
    (`tiling.tissue.read_downsampled`, with read_region when `exact`), read here (from `slide`, the slide open
    already, if given). An image over THUMBNAIL_SIZE px is shrunk to it; in the figure, any but the preview is
    enlarged to FIGURE_MIN px. `region` is what folder/tissue.geojson holds, when the caller has just written
    it; `patches` the store's tiles, when the caller has them in memory."""
    import wsi

    image = downsample = None
    min_size = FIGURE_MIN
    if tissue is not None and max(tissue.image.shape[:2]) >= THUMBNAIL_MIN:
        image, downsample = tissue.image, tissue.downsample
    elif tissue is not None and tissue.preview is not None:
        image, downsample, min_size = tissue.preview, tissue.preview_downsample, THUMBNAIL_MIN
    if image is not None:
        shrink = THUMBNAIL_SIZE / max(image.shape[:2])
        if shrink < 1:
            h, w = image.shape[:2]
            image = wsi.resize_rgb(image, (max(1, round(w * shrink)), max(1, round(h * shrink))))
            downsample *= w / image.shape[1]
    else:
        from tiling.tissue import read_downsampled

        with contextlib.ExitStack() as stack:
            if slide is None:
                slide = stack.enter_context(
                    wsi.open_slide(slide_path, backend=store.attrs["slide"].get("backend"))
                )
            w0, h0 = slide.meta.dimensions
            # From DCT-scaled native tiles where the slide has them (a fifth of read_region's time on a biopsy).
            image = read_downsampled(slide, max(1.0, max(w0, h0) / THUMBNAIL_SIZE), exact=exact)
            downsample = w0 / image.shape[1]
    return write_pictures(folder, store, image, downsample, roi=roi, region=region, patches=patches,
                          min_size=min_size)  # fmt: skip


def write_pictures(folder: Path, store, image: np.ndarray, downsample: float, roi=None,
                   region: BaseGeometry | None = None, patches: np.ndarray | None = None,
                   min_size: int = FIGURE_MIN) -> list[Path]:  # fmt: skip
    """folder/thumbnail.png (figure: tiles, tissue outline with holes, ROI, scale bar, title, legend),
    tissue_mask.png (the tissue tiles were kept in, white on black) and stitch.png (the stored tiles at their
    place) of a tiled slide, each written atomically. Shared by `tile` and `run`.

    `image` is the whole slide at `downsample` level-0 px per pixel, already read (tiling.thumbnail draws
    on it); `roi` the level-0 ROI geometry of the run, if any; `region` the tissue as written to
    folder/tissue.geojson (`tiling.TilingResult.region`; without it that file is read). The stitch reads every
    stored patch once, unless `patches` holds them ((N, S, S, 3), the store's pixels: `TilesKept`). In
    thumbnail.png an image under `min_size` px on its longest side is enlarged to it. PNGs by
    `tiling.png` (same pixels as any encoder, a third of Pillow's time).
    """
    import shapely

    from tiling import TileSpec
    from tiling.png import write_png
    from tiling.thumbnail import Overlay, draw_thumbnail, stitch_image, tissue_mask_image
    from wsi import qupath
    from wsi.atomic import atomic_file

    attrs = store.attrs
    geojson = folder / "tissue.geojson"
    tissue = None
    if region is not None:  # already clean (`tiling.tissue.drop_fragments`): what the file holds, united
        tissue = qupath.clean_geometry(region)
    elif geojson.exists():
        tissue = shapely.union_all([o.geometry for o in qupath.read_geojson(geojson)])
    spec = TileSpec.from_dict(attrs["tiling"])
    slide_id = folder.name  # slides/<slide_id>/: the batch's id (the store's attrs have the file's stem)
    overlay = Overlay(coords=store.coords, extent=spec.extent, tissue=tissue, roi=roi, slide_mpp=spec.slide_mpp,
                      title=slide_id, subtitle=_caption(store, spec))  # fmt: skip
    tiles = store.patches if patches is None else patches
    if patches is not None and patches.shape != (len(store), spec.size, spec.size, 3):
        raise ValueError(f"patches must hold the store's tiles, shape {(len(store), spec.size, spec.size, 3)} "
                         f"(N, S, S, 3); got {patches.shape}")  # fmt: skip
    pictures = {
        "thumbnail.png": draw_thumbnail(image, downsample, overlay, min_size=min_size).image,
        "tissue_mask.png": tissue_mask_image(image.shape[:2], downsample, tissue),
        "stitch.png": stitch_image(
            image.shape[:2], downsample, store.coords, spec.extent, patches=tiles, fallback=image
        ),  # fmt: skip
    }
    written = []
    for name in PICTURES:
        with atomic_file(folder / name) as tmp:
            write_png(tmp, pictures[name])
        written.append(folder / name)
    return written


def _caption(store, spec) -> str:
    """ "1,234 tiles of 256 px at 0.5 um/px, tissue 12.3 mm^2, QC dropped 5 of 1,239 (blur 3, pen 2)"."""
    from tiling.qc import describe

    parts = [f"{len(store):,} tiles of {spec.size} px at {spec.mpp:g} um/px"]
    if store.attrs.get("tissue_mm2") is not None:
        parts.append(f"tissue {store.attrs['tissue_mm2']:.2f} mm^2")
    qc = store.attrs.get("qc")
    if qc:
        parts.append(describe(qc))
    return ", ".join(parts)


class FeatureStep:
    """Tile features from the configured encoder into the patch store (features/<encoder>)."""

    name = "features"

    def outputs(self, ctx: SlideContext) -> list[Path]:
        return [ctx.store_path / "features" / ctx.config.features.encoder]

    def run(self, ctx: SlideContext) -> StepOutcome:
        import mil
        from tiling import PatchStore

        f = ctx.config.features
        store = PatchStore.open(ctx.store_path)
        arguments = mil.encoder_arguments(f.encoder, store, f.encoder_args)  # morphometry: the tiles' mpp
        encoder, caught = _collect_warnings(lambda: mil.create_encoder(
            f.encoder, weights=f.weights, random_weights=f.random_weights, **arguments))  # fmt: skip
        skipped = not ctx.config.overwrite and mil.features_done(store, encoder)
        if skipped:
            array = store.features(encoder.name)
        else:  # checked just above: extract_features need not check again
            array = mil.extract_features(store, encoder, batch_size=f.batch_size, device=f.device,
                                         loader_workers=f.loader_workers, overwrite=True)  # fmt: skip
        return StepOutcome("skipped" if skipped else "done",
                           {"encoder": encoder.name, "feature_dim": array.shape[1], "weights": encoder.weights_label},
                           caught)  # fmt: skip


register_step(TileStep())
register_step(FeatureStep())

"""Pipeline steps: one small protocol, so a new step (nuclei, MIL prediction, heatmaps) plugs in by registering.

A step reads what earlier steps wrote in the slide's folder, writes its own outputs there, and knows whether
they are already complete for the current configuration (then it reports "skipped"). It returns measurements
for the summary table. Steps run in registration order; `STEPS` maps names to steps.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from slidestream.pipeline.config import RunConfig, TileOptions

__all__ = ["STEPS", "SlideContext", "Step", "StepOutcome", "register_step", "step_names"]


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


def step_names() -> list[str]:
    """Deprecated: use `list(STEPS)`."""
    warnings.warn("step_names() is deprecated and will be removed; use list(STEPS)", DeprecationWarning,
                  stacklevel=2)  # fmt: skip
    return list(STEPS)


def _collect_warnings(fn: Callable[[], Any]) -> tuple[Any, tuple[str, ...]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, tuple(dict.fromkeys(str(w.message) for w in caught if issubclass(w.category, UserWarning)))


def without_path(message: str, path: Path) -> str:
    """`message` without a leading "PATH: " naming the slide (the console and the summary name it already)."""
    for prefix in dict.fromkeys((str(path), os.path.abspath(path), str(Path(path).resolve()))):
        if message.startswith(f"{prefix}: "):
            return message[len(prefix) + 2 :]
    return message


class TileStep:
    """Tissue detection and the patch store; tissue.geojson (QuPath annotations) and thumbnail.png."""

    name = "tile"

    def outputs(self, ctx: SlideContext) -> list[Path]:
        return [ctx.store_path, ctx.folder / "tissue.geojson", ctx.folder / "thumbnail.png"]

    def run(self, ctx: SlideContext) -> StepOutcome:
        options = ctx.config.tiling
        if options.shard_workers is None:  # inside a dask worker: its own threads, not every core of the host
            options = replace(options, shard_workers=ctx.config.threads_per_worker)
        result, caught = _collect_warnings(lambda: tile_into(
            ctx.folder, ctx.slide_path, ctx.slide_id, options, overwrite=ctx.config.overwrite, progress=False,
            on_tiles=ctx.on_tiles, on_total=ctx.on_total,
        ))  # fmt: skip
        store = result.store
        if result.status != "skipped" or not (ctx.folder / "thumbnail.png").exists():
            write_thumbnail(ctx, store)
        slide = store.attrs["slide"]
        tiling = store.attrs["tiling"]
        tissue = store.attrs.get("tissue_mm2")
        # The store's own quality-control warnings (also those of a skipped store), then any others.
        said = tuple(dict.fromkeys(without_path(w, ctx.slide_path) for w in (*result.warnings, *caught)))
        return StepOutcome(
            "skipped" if result.status == "skipped" else "done",
            {"mpp": slide["mpp"], "width": slide["dimensions"][0], "height": slide["dimensions"][1],
             "vendor": slide["vendor"], "tile_mpp": tiling["mpp"], "tile_size": tiling["size"], "tiles": len(store),
             "tissue_mm2": round(tissue, 3) if tissue is not None else None, "codec": store.codec},
            said,
        )  # fmt: skip


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


def tile_into(folder: Path, slide_path: Path, slide_id: str, options: TileOptions, *, overwrite: bool = False,
              progress: bool = False, on_tiles: Callable[[int], None] | None = None,
              on_total: Callable[[int], None] | None = None):  # fmt: skip
    """Tile one slide into folder/patches.zarr and folder/tissue.geojson (shared by `tile` and `run`).

    `options` go to `tiling.tile_slide_result` as they are; only the ROI is looked up for this slide.
    """
    from tiling import tile_slide_result

    return tile_slide_result(slide_path, folder / "patches.zarr", options, roi=roi_for(options.roi, slide_id),
                             tissue_geojson=folder / "tissue.geojson", overwrite=overwrite, progress=progress,
                             on_tiles=on_tiles, on_total=on_total)  # fmt: skip


def write_thumbnail(ctx: SlideContext, store) -> Path:
    """thumbnail.png: the slide with its tissue outline (green) and tile boxes (blue), written atomically."""
    from PIL import Image

    import wsi
    from tiling import TileSpec

    with wsi.open_slide(ctx.slide_path, backend=store.attrs["slide"].get("backend")) as slide:
        image = Image.fromarray(slide.thumbnail(1024))
        scale = image.width / slide.meta.dimensions[0]
    tissue = ctx.folder / "tissue.geojson"
    draw_tiles(image, scale, store.coords, TileSpec.from_dict(store.attrs["tiling"]).extent,
               tissue if tissue.exists() else None)  # fmt: skip
    path = ctx.folder / "thumbnail.png"
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.png")
    image.save(tmp)
    tmp.replace(path)
    return path


TILE_OUTLINE = (40, 90, 220, 160)  # RGBA, drawn over the thumbnail
TISSUE_OUTLINE = (0, 170, 60, 255)


def draw_tiles(image, scale: float, coords: np.ndarray, extent: float, tissue_geojson: Path | None) -> None:
    """Draw tile boxes (level-0 top-left `coords`, level-0 side `extent`) and the tissue outline of a QuPath
    GeoJSON file on a PIL `image` whose pixels are 1 / `scale` level-0 pixels."""
    from PIL import ImageDraw
    from shapely.geometry import Polygon

    from wsi import qupath

    draw = ImageDraw.Draw(image, "RGBA")
    side = extent * scale
    for x, y in np.asarray(coords, dtype=float) * scale:
        draw.rectangle([x, y, x + side, y + side], outline=TILE_OUTLINE)
    if tissue_geojson is None:
        return
    for obj in qupath.read_geojson(tissue_geojson):
        for part in getattr(obj.geometry, "geoms", [obj.geometry]):
            if isinstance(part, Polygon):
                draw.line(
                    [(x * scale, y * scale) for x, y in part.exterior.coords], fill=TISSUE_OUTLINE, width=2
                )


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
        encoder, caught = _collect_warnings(lambda: mil.create_encoder(
            f.encoder, weights=f.weights, random_weights=f.random_weights, **f.encoder_args))  # fmt: skip
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

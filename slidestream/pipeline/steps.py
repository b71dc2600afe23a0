"""Pipeline steps: one small protocol, so a new step (nuclei, MIL prediction, heatmaps) plugs in by registering.

A step reads what earlier steps wrote in the slide's folder, writes its own outputs there, and knows whether
they are already complete for the current configuration (then it reports "skipped"). It returns measurements
for the summary table. Steps run in registration order; `STEPS` maps names to steps.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
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
    return list(STEPS)


def _collect_warnings(fn: Callable[[], Any]) -> tuple[Any, tuple[str, ...]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, tuple(str(w.message) for w in caught if issubclass(w.category, UserWarning))


class TileStep:
    """Tissue detection and the patch store; tissue.geojson (QuPath annotations) and thumbnail.png."""

    name = "tile"

    def outputs(self, ctx: SlideContext) -> list[Path]:
        return [ctx.store_path, ctx.folder / "tissue.geojson", ctx.folder / "thumbnail.png"]

    def run(self, ctx: SlideContext) -> StepOutcome:
        result, caught = _collect_warnings(lambda: tile_into(
            ctx.folder, ctx.slide_path, ctx.slide_id, ctx.config.tiling, workers=ctx.config.threads_per_worker,
            overwrite=ctx.config.overwrite, progress=False, on_tiles=ctx.on_tiles,
        ))  # fmt: skip
        store = result.store
        if result.status != "skipped" or not (ctx.folder / "thumbnail.png").exists():
            write_thumbnail(ctx, store)
        slide = store.attrs["slide"]
        return StepOutcome(
            "skipped" if result.status == "skipped" else "done",
            {"mpp": slide["mpp"], "width": slide["dimensions"][0], "height": slide["dimensions"][1],
             "vendor": slide["vendor"], "tiles": len(store), "tissue_mm2": store.attrs.get("tissue_mm2"),
             "codec": store.codec},
            caught,
        )  # fmt: skip


def roi_for(roi: str | None, slide_id: str):
    """The ROI geometry of a slide: from one GeoJSON file, or <slide_id>.geojson in a folder (None if absent)."""
    from tiling import load_roi

    if roi is None:
        return None
    path = Path(roi)
    if path.is_dir():
        candidate = path / f"{slide_id}.geojson"
        return load_roi(candidate) if candidate.exists() else None
    return load_roi(path)


def tile_into(folder: Path, slide_path: Path, slide_id: str, options: TileOptions, workers: int | None,
              overwrite: bool, progress: bool, on_tiles: Callable[[int], None] | None = None):  # fmt: skip
    """Tile one slide into folder/patches.zarr and folder/tissue.geojson (shared by `tile` and `run`)."""
    from tiling import tile_slide_result

    o = options
    return tile_slide_result(
        slide_path, folder / "patches.zarr", size=o.size, mpp=o.mpp, stride=o.stride, min_tissue=o.min_tissue,
        roi=roi_for(o.roi, slide_id), roi_mode=o.roi_mode, coords_only=o.coords_only, codec=o.codec,
        shard_tiles=o.shard_tiles, workers=workers, overwrite=overwrite, progress=progress,
        slide_mpp=o.slide_mpp, tissue_geojson=folder / "tissue.geojson", on_tiles=on_tiles,
    )  # fmt: skip


def write_thumbnail(ctx: SlideContext, store) -> Path:
    """thumbnail.png: the slide with its tissue outline (green) and tile boxes (blue)."""
    from PIL import Image, ImageDraw

    import wsi

    mpp = ctx.config.tiling.slide_mpp
    with wsi.open_slide(ctx.slide_path) as slide:
        if slide.meta.mpp is None and mpp is not None:
            slide = wsi.open_slide(ctx.slide_path, mpp=mpp)
        image = Image.fromarray(slide.thumbnail(1024))
        w0 = slide.meta.dimensions[0]
    scale = image.width / w0
    draw = ImageDraw.Draw(image, "RGBA")
    extent = store.attrs["tiling"]["size"] * store.attrs["tiling"]["mpp"] / store.attrs["tiling"]["slide_mpp"]
    for x, y in np.asarray(store.coords, dtype=float) * scale:
        draw.rectangle([x, y, x + extent * scale, y + extent * scale], outline=(40, 90, 220, 160))
    tissue = ctx.folder / "tissue.geojson"
    if tissue.exists():
        from shapely.geometry import Polygon

        from wsi import qupath

        for obj in qupath.read_geojson(tissue):
            parts = getattr(obj.geometry, "geoms", [obj.geometry])
            for part in parts:
                if isinstance(part, Polygon):
                    draw.line([(x * scale, y * scale) for x, y in part.exterior.coords], fill=(0, 170, 60, 255),
                              width=2)  # fmt: skip
    path = ctx.folder / "thumbnail.png"
    image.save(path)
    return path


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
        array = mil.extract_features(store, encoder, batch_size=f.batch_size, device=f.device,
                                     num_workers=f.loader_workers, overwrite=ctx.config.overwrite)  # fmt: skip
        return StepOutcome("skipped" if skipped else "done",
                           {"encoder": encoder.name, "feature_dim": array.shape[1], "weights": encoder.weights_label},
                           caught)  # fmt: skip


register_step(TileStep())
register_step(FeatureStep())

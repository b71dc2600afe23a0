"""The `nuclei` pipeline step: every nucleus of a slide (CNN or classical baseline) into the slide's folder.

Writes nuclei.parquet, nuclei.geojson.gz and nuclei.json (`nuclei.write_slide_nuclei`, resumable shard by
shard); with a patch store, per-tile nuclear features into the store as `scores/nuclei` and
heatmap_nuclei.png (nuclei per mm^2). Adds nuclei count, density and type fractions to summary.csv.
"""

from __future__ import annotations

import functools
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from slidestream.pipeline.config import NucleiOptions
from slidestream.pipeline.steps import SlideContext, StepOutcome, _collect_warnings, register_step, roi_for

__all__ = ["NUCLEI_COLUMNS", "SCORES_NAME", "SCORES_SOURCE", "NucleiStep", "nuclei_measurements"]

SCORES_NAME = "nuclei"
SCORES_SOURCE = "slidestream nuclei"
PANNUKE_TYPES = ("neoplastic", "inflammatory", "connective", "dead", "epithelial")
# summary.csv columns of this step (the shipped model's types; other models' fractions are in the manifest).
NUCLEI_COLUMNS = ("nuclei", "nuclei_density_mm2", *[f"nuclei_{t}" for t in PANNUKE_TYPES])


@functools.lru_cache(maxsize=4)
def _weights_digest_of(model_dir: str | None, mtime_ns: int) -> str:
    """Digest of a model folder's weights (None: the shipped model), read once per process and weights file
    (a rewritten file, new mtime, is read again): `is_current` asks it for every finished slide."""
    import nuclei
    from nuclei.segmenters import _weights_digest

    return _weights_digest(nuclei.load_model(model_dir) if model_dir else nuclei.default_model("cpu"))


def nuclei_measurements(summary: dict) -> dict:
    """Manifest / summary.csv measurements from a slide's nuclei.json."""
    out = {"nuclei": summary["nuclei"], "nuclei_density_mm2": round(summary["density_mm2"], 2),
           "nuclei_region_mm2": round(summary["region_mm2"], 4), "nuclei_tiles": summary["tiles"],
           "nuclei_segmenter": summary["plan"]["segmenter"]["kind"]}  # fmt: skip
    out.update({f"nuclei_{k}": round(v, 4) for k, v in summary["fractions"].items()})
    return out


def _segmenter_and_config(options: NucleiOptions):
    import nuclei

    config = nuclei.SlideNucleiConfig(tile=options.tile, halo=options.halo, batch_size=options.batch_size,
                                      workers=options.workers)  # fmt: skip
    if options.classical:
        return "classical", config
    return (nuclei.load_model(options.model) if options.model else None), config


class NucleiStep:
    """Nuclei of the slide (see the module docstring); reads the slide the patch store was made from."""

    name = "nuclei"

    def outputs(self, ctx: SlideContext) -> list[Path]:
        return [ctx.folder / "nuclei.json", ctx.folder / "nuclei.parquet", ctx.folder / "nuclei.geojson.gz"]

    def is_current(self, ctx: SlideContext) -> bool:
        """Whether the slide's nuclei were made with this run's options (else a batch redoes the step)."""
        from nuclei.slide_results import read_summary

        summary = read_summary(ctx.folder)
        return summary is not None and self._same(summary, ctx.config.nuclei)

    def _same(self, summary: dict, options: NucleiOptions) -> bool:
        plan = summary["plan"]
        kind = "classical" if options.classical else "cnn"
        config = plan["config"]
        return (plan["segmenter"]["kind"] == kind and config.get("tile") == options.tile
                and plan["segmenter"].get("tta", False) == options.tta
                and config.get("halo") == options.halo and summary.get("object_type") == options.object_type
                and (options.classical or plan["segmenter"].get("weights") == self._weights(options)))  # fmt: skip

    @staticmethod
    def _weights(options: NucleiOptions) -> str:
        if not options.model:
            return _weights_digest_of(None, 0)
        from nuclei.model import WEIGHTS_NAME

        weights = Path(options.model) / WEIGHTS_NAME
        return _weights_digest_of(
            str(Path(options.model).resolve()), os.stat(weights).st_mtime_ns if weights.exists() else 0
        )

    def run(self, ctx: SlideContext) -> StepOutcome:
        import nuclei
        import wsi
        from nuclei.slide_results import read_summary

        options = ctx.config.nuclei
        summary = read_summary(ctx.folder)
        if summary is not None and not ctx.config.overwrite and self._same(summary, options):
            return StepOutcome("skipped", nuclei_measurements(summary))
        store = _open_store(ctx.store_path)
        backend, slide_mpp = None, ctx.config.tiling.slide_mpp
        if store is not None:  # read the slide as it was tiled (the store's backend and resolution)
            backend = store.attrs["slide"].get("backend")
            slide_mpp = slide_mpp or store.attrs["slide"].get("mpp")
        model, config = _segmenter_and_config(options)
        roi = roi_for(ctx.config.tiling.roi, ctx.slide_id)
        with wsi.open_slide(ctx.slide_path, backend=backend, slide_mpp=slide_mpp) as slide:
            store_tiles = _store_tiles(store) if store is not None else None
            result, caught = _collect_warnings(lambda: nuclei.write_slide_nuclei(
                slide, ctx.folder, model=model, roi=roi, device=options.device, config=config,
                object_type=options.object_type, store_tiles=store_tiles, on_tiles=ctx.on_tiles,
                tta=options.tta))  # fmt: skip
        if store is not None:
            from slidestream.mil_slides import heatmap_png, write_scores

            write_scores(ctx.store_path, SCORES_NAME, result.tile_values, result.tile_columns, SCORES_SOURCE,
                         options=asdict(options))  # fmt: skip

            values = result.tile_values[:, result.tile_columns.index("density_mm2")]
            if len(values):
                heatmap_png(ctx.folder / "heatmap_nuclei.png", store, ctx.folder, values,
                             f"{ctx.slide_id}: nuclei per mm² ({result.nuclei} nuclei)", "nuclei / mm²")  # fmt: skip
        return StepOutcome("done", nuclei_measurements(read_summary(ctx.folder)), caught)


def _open_store(path: Path):
    from tiling import PatchStore
    from tiling.store import is_patch_store

    if not path.exists() or not is_patch_store(path):
        return None
    return PatchStore.open(path)


def _store_tiles(store) -> tuple[np.ndarray, float, float]:
    from tiling import TileSpec

    spec = TileSpec.from_dict(store.attrs["tiling"])
    return np.asarray(store.coords), spec.stride_level0, spec.extent


register_step(NucleiStep())  # its measurements become summary.csv columns after the fixed ones

"""The `predict` pipeline step: a trained MIL model folder (`slidestream mil train`) applied to each slide's store.

Per slide it writes scores/<model name> into the store and heatmap_<model>.png / .geojson into the slide's
folder (as `slidestream mil predict` does), and returns the fold-ensemble prediction (mean and sd of each
column) as measurements, so they land in the run's summary.csv. A store without the model's features fails
with the reason; a store whose features come from another encoder fails with both encoders named.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

from slidestream.pipeline.steps import SlideContext, StepOutcome, register_step

__all__ = ["PredictStep", "load_model_dir"]


@functools.lru_cache(maxsize=4)
def _load(model_dir: str, mtime_ns: int):
    """One read of a model folder per process (a dask worker predicts many slides); a rewritten folder (new
    mtime) is read again."""
    from slidestream.mil_slides import load_model_folder

    return load_model_folder(model_dir)


def _model(ctx: SlideContext):
    return load_model_dir(ctx.config.predict.model)


def load_model_dir(model_dir: str | None):
    """The predict step's model folder, read once per process (`run` reads it before the first slide, so a
    folder that is not a model is refused at once and the slides reuse the read)."""
    if model_dir is None:
        raise ValueError(
            "the predict step needs a model folder: --model MODEL_DIR, or model = ... in [predict]"
        )
    path = Path(model_dir).resolve()
    manifest = path / "mil_model.json"
    return _load(str(path), os.stat(manifest).st_mtime_ns if manifest.exists() else 0)


class PredictStep:
    """MIL prediction, per-tile attention and heatmaps for one slide (see the module doc)."""

    name = "predict"

    def outputs(self, ctx: SlideContext) -> list[Path]:
        if ctx.config.predict.model is None:
            return [
                ctx.folder / "heatmap_.png"
            ]  # never present: the step is to do (and fails with the reason)
        name = Path(ctx.config.predict.model).name
        return [ctx.folder / f"heatmap_{name}.png", ctx.folder / f"heatmap_{name}.geojson"]

    def run(self, ctx: SlideContext) -> StepOutcome:
        from slidestream.mil_slides import check_store, predict_store
        from tiling import PatchStore

        model = _model(ctx)
        store = PatchStore.open(ctx.store_path)
        reason = check_store(model, store, ctx.slide_id, ctx.store_path)
        if reason:
            raise ValueError(reason)
        options = ctx.config.predict
        row, feature_row = predict_store(model, store, ctx.store_path, ctx.slide_id, ctx.folder,
                                         options.high_fraction, options.raw_attention)  # fmt: skip
        measurements = {f"{model.name}_{k}": v for k, v in row.items() if k not in ("slide_id", "tiles")}
        measurements[f"{model.name}_high_attention_fraction"] = feature_row["high_attention_fraction"]
        return StepOutcome("done", measurements)


register_step(PredictStep())

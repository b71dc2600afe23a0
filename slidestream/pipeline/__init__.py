"""The batch pipeline: steps over slides on dask, with a manifest, a summary and resume."""

from slidestream.pipeline import nuclei_step, predict_step  # noqa: F401 (register the nuclei and predict steps after tile and features)
from slidestream.pipeline.config import (
    FeatureOptions,
    NucleiOptions,
    PredictOptions,
    RunConfig,
    TileOptions,
    load_config,
)
from slidestream.pipeline.manifest import StepRecord, read_manifest, write_summary
from slidestream.pipeline.runner import BatchResult, plan, process_slide, run_batch
from slidestream.pipeline.steps import STEPS, SlideContext, StepOutcome, register_step, step_names
from slidestream.pipeline.verify import StoreCheck, verify_results

__all__ = [
    "STEPS",
    "BatchResult",
    "FeatureOptions",
    "NucleiOptions",
    "PredictOptions",
    "RunConfig",
    "SlideContext",
    "StepOutcome",
    "StepRecord",
    "StoreCheck",
    "TileOptions",
    "load_config",
    "plan",
    "process_slide",
    "read_manifest",
    "register_step",
    "run_batch",
    "step_names",
    "verify_results",
    "write_summary",
]

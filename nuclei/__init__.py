"""Nuclei detection and instance segmentation: a HoVer-Net style CNN on a timm encoder, a classical baseline,
training on synthetic or user datasets, and metrics (detection F1, Dice, AJI, PQ).

    labels = nuclei.segment(rgb, mpp=0.5)                # (H, W) int32, shipped weights
    labels = nuclei.segment_classical(rgb, mpp=0.5)      # colour deconvolution + watershed baseline
    model = nuclei.load_model("model_dir"); nuclei.create_model(encoder="regnetx_002")
    table = nuclei.segment_slide(slide)                   # every nucleus of a slide (pandas, level-0 polygons)
    nuclei.write_slide_nuclei(slide, "folder")            # nuclei.parquet + nuclei.geojson.gz, resumable
"""

from nuclei import datasets, metrics
from nuclei.classical import segment_classical
from nuclei.export import read_parquet, write_geojson, write_parquet
from nuclei.measure import MEASUREMENTS, TABLE_COLUMNS
from nuclei.model import ModelConfig, ModelError, NucleiNet, create_model, load_model, save_model
from nuclei.postprocess import PostprocessConfig, instances_from_maps
from nuclei.segment import default_model, segment
from nuclei.segmenters import ClassicalSegmenter, CnnSegmenter
from nuclei.slide import SlideNucleiConfig, iter_slide_nuclei, plan_slide, segment_slide
from nuclei.slide_results import SlideNucleiResult, write_slide_nuclei
from nuclei.tile_stats import TileStats

__all__ = [
    "MEASUREMENTS",
    "TABLE_COLUMNS",
    "ClassicalSegmenter",
    "CnnSegmenter",
    "SlideNucleiConfig",
    "SlideNucleiResult",
    "TileStats",
    "iter_slide_nuclei",
    "plan_slide",
    "read_parquet",
    "segment_slide",
    "write_geojson",
    "write_parquet",
    "write_slide_nuclei",
    "ModelConfig",
    "ModelError",
    "NucleiNet",
    "PostprocessConfig",
    "create_model",
    "datasets",
    "default_model",
    "instances_from_maps",
    "load_model",
    "metrics",
    "save_model",
    "segment",
    "segment_classical",
]

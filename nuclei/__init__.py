"""Nuclei detection and instance segmentation: a HoVer-Net style CNN on a timm encoder, a classical baseline,
training on synthetic or user datasets, and metrics (detection F1, Dice, AJI, PQ).

    labels = nuclei.segment(rgb, mpp=0.5)                # (H, W) int32, shipped weights
    labels = nuclei.segment_classical(rgb, mpp=0.5)      # colour deconvolution + watershed baseline
    model = nuclei.load_model("model_dir"); nuclei.create_model(encoder="regnetx_002")
"""

from nuclei import datasets, metrics
from nuclei.classical import segment_classical
from nuclei.model import ModelConfig, ModelError, NucleiNet, create_model, load_model, save_model
from nuclei.postprocess import PostprocessConfig, instances_from_maps
from nuclei.segment import default_model, segment

__all__ = [
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

"""`nuclei.segment`: instance labels of an H&E image at any resolution, with the shipped or a given model."""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch

from nuclei.image import as_rgb_uint8, check_mpp, resize_image, resize_labels
from nuclei.inference import predict_maps, resolve_device
from nuclei.model import NucleiNet, load_model, thresholds
from nuclei.postprocess import PostprocessConfig, instances_from_maps

__all__ = ["DEFAULT_WEIGHTS", "MIN_SIZE", "default_model", "segment"]

DEFAULT_WEIGHTS = Path(__file__).parent / "weights"
MIN_SIZE = 32  # px at the model's mpp: below this the network sees less than one nucleus of context


@functools.lru_cache(maxsize=4)
def _cached_default(device: str) -> NucleiNet:
    return load_model(DEFAULT_WEIGHTS, device=device)


def default_model(device: str | torch.device = "cpu") -> NucleiNet:
    """The shipped model (nuclei/weights), loaded once per device."""
    return _cached_default(str(resolve_device(device)))


def segment(image: np.ndarray, mpp: float, model: NucleiNet | None = None, device: str | torch.device = "auto",
            postprocess: PostprocessConfig | None = None, tile: int = 512, tta: bool = False) -> np.ndarray:  # fmt: skip
    """(H, W) int32 nucleus instances of an H&E image at `mpp` um/px; 0 is background.

    The image is resampled to the model's mpp, run in `tile`-px tiles with overlap, post-processed by
    marker-controlled watershed and the labels are resampled back to (H, W). RGBA, float and uint16 images are
    converted; grayscale is refused. `model` None uses the shipped weights. `postprocess` None uses the
    model's own thresholds (`model.postprocess`, from its folder's config.json), else the defaults. `tta` averages the network's maps
    over four flips (4 forward passes; about 3.5x the end-to-end time of `segment` on CPU).
    """
    image = as_rgb_uint8(image)
    device = resolve_device(device)
    model = model if model is not None else default_model(device)
    model_mpp = model.config.mpp
    mpp = check_mpp(mpp, model_mpp)
    h, w = image.shape[:2]
    scale = mpp / model_mpp
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))
    if min(size) < MIN_SIZE:
        raise ValueError(
            f"image of {w} x {h} px at {mpp:g} um/px is {size[0]} x {size[1]} px at the model's {model_mpp:g} "
            f"um/px, smaller than its field of view ({MIN_SIZE} px); pass a larger region"
        )
    work = resize_image(image, size)
    prob, hv = predict_maps(model, work, device=device, tile=tile, tta=tta)
    labels = instances_from_maps(prob, hv, thresholds(model, postprocess))
    return resize_labels(labels, (h, w)).astype(np.int32)

"""Checking and converting user images to (H, W, 3) uint8 RGB, and resampling between resolutions."""

from __future__ import annotations

import warnings

import numpy as np
from PIL import Image

__all__ = ["as_rgb_uint8", "check_mpp", "resize_image", "resize_labels"]


def as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """An H&E image as (H, W, 3) uint8: RGBA is composited on white, floats in [0, 1] are scaled, uint16
    is reduced; grayscale and other layouts are refused (nuclei need the colour of the stains)."""
    image = np.asarray(image)
    if image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 1):
        raise ValueError(
            f"nuclei need an RGB H&E image (H, W, 3); got a grayscale image of shape {image.shape}. "
            "Stain colour carries the nuclei: pass the colour image."
        )
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W, 4) RGBA, got shape {image.shape}")
    if image.dtype == np.bool_:
        raise ValueError("image is boolean: pass the RGB image, not a mask")
    if np.issubdtype(image.dtype, np.floating):
        finite = image[np.isfinite(image)]
        top = float(finite.max()) if finite.size else 0.0
        if finite.size != image.size or finite.min(initial=0) < 0 or top > 255:
            raise ValueError(f"float image values must be finite and in [0, 1] or [0, 255], got max {top}")
        image = image * 255.0 if top <= 1.0 else image
        image = np.clip(image + 0.5, 0, 255).astype(np.uint8)
    elif image.dtype == np.uint16:
        image = (image // 257).astype(np.uint8)
    elif image.dtype != np.uint8:
        if image.min() < 0 or image.max() > 255:
            raise ValueError(
                f"integer image values must be in [0, 255], got {image.dtype} {image.min()}..{image.max()}"
            )
        image = image.astype(np.uint8)
    if image.shape[2] == 4:
        alpha = image[..., 3:4].astype(np.float32) / 255.0
        image = (image[..., :3] * alpha + 255.0 * (1 - alpha) + 0.5).astype(np.uint8)
    return np.ascontiguousarray(image)


def check_mpp(mpp: float, model_mpp: float, what: str = "model") -> float:
    """`mpp` as a float, refused if not positive; a warning when it is more than 2x from the model's."""
    try:
        mpp = float(mpp)
    except (TypeError, ValueError):
        raise ValueError(f"mpp must be a number (microns per pixel of the image), got {mpp!r}") from None
    if not np.isfinite(mpp) or mpp <= 0:
        raise ValueError(f"mpp must be positive (microns per pixel of the image), got {mpp}")
    ratio = mpp / model_mpp
    if ratio > 2 or ratio < 0.5:
        warnings.warn(
            f"image mpp {mpp:g} is far from the {what}'s {model_mpp:g} um/px: resampling by {ratio:.2g}x "
            "loses or invents detail; results will be poor",
            UserWarning,
            stacklevel=3,
        )
    return mpp


def resize_image(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(H, W, 3) uint8 resized to (w, h) = `size` with antialiased bilinear (PIL) resampling."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR, reducing_gap=None))


def resize_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(h, w) integer labels to (H, W) = `shape` by nearest neighbour (pixel centres)."""
    if labels.shape == tuple(shape):
        return labels
    ys = np.minimum(
        ((np.arange(shape[0]) + 0.5) * labels.shape[0] / shape[0]).astype(int), labels.shape[0] - 1
    )
    xs = np.minimum(
        ((np.arange(shape[1]) + 0.5) * labels.shape[1] / shape[1]).astype(int), labels.shape[1] - 1
    )
    return labels[ys][:, xs]

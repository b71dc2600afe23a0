"""Network maps to nucleus instances: marker-controlled watershed on HoVer-Net distance-map gradients."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi
from skimage.segmentation import watershed

__all__ = ["PostprocessConfig", "instances_from_maps"]


@dataclass(frozen=True)
class PostprocessConfig:
    """Thresholds (chosen on held-out synthetic tiles, never on real evaluation images); sizes in pixels at
    the model's mpp."""

    foreground: float = 0.5  # nucleus probability above which a pixel is nucleus
    centre: float = 0.5  # |(h, v)| below which a pixel is near its nucleus centre (a marker candidate)
    slope: float = 0.0  # markers need h rising along x and v along y by more than this per pixel
    min_marker: int = 2
    min_size: int = 10
    max_hole: int = (
        400  # holes up to this size are filled (pale vesicular centres); larger ones are not nuclei
    )

    def __post_init__(self):
        bad = [f.name for f in fields(self) if not math.isfinite(getattr(self, f.name))]
        if bad:
            raise ValueError(
                f"{', '.join(bad)} must be finite numbers, got {[getattr(self, n) for n in bad]}"
            )
        if not 0.0 <= self.foreground <= 1.0:
            raise ValueError(f"foreground must be a probability in [0, 1], got {self.foreground}")
        if not self.centre > 0:
            raise ValueError(f"centre must be positive, got {self.centre}")
        for name in ("min_marker", "min_size", "max_hole"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: dict, where: str = "postprocess") -> PostprocessConfig:
        """Thresholds from a JSON object (a model folder's `postprocess`): unknown keys and values of the wrong
        type are refused, naming the key; missing keys take the defaults. `where` names the object in errors."""
        if not isinstance(d, dict):
            raise ValueError(f"{where} must be an object of thresholds, got {type(d).__name__}")
        kinds = {f.name: type(f.default) for f in fields(cls)}
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise ValueError(f"{where}: unknown thresholds {unknown}; known: {sorted(kinds)}")
        values = {}
        for key, value in d.items():
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            if kinds[key] is int and not (numeric and float(value).is_integer()):
                raise ValueError(f"{where}.{key} must be an integer, got {value!r}")
            if not numeric:
                raise ValueError(f"{where}.{key} must be a number, got {value!r}")
            values[key] = kinds[key](value)
        try:
            return cls(**values)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None


def instances_from_maps(
    prob: np.ndarray, hv: np.ndarray, config: PostprocessConfig | None = None
) -> np.ndarray:
    """(H, W) int32 instances from nucleus probability (H, W) in [0, 1] and HV maps (2, H, W) in [-1, 1].

    Inside a nucleus h rises along x and v along y; between two touching nuclei they fall (from +1 on one
    side to -1 on the other), however blurred the prediction. Markers are therefore foreground pixels near a
    centre (small |(h, v)|) where both slopes are positive; a watershed floods |(h, v)| plus the falling
    slopes inside the foreground. HoVer-Net's markers (min-max normalised gradient magnitude below a
    threshold) depend on nucleus size and map sharpness: on held-out synthetic tiles, with ground-truth maps
    they reach PQ 0.62 (these 0.89), and with an early model's maps AJI 0.03 (these 0.33).
    """
    config = config or PostprocessConfig()
    if prob.ndim != 2 or hv.shape != (2, *prob.shape):
        raise ValueError(f"prob must be (H, W) and hv (2, H, W); got {prob.shape} and {hv.shape}")
    fg = _fill_small_holes(prob >= config.foreground, config.max_hole)
    lab, _ = ndi.label(fg)
    fg &= (np.bincount(lab.ravel()) >= config.min_size)[lab]
    if not fg.any():
        return np.zeros(prob.shape, np.int32)
    h, v = hv[0].astype(np.float64), hv[1].astype(np.float64)
    norm = np.sqrt(h * h + v * v)
    gx = ndi.sobel(h, axis=1) / 8.0  # per-pixel slope of h along x
    gy = ndi.sobel(v, axis=0) / 8.0
    markers = fg & (norm < config.centre) & (gx > config.slope) & (gy > config.slope)
    mlab, _ = ndi.label(markers)
    mlab[(np.bincount(mlab.ravel()) < config.min_marker)[mlab]] = 0
    surface = norm + 4.0 * (np.maximum(-gx, 0) + np.maximum(-gy, 0))
    out = watershed(surface, mlab, mask=fg).astype(np.int32)
    # Foreground blobs that got no marker are still nuclei: keep them whole.
    orphan, n = ndi.label(fg & (out == 0))
    if n:
        out[orphan > 0] = orphan[orphan > 0] + out.max()
    return _compact(out, config.min_size)


def _fill_small_holes(mask: np.ndarray, max_hole: int) -> np.ndarray:
    """`mask` with enclosed background regions of at most `max_hole` pixels filled."""
    bg, _ = ndi.label(~mask)
    small = np.bincount(bg.ravel()) <= max_hole
    small[0] = False
    border = np.concatenate([bg[0], bg[-1], bg[:, 0], bg[:, -1]])
    small[border] = False
    return mask | small[bg]


def _compact(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Drop instances under `min_size` px and renumber 1..N."""
    sizes = np.bincount(labels.ravel())
    keep = sizes >= min_size
    keep[0] = False
    lut = np.zeros(len(sizes), np.int32)
    lut[keep] = np.arange(1, keep.sum() + 1)
    return lut[labels]

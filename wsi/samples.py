"""Stored samples -> (H, W, 3 or 4) uint8 display pixels: grey, 16-bit and multichannel slides read as RGB.

The intensity mapping, for samples that are not 8-bit (16-bit grey, float): each channel is mapped linearly from
a window [lo, hi] to 0..255 and clipped, where lo and hi are the 0.1st and 99.9th percentiles of that channel's
values in the slide's coarsest level (the whole level up to 1024 x 1024 pixels, else an 8 x 8 grid of 128-pixel
boxes spread over it; read when the slide is first opened and remembered per file, so every tile of a slide
uses the same mapping). A MinIsWhite file is inverted after mapping. Channel planes (multiplex fluorescence) show their first
three channels as red, green and blue (a missing third as 0); one grey channel fills all three.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["IntensityWindow", "WINDOW_PERCENTILES", "to_display"]

WINDOW_PERCENTILES = (0.1, 99.9)
_MAX_SAMPLE = 1024 * 1024  # pixels looked at to set a window; a larger level is read as a grid of boxes


@dataclass(frozen=True)
class IntensityWindow:
    """Per-channel [lo, hi] mapped to 0..255."""

    lo: tuple[float, ...]
    hi: tuple[float, ...]

    @classmethod
    def from_sample(cls, sample: np.ndarray) -> IntensityWindow:
        """The percentile window of an (H, W, C) sample (channels last)."""
        values = sample.reshape(-1, sample.shape[-1]).astype(np.float64)
        lo, hi = np.percentile(values, WINDOW_PERCENTILES, axis=0)
        hi = np.maximum(hi, lo + 1e-6 if np.issubdtype(sample.dtype, np.floating) else lo + 1)
        return cls(tuple(float(v) for v in lo), tuple(float(v) for v in hi))

    def apply(self, samples: np.ndarray) -> np.ndarray:
        """(H, W, C) samples -> (H, W, C) uint8."""
        if samples.shape[-1] != len(self.lo):
            raise ValueError(f"expected (H, W, {len(self.lo)}) samples, got {samples.shape}")
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        scaled = (samples.astype(np.float32) - lo) * (255.0 / (hi - lo))
        return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)

    def describe(self) -> str:
        ranges = ", ".join(f"{lo:g}..{hi:g}" for lo, hi in zip(self.lo, self.hi, strict=True))
        return f"linear {ranges} -> 0..255 (percentiles {WINDOW_PERCENTILES[0]}-{WINDOW_PERCENTILES[1]})"


def sample_level(read, size: tuple[int, int], grid: int = 8, side: int = 128) -> np.ndarray:
    """Values of a level of `size` (w, h) for a window: the whole level when small, else a grid of boxes.

    `read((x, y), (w, h))` returns the level's (h, w, C) samples there.
    """
    w, h = size
    if w * h <= _MAX_SAMPLE:
        return read((0, 0), (w, h))
    bw, bh = min(w, side), min(h, side)
    boxes = [
        read((int(x), int(y)), (bw, bh))
        for y in np.linspace(0, h - bh, grid)
        for x in np.linspace(0, w - bw, grid)
    ]
    return np.concatenate([b.reshape(-1, b.shape[-1]) for b in boxes])[None]


def to_display(
    samples: np.ndarray,
    *,
    window: IntensityWindow | None,
    planar_channels: bool,
    has_alpha: bool,
    min_is_white: bool,
) -> np.ndarray:
    """(H, W) or (H, W, C) stored samples -> (H, W, 3) or (H, W, 4) uint8 (alpha kept for the caller)."""
    if samples.ndim == 2:
        samples = samples[..., None]
    alpha = None
    if has_alpha and not planar_channels:
        alpha, samples = samples[..., -1:], samples[..., :-1]
        if alpha.dtype != np.uint8:
            full = np.iinfo(alpha.dtype).max if np.issubdtype(alpha.dtype, np.integer) else 1.0  # float: 0-1
            alpha = np.clip(alpha.astype(np.float64) * (255.0 / full), 0, 255).astype(np.uint8)
    if window is not None:
        samples = window.apply(samples)
    elif samples.dtype != np.uint8:
        raise ValueError(f"{samples.dtype} samples need an intensity window")
    if min_is_white:
        samples = 255 - samples
    channels = samples.shape[-1]
    if channels == 1:
        rgb = np.repeat(samples, 3, axis=-1)
    elif channels >= 3:
        rgb = samples[..., :3]
    else:
        rgb = np.concatenate([samples, np.zeros_like(samples[..., :1])], axis=-1)
    out = rgb if alpha is None else np.concatenate([rgb, alpha], axis=-1)
    return np.ascontiguousarray(out)

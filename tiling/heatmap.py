"""Per-tile values -> an image aligned with the slide thumbnail, and a coloured overlay."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["overlay", "tile_heatmap"]


def tile_heatmap(values: np.ndarray, coords: np.ndarray, extent: float, dimensions: tuple[int, int],
                 thumbnail_shape: tuple[int, int]) -> np.ndarray:  # fmt: skip
    """(H, W) float32 map at the thumbnail's size: each tile's value over its level-0 box, NaN where no tile.

    `coords` are level-0 top-left corners, `extent` a tile's level-0 side, `dimensions` the slide's (w, h) and
    `thumbnail_shape` the (H, W) of the thumbnail to align with. Overlapping tiles are averaged.
    """
    values = np.asarray(values, dtype=np.float64).reshape(-1)
    coords = np.asarray(coords)
    if len(values) != len(coords):
        raise ValueError(f"values ({len(values)}) and coords ({len(coords)}) differ in length")
    h, w = thumbnail_shape
    sx, sy = w / dimensions[0], h / dimensions[1]
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for (x, y), v in zip(coords, values, strict=True):
        c0, r0 = int(math.floor(x * sx)), int(math.floor(y * sy))
        c1, r1 = (
            max(c0 + 1, int(math.ceil((x + extent) * sx))),
            max(r0 + 1, int(math.ceil((y + extent) * sy))),
        )
        total[r0:r1, c0:c1] += v
        count[r0:r1, c0:c1] += 1
    with np.errstate(invalid="ignore"):
        return (total / count).astype(np.float32)


def overlay(thumbnail: np.ndarray, heatmap: np.ndarray, cmap: str = "inferno", alpha: float = 0.5,
            vmin: float | None = None, vmax: float | None = None) -> np.ndarray:  # fmt: skip
    """The thumbnail with the heatmap blended in (NaN cells show the thumbnail only); (H, W, 3) uint8."""
    from matplotlib import colormaps

    if thumbnail.shape[:2] != heatmap.shape:
        raise ValueError(f"thumbnail {thumbnail.shape[:2]} and heatmap {heatmap.shape} differ in size")
    valid = np.isfinite(heatmap)
    lo = np.nanmin(heatmap) if vmin is None and valid.any() else (vmin or 0.0)
    hi = np.nanmax(heatmap) if vmax is None and valid.any() else (vmax if vmax is not None else 1.0)
    scaled = np.clip((np.nan_to_num(heatmap, nan=lo) - lo) / max(hi - lo, 1e-12), 0, 1)
    colours = colormaps[cmap](scaled)[..., :3] * 255
    out = thumbnail.astype(np.float32)
    out[valid] = (1 - alpha) * out[valid] + alpha * colours[valid]
    return out.astype(np.uint8)

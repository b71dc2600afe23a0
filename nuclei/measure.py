"""Per-nucleus outlines and measurements from an instance label image: the rows of a nuclei table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry import Polygon
from skimage.color import rgb2hed
from skimage.measure import find_contours, regionprops

__all__ = ["MEASUREMENTS", "TABLE_COLUMNS", "Placement", "measure_instances"]

# Measurement columns of a nuclei table (also the QuPath measurement names), in this order.
MEASUREMENTS = ("area_um2", "perimeter_um", "eccentricity", "solidity", "hematoxylin_od", "type_probability")
# Every column of a nuclei table: centroid (level-0 px), polygon (WKB, level-0 px), measurements, type, tile.
TABLE_COLUMNS = ("x", "y", "geometry", *MEASUREMENTS, "type", "tile")


@dataclass(frozen=True)
class Placement:
    """Where an image lies on the slide: image pixel (col, row) covers level-0 x from `x0 + col * scale` to
    `x0 + (col + 1) * scale` (same for rows and y); `um_per_px` is the image's resolution. A nucleus is kept
    when its level-0 centroid lies in the half-open box `owns` (x0, y0, x1, y1); None keeps every nucleus."""

    x0: float
    y0: float
    scale: float
    um_per_px: float
    owns: tuple[float, float, float, float] | None = None


def _outline(mask: np.ndarray) -> np.ndarray | None:
    """(K, 2) (row, col) outline of a boolean crop along the pixel-edge midpoints, or None when degenerate."""
    contours = find_contours(np.pad(mask, 1).astype(np.float32), 0.5)
    if not contours:
        return None
    ring = max(contours, key=len) - 1.0  # undo the pad
    return ring if len(ring) >= 4 else None


def measure_instances(labels: np.ndarray, image: np.ndarray, placement: Placement,
                      type_probs: np.ndarray | None = None, classes: tuple[str, ...] = (),
                      simplify: float = 0.3) -> dict[str, list]:  # fmt: skip
    """Columns of the nuclei table (`TABLE_COLUMNS` but `tile`) for the instances of `labels` (H, W) whose
    centroid `placement` owns.

    `image` (H, W, 3) uint8 gives the mean hematoxylin optical density (Ruifrok-Johnston deconvolution).
    `type_probs` (K, H, W) are per-pixel class probabilities with `classes` naming them, index 0 background;
    a nucleus gets the non-background class of highest mean probability, and that class's share of the
    non-background mean as its probability. Without them `type` is "" and the probability NaN. Outlines are
    simplified by `simplify` image pixels (shape-preserving) and mapped to level-0 pixels.
    """
    if labels.ndim != 2 or image.shape != (*labels.shape, 3):
        raise ValueError(f"labels must be (H, W) and image (H, W, 3); got {labels.shape} and {image.shape}")
    if type_probs is not None and (type_probs.ndim != 3 or type_probs.shape[1:] != labels.shape):
        raise ValueError(f"type_probs must be (K, H, W) with (H, W) = {labels.shape}, got {type_probs.shape}")
    columns: dict[str, list] = {name: [] for name in TABLE_COLUMNS if name != "tile"}
    if not labels.any():
        return columns
    hema = rgb2hed(image)[..., 0]
    p = placement
    px_area = p.um_per_px**2
    for region in regionprops(labels, intensity_image=hema):
        r, c = region.centroid
        x, y = p.x0 + (c + 0.5) * p.scale, p.y0 + (r + 0.5) * p.scale
        if p.owns is not None and not (p.owns[0] <= x < p.owns[2] and p.owns[1] <= y < p.owns[3]):
            continue
        ring = _outline(region.image)
        if ring is None:
            continue
        r0, c0 = region.bbox[:2]
        xs = p.x0 + (ring[:, 1] + c0 + 0.5) * p.scale
        ys = p.y0 + (ring[:, 0] + r0 + 0.5) * p.scale
        polygon = Polygon(np.stack([xs, ys], axis=1))
        if simplify:
            polygon = polygon.simplify(simplify * p.scale, preserve_topology=True)
        if not polygon.is_valid:
            polygon = shapely.make_valid(polygon)
            parts = [g for g in shapely.get_parts(polygon) if g.geom_type == "Polygon"]
            if not parts:
                continue
            polygon = max(parts, key=lambda g: g.area)
        if polygon.is_empty:
            continue
        kind, probability = "", float("nan")
        if type_probs is not None:
            mean = type_probs[:, region.coords[:, 0], region.coords[:, 1]].mean(axis=1)
            best = 1 + int(np.argmax(mean[1:]))
            kind = classes[best] if best < len(classes) else str(best)
            probability = float(mean[best] / max(mean[1:].sum(), 1e-12))
        columns["x"].append(x)
        columns["y"].append(y)
        columns["geometry"].append(shapely.to_wkb(polygon))
        columns["area_um2"].append(region.area * px_area)
        columns["perimeter_um"].append(region.perimeter * p.um_per_px)
        columns["eccentricity"].append(region.eccentricity)
        columns["solidity"].append(region.solidity)
        columns["hematoxylin_od"].append(region.intensity_mean)
        columns["type_probability"].append(probability)
        columns["type"].append(kind)
    return columns

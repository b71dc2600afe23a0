"""Per-nucleus outlines and measurements from an instance label image: the rows of a nuclei table."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from scipy import ndimage as ndi
from shapely.geometry import Polygon
from skimage.color import rgb2hed
from skimage.measure import find_contours

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


def _valid(polygon: Polygon) -> Polygon | None:
    """`polygon` made valid (its largest part), or None when nothing areal is left."""
    if polygon.is_valid and not polygon.is_empty:
        return polygon
    parts = [g for g in shapely.get_parts(shapely.make_valid(polygon)) if g.geom_type == "Polygon"]
    return max(parts, key=lambda g: g.area) if parts else None


def _eccentricity(rows: np.ndarray, cols: np.ndarray) -> float:
    """Eccentricity of the ellipse with the pixels' second moments (as skimage's regionprops)."""
    if len(rows) < 2:
        return 0.0
    cov = np.cov(np.stack([rows, cols]).astype(np.float64), bias=True)
    small, large = np.linalg.eigvalsh(cov)
    return float(np.sqrt(max(0.0, 1 - small / large))) if large > 0 else 0.0


def measure_instances(labels: np.ndarray, image: np.ndarray, placement: Placement,
                      type_probs: np.ndarray | None = None, classes: tuple[str, ...] = (),
                      simplify: float = 0.3) -> dict[str, list]:  # fmt: skip
    """Columns of the nuclei table (`TABLE_COLUMNS` but `tile`) for the instances of `labels` (H, W) whose
    centroid `placement` owns.

    `image` (H, W, 3) uint8 gives the mean hematoxylin optical density (Ruifrok-Johnston deconvolution).
    `type_probs` (K, H, W) are per-pixel class probabilities with `classes` naming them, index 0 background;
    a nucleus gets the non-background class of highest mean probability, and that class's share of the
    non-background mean as its probability. Without them `type` is "" and the probability NaN. Outlines run
    along the pixel-edge midpoints, are simplified by `simplify` image pixels and mapped to level-0 pixels;
    area is the pixel count, perimeter the outline's length, solidity the outline's share of its convex hull.
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
    for index, box in enumerate(ndi.find_objects(labels), start=1):
        if box is None:
            continue
        crop = labels[box] == index
        rows, cols = np.nonzero(crop)
        r0, c0 = box[0].start, box[1].start
        x = p.x0 + (cols.mean() + c0 + 0.5) * p.scale
        y = p.y0 + (rows.mean() + r0 + 0.5) * p.scale
        if p.owns is not None and not (p.owns[0] <= x < p.owns[2] and p.owns[1] <= y < p.owns[3]):
            continue
        ring = _outline(crop)
        if ring is None:
            continue
        outline = Polygon(np.stack([p.x0 + (ring[:, 1] + c0 + 0.5) * p.scale,
                                    p.y0 + (ring[:, 0] + r0 + 0.5) * p.scale], axis=1))  # fmt: skip
        polygon = _valid(outline.simplify(simplify * p.scale, preserve_topology=False)) if simplify else None
        polygon = polygon or _valid(outline)
        if polygon is None:
            continue
        kind, probability = "", float("nan")
        if type_probs is not None:
            mean = type_probs[:, rows + r0, cols + c0].mean(axis=1)
            best = 1 + int(np.argmax(mean[1:]))
            kind = classes[best] if best < len(classes) else str(best)
            probability = float(mean[best] / max(mean[1:].sum(), 1e-12))
        hull = polygon.convex_hull.area
        columns["x"].append(x)
        columns["y"].append(y)
        columns["geometry"].append(shapely.to_wkb(polygon))
        columns["area_um2"].append(len(rows) * p.um_per_px**2)
        columns["perimeter_um"].append(outline.length / p.scale * p.um_per_px)
        columns["eccentricity"].append(_eccentricity(rows, cols))
        columns["solidity"].append(min(1.0, polygon.area / hull) if hull > 0 else 1.0)
        columns["hematoxylin_od"].append(float(hema[rows + r0, cols + c0].mean()))
        columns["type_probability"].append(probability)
        columns["type"].append(kind)
    return columns

"""Seams between tiles: a nucleus whose centroid lies within a few pixels of a core edge can be seen by both
tiles with centroids that differ by a fraction of a pixel (each tile's network sees other context, and
resampled tiles other pixel phases), so strict ownership could keep it twice or drop it. Each tile therefore
keeps nuclei whose centroid lies in its core grown by a `guard` band, and `seam_duplicates` removes the second
copy of a nucleus found by two tiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import shapely

__all__ = ["near_seam", "seam_duplicates"]


def near_seam(table: pd.DataFrame, cores: np.ndarray, margin: float) -> np.ndarray:
    """Boolean mask of the rows that could have a copy in another tile: centroid outside its tile's core (in
    the guard band) or less than `margin` level-0 px inside it. `cores` (N_tiles, 4) holds each tile's level-0
    core box (x0, y0, x1, y1). Two tiles' outlines of one nucleus can differ by pixels, so `margin` should be
    about a nucleus radius, not just the guard band."""
    if not len(table):
        return np.zeros(0, bool)
    return _depth(table, cores) < margin


def seam_duplicates(candidates: pd.DataFrame, cores: np.ndarray, min_iou: float = 0.3) -> np.ndarray:
    """Positions (into `candidates`, rows near seams) of the second copies to drop: of two nuclei from
    different tiles overlapping at IoU > `min_iou`, the one whose centroid lies in its own core is kept (if
    both or neither do, the one with the centroid deeper inside its own core)."""
    if len(candidates) < 2:
        return np.zeros(0, np.int64)
    polygons = shapely.from_wkb(candidates["geometry"].to_numpy())
    tiles = candidates["tile"].to_numpy()
    tree = shapely.STRtree(polygons)
    left, right = tree.query(polygons, predicate="intersects")
    keep = (left < right) & (tiles[left] != tiles[right])
    left, right = left[keep], right[keep]
    if not len(left):
        return np.zeros(0, np.int64)
    inter = shapely.area(shapely.intersection(polygons[left], polygons[right]))
    union = shapely.area(polygons[left]) + shapely.area(polygons[right]) - inter
    same = inter / np.maximum(union, 1e-12) > min_iou
    left, right = left[same], right[same]
    depth = _depth(candidates, cores)
    drop = set()
    for a, b in sorted(zip(left.tolist(), right.tolist(), strict=True)):
        if a in drop or b in drop:
            continue
        drop.add(b if depth[a] >= depth[b] else a)
    return np.array(sorted(drop), np.int64)


def _depth(table: pd.DataFrame, cores: np.ndarray) -> np.ndarray:
    """How far each centroid lies inside its own tile's core (negative outside), level-0 px."""
    box = cores[table["tile"].to_numpy()]
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    return np.min(np.stack([x - box[:, 0], box[:, 2] - x, y - box[:, 1], box[:, 3] - y]), axis=0)

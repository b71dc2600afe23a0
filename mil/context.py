"""Spatial context for MIL tiles: each tile's features next to a summary of its neighbours' on the tile grid.

MIL models score tiles independently of where they lie, so a tile of lymphocytes next to tumour looks the same
as one in a lymphoid aggregate far from it. `SpatialContext` appends, to each tile's features, the mean (and / or
the max) of the features of the tiles within `radius` grid steps (Chebyshev distance: radius 1 is the tile and
its 8 neighbours), computed per bag from the tile coordinates. The result is a wider feature vector that any
registered model takes; the transform is a plain function of the bag, so training and prediction apply the
same one (model folders keep it, `slidestream mil train --context`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["CONTEXT_STATS", "SpatialContext"]

CONTEXT_STATS = ("mean", "max")


@dataclass(frozen=True)
class SpatialContext:
    """Tile features -> [features, neighbourhood mean, neighbourhood max] (the stats asked for, in that order).

    The neighbourhood of a tile is every tile of the bag within `radius` grid steps in x and in y, the tile
    itself included, so it is never empty; grid cells without a tile (background, tiles left out) do not count.
    """

    radius: int = 1
    stats: tuple[str, ...] = ("mean",)

    def __post_init__(self):
        if int(self.radius) != self.radius or self.radius < 1:
            raise ValueError(f"context radius must be a whole number of tiles >= 1, got {self.radius}")
        stats = tuple(self.stats)
        if not stats or len(set(stats)) != len(stats) or any(s not in CONTEXT_STATS for s in stats):
            raise ValueError(
                f"context stats must be one or more of {CONTEXT_STATS} (no repeats), got {stats}"
            )
        object.__setattr__(self, "stats", stats)

    def out_dim(self, dim: int) -> int:
        """The feature dimension after the transform, for `dim` features per tile."""
        return dim * (1 + len(self.stats))

    def __call__(self, features: np.ndarray, coords: np.ndarray, step: float) -> np.ndarray:
        """`features` (N, D) of one bag's tiles, `coords` (N, 2) their level-0 (x, y) top-left corners, `step`
        the grid's stride in level-0 pixels -> (N, D * (1 + len(stats))) float32, row order kept."""
        features = np.asarray(features, dtype=np.float32)
        coords = np.asarray(coords, dtype=np.float64)
        if features.ndim != 2:
            raise ValueError(f"features must have shape (N, D), got {features.shape}")
        if coords.shape != (len(features), 2):
            raise ValueError(f"coords must have shape (N, 2) = ({len(features)}, 2), got {coords.shape}")
        if not np.isfinite(step) or step <= 0:
            raise ValueError(f"the grid step must be a positive number of level-0 pixels, got {step}")
        if len(features) == 0:
            return np.zeros((0, self.out_dim(features.shape[1])), dtype=np.float32)
        cells = np.round(coords / step).astype(np.int64)
        cells -= cells.min(axis=0)
        if len(np.unique(cells, axis=0)) != len(cells):
            raise ValueError(f"two tiles fall on one grid cell at step {step}: the coordinates are not those "
                             "of one tile grid with that stride")  # fmt: skip
        width, height = cells.max(axis=0) + 1
        x, y = cells[:, 0], cells[:, 1]
        size = 2 * int(self.radius) + 1
        present = np.zeros((height, width), dtype=np.float64)
        present[y, x] = 1.0
        parts = [features]
        if "mean" in self.stats:
            grid = np.zeros((height, width, features.shape[1]), dtype=np.float64)
            grid[y, x] = features
            # Window sums over the present tiles (a box filter times the window's area), divided by their count.
            sums = ndimage.uniform_filter(grid, size=(size, size, 1), mode="constant") * size * size
            counts = ndimage.uniform_filter(present, size=size, mode="constant") * size * size
            parts.append((sums[y, x] / np.maximum(np.round(counts[y, x]), 1.0)[:, None]).astype(np.float32))
        if "max" in self.stats:
            grid = np.full((height, width, features.shape[1]), -np.inf, dtype=np.float32)
            grid[y, x] = features
            parts.append(
                ndimage.maximum_filter(grid, size=(size, size, 1), mode="constant", cval=-np.inf)[y, x]
            )
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"radius": int(self.radius), "stats": list(self.stats)}

    @classmethod
    def from_dict(cls, state: dict | None) -> SpatialContext | None:
        """The transform a model folder or plan recorded; None (no context) for None."""
        if state is None:
            return None
        return cls(int(state["radius"]), tuple(state.get("stats", ("mean",))))

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
        cells = np.round((coords - coords.min(axis=0)) / step).astype(np.int64)  # from the grid's own origin
        # Each tile's cell as one sorted int64 key (row-major, rows padded by the radius so that no offset wraps
        # to the next row); a neighbour is found by binary search. O(N * D) memory and O(N log N) time whatever
        # the grid's extent: no dense (H, W) or (H, W, D) grid (two far-apart tiles would make one huge).
        r = int(self.radius)
        row = int(cells[:, 0].max()) + 2 * r + 1
        keys = cells[:, 1] * row + cells[:, 0]
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        if (np.diff(sorted_keys) == 0).any():
            raise ValueError(f"two tiles fall on one grid cell at step {step}: the coordinates are not those "
                             "of one tile grid with that stride")  # fmt: skip
        sums = np.zeros_like(features) if "mean" in self.stats else None
        maxima = np.full_like(features, -np.inf) if "max" in self.stats else None
        counts = np.zeros(len(features), dtype=np.int64)
        for dy in range(-r, r + 1):
            for dx in range(-r, r + 1):
                wanted = keys + (dy * row + dx)
                at = np.minimum(np.searchsorted(sorted_keys, wanted), len(keys) - 1)
                has = np.flatnonzero(sorted_keys[at] == wanted)
                if not len(has):
                    continue
                neighbour = order[at]
                found = features[neighbour[has]]
                counts[has] += 1
                if sums is not None:
                    sums[has] += found
                if maxima is not None:
                    np.maximum(maxima[has], found, out=found)
                    maxima[has] = found
        parts = [features]
        if sums is not None:
            parts.append(sums / counts[:, None].astype(np.float32))  # the tile itself: never 0
        if maxima is not None:
            parts.append(maxima)
        return np.concatenate(parts, axis=1).astype(np.float32, copy=False)

    def to_dict(self) -> dict:
        return {"radius": int(self.radius), "stats": list(self.stats)}

    @classmethod
    def from_options(
        cls, radius: int | None, stats: str | tuple[str, ...] | None = None
    ) -> SpatialContext | None:
        """The transform of command-line options: `radius` in tiles (0 or None: no context) and `stats`, a
        comma-separated string ("mean,max") or a tuple (None: mean). Stats without a radius are an error (they
        would be ignored)."""
        if stats is not None and isinstance(stats, str):
            stats = tuple(s.strip() for s in stats.split(","))
        if not radius:
            if stats is not None:
                raise ValueError(f"context stats {list(stats)} need a context radius >= 1 (--context R)")
            return None
        return cls(radius, ("mean",) if stats is None else stats)

    @classmethod
    def from_dict(cls, state: dict | None) -> SpatialContext | None:
        """The transform a model folder or plan recorded; None (no context) for None."""
        if state is None:
            return None
        return cls(int(state["radius"]), tuple(state.get("stats", ("mean",))))

"""Nuclear features per patch-store tile: count, density, mean area and type fractions of the nuclei whose
centroid lies in each tile (for MIL features and heatmaps)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

__all__ = ["TileStats"]


class TileStats:
    """Accumulates nuclei tables into per-tile features of a grid of square tiles.

    `coords` (N, 2) are level-0 top-left corners on a grid of step `stride0` level-0 pixels, each tile
    `extent` level-0 pixels wide (overlapping tiles each count a nucleus); `slide_mpp` converts to mm^2.
    `classes` are the model's class names, index 0 background (empty: no type fractions).
    """

    def __init__(self, coords: np.ndarray, stride0: float, extent: float, slide_mpp: float,
                 classes: tuple[str, ...] = ()):  # fmt: skip
        coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
        self.coords, self.stride0, self.extent = coords, float(stride0), float(extent)
        self.tile_mm2 = (extent * slide_mpp / 1000.0) ** 2
        self.types = tuple(classes[1:])
        self.count = np.zeros(len(coords))
        self.area = np.zeros(len(coords))
        self.by_type = np.zeros((len(coords), len(self.types)))
        keys = self._key(np.round(coords[:, 0] / stride0), np.round(coords[:, 1] / stride0))
        self._order = np.argsort(keys)
        self._keys = keys[self._order]
        self._reach = max(1, math.ceil(extent / stride0))

    @staticmethod
    def _key(kx: np.ndarray, ky: np.ndarray) -> np.ndarray:
        return kx.astype(np.int64) * (1 << 31) + ky.astype(np.int64)

    @property
    def columns(self) -> list[str]:
        return ["count", "density_mm2", "mean_area_um2", *[f"fraction_{t}" for t in self.types]]

    def add(self, table: pd.DataFrame) -> None:
        """Count the nuclei of `table` (columns x, y, area_um2, type) into the tiles holding their centroid."""
        if not len(table) or not len(self.coords):
            return
        x, y = table["x"].to_numpy(), table["y"].to_numpy()
        area = table["area_um2"].to_numpy(dtype=np.float64)
        kind = table["type"].to_numpy()
        type_index = np.array([self.types.index(k) if k in self.types else -1 for k in kind], dtype=np.int64)
        fx, fy = np.floor(x / self.stride0), np.floor(y / self.stride0)
        for dx in range(self._reach):
            for dy in range(self._reach):
                keys = self._key(fx - dx, fy - dy)
                pos = np.clip(np.searchsorted(self._keys, keys), 0, len(self._keys) - 1)
                rows = self._order[pos]
                tx, ty = self.coords[rows, 0], self.coords[rows, 1]
                hit = (self._keys[pos] == keys) & (tx <= x) & (x < tx + self.extent) & (ty <= y) & (
                    y < ty + self.extent)  # fmt: skip
                np.add.at(self.count, rows[hit], 1)
                np.add.at(self.area, rows[hit], area[hit])
                typed = hit & (type_index >= 0)
                np.add.at(self.by_type, (rows[typed], type_index[typed]), 1)

    def values(self) -> np.ndarray:
        """(N, len(columns)) float32: count, nuclei per mm^2 of tile, mean area (NaN without nuclei), type
        fractions (of the tile's nuclei; NaN without nuclei)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_area = np.where(self.count > 0, self.area / self.count, np.nan)
            fractions = np.where(self.count[:, None] > 0, self.by_type / self.count[:, None], np.nan)
        table = np.column_stack([self.count, self.count / self.tile_mm2, mean_area, fractions])
        return table.astype(np.float32)

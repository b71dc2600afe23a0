"""Tile grids at a target resolution: exact level-0 coordinates, tissue fraction per tile, edge flags."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import shapely
from shapely.geometry.base import BaseGeometry

import wsi
from tiling.config import ROI_MODES, TilingConfig
from tiling.roi import clip_roi
from tiling.tissue import TissueParams, detect_tissue, drop_fragments

__all__ = ["TileGrid", "TileSpec", "detection_min_area_um2", "min_fragment_area", "tile_region"]

# Tissue fraction of a tile is the share of an n x n lattice of points inside the tissue geometry.
_SAMPLES = 8


@dataclass(frozen=True)
class TileSpec:
    """What one tile is. `size` / `stride` are output pixels at `mpp`; the read happens at `level`.

    A tile covers `extent` level-0 pixels (size * mpp / slide mpp, not necessarily whole); tile k of a row starts
    at round(k * stride_level0), so coordinates never drift across the slide. `read_size` is the box read at
    `level` before the resize to `size` (equal to `size` when the level's mpp equals the target).
    """

    size: int
    stride: int
    mpp: float
    slide_mpp: float
    level: int
    downsample: float

    @property
    def scale(self) -> float:
        """Level-0 pixels per output pixel."""
        return self.mpp / self.slide_mpp

    @property
    def extent(self) -> float:
        return self.size * self.scale

    @property
    def stride_level0(self) -> float:
        return self.stride * self.scale

    @property
    def read_size(self) -> int:
        return max(1, round(self.extent / self.downsample))

    @property
    def needs_resize(self) -> bool:
        return self.read_size != self.size

    @classmethod
    def for_slide(cls, slide: wsi.Slide, config: TilingConfig) -> TileSpec:
        """The spec of `config`'s tiles on `slide`, read from the finest level not coarser than the target mpp
        (`config.target_mpp`: `config.mpp`, or what `config.magnification` means on this slide)."""
        slide_mpp = slide.mpp  # raises MissingMppError naming --slide-mpp
        mpp = config.target_mpp(slide.meta)
        level = slide.best_level_for_mpp(mpp)
        stride = config.size if config.stride is None else config.stride
        downsample = float(slide.meta.level_downsamples[level])
        return cls(config.size, stride, mpp, slide_mpp, level, downsample)

    @classmethod
    def from_dict(cls, data: dict) -> TileSpec:
        """The spec stored in a patch store's attrs["tiling"] (extra keys ignored)."""
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return {"size": self.size, "stride": self.stride, "mpp": self.mpp, "slide_mpp": self.slide_mpp,
                "level": self.level, "downsample": self.downsample, "read_size": self.read_size}  # fmt: skip


@dataclass(frozen=True)
class TileGrid:
    """Tiles kept for a slide: level-0 top-left `coords` (N, 2) int64, `tissue` fraction (N,), `edge` flags (N,).

    Edge tiles reach past the slide border; those pixels read as white.
    """

    spec: TileSpec
    coords: np.ndarray
    tissue: np.ndarray
    edge: np.ndarray
    dimensions: tuple[int, int]
    min_tissue: float

    def __len__(self) -> int:
        return len(self.coords)

    @classmethod
    def from_slide(
        cls,
        slide: wsi.Slide,
        size: int = 256,
        mpp: float | None = 0.5,
        stride: int | None = None,
        min_tissue: float = 0.5,
        roi: BaseGeometry | None = None,
        roi_mode: str = "restrict",
        tissue: BaseGeometry | None = None,
        magnification: float | None = None,
    ) -> TileGrid:
        """Grid of `size` px tiles at `mpp` (or `magnification`), every `stride` px (default: no overlap).

        Tiles are kept when at least `min_tissue` of them is tissue (0 keeps every tile). `tissue` defaults to
        `detect_tissue(slide)`; `roi` (level-0 geometry) restricts it (`roi_mode="restrict"`) or replaces it
        (`"replace"`). The values are checked as `TilingConfig` checks them.
        """
        if magnification is not None:
            mpp = wsi.magnification_to_mpp(magnification)
        config = TilingConfig(size=size, mpp=mpp, stride=stride, min_tissue=min_tissue, roi_mode=roi_mode)
        return cls.from_config(slide, config, roi=roi, tissue=tissue)

    @classmethod
    def from_config(
        cls,
        slide: wsi.Slide,
        config: TilingConfig,
        roi: BaseGeometry | None = None,
        tissue: BaseGeometry | None = None,
    ) -> TileGrid:
        """Grid of `slide` for `config` (size, mpp, stride, min_tissue, roi_mode, min_fragment_um2), keeping
        tiles in `tile_region(slide, roi, config.roi_mode, tissue, min_fragment)`."""
        spec = TileSpec.for_slide(slide, config)
        region = tile_region(slide, roi, config.roi_mode, tissue, min_fragment_area(spec, config))
        return cls.from_region(spec, slide.meta.dimensions, region, config.min_tissue)

    @classmethod
    def from_region(cls, spec: TileSpec, dimensions: tuple[int, int], region: BaseGeometry | None,
                    min_tissue: float) -> TileGrid:  # fmt: skip
        """Grid over a slide of `dimensions` keeping tiles with >= `min_tissue` of `region` (None: all tiles)."""
        w0, h0 = dimensions
        step = spec.stride_level0
        nx = max(1, math.ceil((w0 - 0.5) / step)) if w0 > 0 else 0
        ny = max(1, math.ceil((h0 - 0.5) / step)) if h0 > 0 else 0
        xs = np.round(np.arange(nx) * step).astype(np.int64)
        ys = np.round(np.arange(ny) * step).astype(np.int64)
        xs, ys = xs[xs < w0], ys[ys < h0]
        gx, gy = np.meshgrid(xs, ys)
        coords = np.stack([gx.ravel(), gy.ravel()], axis=1)
        if region is None:
            fraction = np.ones(len(coords), np.float32)
        elif region.is_empty:
            fraction = np.zeros(len(coords), np.float32)
        else:
            fraction = _tissue_fraction(region, coords, spec.extent)
        keep = fraction >= min_tissue
        coords = coords[keep]
        edge = (coords[:, 0] + spec.extent > w0 + 1e-6) | (coords[:, 1] + spec.extent > h0 + 1e-6)
        return cls(
            spec, coords, fraction[keep].astype(np.float32), edge, (int(w0), int(h0)), float(min_tissue)
        )


def min_fragment_area(spec: TileSpec, config: TilingConfig) -> float:
    """`config.min_fragment_um2` in level-0 px^2 (default: 3 tiles' area)."""
    if config.min_fragment_um2 is None:
        return 3 * spec.extent**2
    return config.min_fragment_um2 / spec.slide_mpp**2


def detection_min_area_um2(min_fragment: float, slide_mpp: float | None) -> float:
    """Tissue detection's `min_area_um2` for a grid that drops pieces under `min_fragment` level-0 px^2 (on a
    slide of `slide_mpp`): detection's own default (`TissueParams.min_area_um2`, 20,000 um^2), or less when the
    grid keeps smaller pieces, so that `min_fragment_um2` is the one knob (detection keeps what the grid
    keeps)."""
    default = TissueParams.min_area_um2
    if not slide_mpp:
        return default
    return min(default, min_fragment * slide_mpp**2)


def tile_region(
    slide: wsi.Slide,
    roi: BaseGeometry | None,
    roi_mode: str = "restrict",
    tissue: BaseGeometry | None = None,
    min_fragment: float = 0.0,
) -> BaseGeometry:
    """Where tiles are kept (level-0 geometry): the tissue (`tissue`, else `detect_tissue(slide)` keeping pieces
    down to `min_fragment`: `detection_min_area_um2`) restricted to `roi`, or `roi` itself when `roi_mode` is
    "replace" (then no tissue is detected). The ROI is clipped to the slide; one lying wholly outside it is a
    ValueError ("ROI outside the slide"). Pieces of tissue under `min_fragment` level-0 px^2 (after the ROI
    cut) are dropped; a replacing ROI is kept as drawn."""
    if roi_mode not in ROI_MODES:
        raise ValueError(f"roi_mode must be one of {list(ROI_MODES)}, got {roi_mode!r}")
    if roi is not None:  # clipped to the slide; one that misses the slide is an error
        clipped = clip_roi(roi, slide.meta.dimensions, str(slide.path))
        _check_roi(slide, roi)  # one that reaches past the slide's edge is warned about
        roi = clipped
    if roi is not None and roi_mode == "replace":
        return roi
    if tissue is None:
        tissue = detect_tissue(slide, min_area_um2=detection_min_area_um2(min_fragment, slide.meta.mpp))
    region = tissue
    if roi is not None:
        kept = region.intersection(roi)
        if kept.is_empty and not region.is_empty:
            warnings.warn(f"{slide.path}: the ROI holds none of the detected tissue, so no tile is kept (roi_mode "
                          '"replace" tiles the ROI itself)', stacklevel=3)  # fmt: skip
        region = kept
    return drop_fragments(region, min_fragment)


def _check_roi(slide: wsi.Slide, roi: BaseGeometry) -> None:
    """Warn when a ROI reaches outside the slide: usually coordinates that are not level-0 pixels."""
    w, h = slide.meta.dimensions
    x0, y0, x1, y1 = roi.bounds
    if x0 < -1 or y0 < -1 or x1 > w + 1 or y1 > h + 1:
        warnings.warn(f"{slide.path}: the ROI reaches outside the slide ({w} x {h} px; ROI bounds {x0:.0f}, {y0:.0f} "
                      f"to {x1:.0f}, {y1:.0f}); it is clipped to the slide. ROI coordinates are level-0 pixels",
                      stacklevel=4)  # fmt: skip


def _tissue_fraction(
    region: BaseGeometry, coords: np.ndarray, extent: float, batch: int = 8192
) -> np.ndarray:
    """Share of an 8 x 8 point lattice inside `region` for each tile. Only tiles near the region are tested,
    in batches, so memory does not grow with the slide."""
    fraction = np.zeros(len(coords), np.float32)
    x0, y0, x1, y1 = region.bounds
    near = (
        (coords[:, 0] + extent >= x0)
        & (coords[:, 0] <= x1)
        & (coords[:, 1] + extent >= y0)
        & (coords[:, 1] <= y1)
    )
    offsets = (np.arange(_SAMPLES) + 0.5) / _SAMPLES * extent
    ox, oy = (o.ravel()[None, :] for o in np.meshgrid(offsets, offsets))
    shapely.prepare(region)
    index = np.flatnonzero(near)
    for start in range(0, len(index), batch):
        rows = index[start : start + batch]
        px, py = coords[rows, 0][:, None] + ox, coords[rows, 1][:, None] + oy
        inside = shapely.contains_xy(region, px.ravel(), py.ravel()).reshape(px.shape)
        fraction[rows] = inside.mean(axis=1)
    return fraction

"""Tiling: tissue detection, tile grids at a target mpp, streaming zarr v3 patch stores, torch datasets, heatmaps.

Coordinates are level-0 (x, y) pixels of a tile's top-left corner; sizes are output pixels at the target mpp.
"""

from tiling.config import TilingConfig
from tiling.engine import TilingResult, tile_slide, tile_slide_result
from tiling.grid import TileGrid, TileSpec, tile_region
from tiling.heatmap import overlay, tile_heatmap
from tiling.jpeg_codec import JpegCodec
from tiling.reader import TileReader
from tiling.roi import RoiError
from tiling.store import CODECS, PatchStore, StoreError
from tiling.tissue import TissueParams, detect_tissue, detect_tissue_result, load_roi, write_tissue_geojson

__all__ = [
    "CODECS",
    "JpegCodec",
    "PatchBatches",
    "PatchDataset",
    "PatchStore",
    "RoiError",
    "StoreError",
    "TileGrid",
    "TileReader",
    "TileSpec",
    "TilingConfig",
    "TilingResult",
    "TissueParams",
    "detect_tissue",
    "detect_tissue_result",
    "load_roi",
    "overlay",
    "tile_heatmap",
    "tile_reader_for",
    "tile_region",
    "tile_slide",
    "tile_slide_result",
    "write_tissue_geojson",
]

# Imported on first use: tiling.dataset imports torch (seconds, and hundreds of MB), which tiling a slide
# does not need; every worker of a tile-only run would pay it.
_LAZY = {
    "PatchBatches": "tiling.dataset",
    "PatchDataset": "tiling.dataset",
    "tile_reader_for": "tiling.dataset",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'tiling' has no attribute {name!r}")

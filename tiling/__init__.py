"""Tiling: tissue detection, tile grids at a target mpp, streaming zarr v3 patch stores, torch datasets, heatmaps.

Coordinates are level-0 (x, y) pixels of a tile's top-left corner; sizes are output pixels at the target mpp.
"""

from tiling.config import TilingConfig
from tiling.dataset import PatchBatches, PatchDataset, tile_reader_for
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

"""Nuclei datasets: synthetic tiles, and loaders for PanNuke, MoNuSeg/Kumar, CoNSeP/Lizard and mask folders.

tiles = nuclei.datasets.load_dataset("PanNuke/")          # layout detected from the files
tiles = nuclei.datasets.synthetic_tiles(500, seed=0)
"""

from nuclei.datasets import consep, folder, monuseg, pannuke  # noqa: F401  (register their layouts)
from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.monuseg import rasterize_polygons, read_geojson_polygons, read_xml_polygons
from nuclei.datasets.pannuke import pannuke_instances
from nuclei.datasets.registry import list_layouts, load_dataset, register_layout
from nuclei.datasets.split import grid_split, image_split, real_split, resample_tiles
from nuclei.datasets.synthetic import cached_synthetic_tiles, synthetic_tiles

__all__ = [
    "DatasetError",
    "cached_synthetic_tiles",
    "grid_split",
    "image_split",
    "NucleiTiles",
    "list_layouts",
    "load_dataset",
    "pannuke_instances",
    "rasterize_polygons",
    "read_geojson_polygons",
    "read_xml_polygons",
    "real_split",
    "register_layout",
    "resample_tiles",
    "synthetic_tiles",
]

"""MoNuSeg / Kumar: H&E images (.tif/.png) with Aperio-style XML nucleus polygons of the same name, 40x.

The XML holds `Annotation/Regions/Region/Vertices/Vertex` elements with X and Y attributes in pixels.
Also: GeoJSON polygon reading and polygon rasterisation, shared with evaluation on reference polygons.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from nuclei.datasets._io import images_by_stem, read_rgb
from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.registry import register_layout

__all__ = ["load_monuseg", "rasterize_polygons", "read_geojson_polygons", "read_xml_polygons"]

MONUSEG_MPP = 0.25


def read_xml_polygons(path: Path) -> list[np.ndarray]:
    """(n, 2) x, y pixel vertices of each region in a MoNuSeg XML file."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise DatasetError(f"{path}: not readable XML ({exc})") from exc
    polys = []
    for region in root.iter("Region"):
        pts = [(float(v.get("X")), float(v.get("Y"))) for v in region.iter("Vertex")]
        if len(pts) >= 3:
            polys.append(np.array(pts))
    return polys


def read_geojson_polygons(path: str | Path) -> list[np.ndarray]:
    """Exterior rings (n, 2) of the Polygon / MultiPolygon features of a GeoJSON file, in pixel coordinates."""
    data = json.loads(Path(path).read_text())
    feats = data["features"] if data.get("type") == "FeatureCollection" else [data]
    polys = []
    for f in feats:
        geom = f.get("geometry") or {}
        rings = ([geom["coordinates"]] if geom.get("type") == "Polygon" else
                 geom.get("coordinates", []) if geom.get("type") == "MultiPolygon" else [])  # fmt: skip
        for poly in rings:
            if poly and len(poly[0]) >= 3:
                polys.append(np.asarray(poly[0], dtype=float))
    return polys


def rasterize_polygons(polygons: list[np.ndarray], shape: tuple[int, int]) -> np.ndarray:
    """(H, W) int32 labels, polygon i -> i + 1 (later polygons win where they overlap); pixel centres at +0.5."""
    h, w = shape
    canvas = Image.new("I", (w, h), 0)
    draw = ImageDraw.Draw(canvas)
    for i, poly in enumerate(polygons, start=1):
        pts = [(float(x) - 0.5, float(y) - 0.5) for x, y in poly]
        draw.polygon(pts, fill=i, outline=i)
    return np.asarray(canvas, dtype=np.int32)


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    xmls = {p.stem: p for p in sorted(path.rglob("*.xml"))}
    images: dict[str, Path] = {}
    for folder in {p.parent for p in path.rglob("*")} | {path}:
        images.update({k: v for k, v in images_by_stem(folder).items() if k in xmls})
    return [(images[k], xmls[k]) for k in sorted(images)]


def _detect(path: Path) -> bool:
    return bool(_pairs(path))


@register_layout("monuseg", "images (.tif/.png) + Aperio XML polygons with the same name (MoNuSeg / Kumar)",
                 _detect)  # fmt: skip
def load_monuseg(path: Path, mpp: float | None = None) -> NucleiTiles:
    images, instances = [], []
    for img_path, xml_path in _pairs(Path(path)):
        img = read_rgb(img_path)
        images.append(img)
        instances.append(rasterize_polygons(read_xml_polygons(xml_path), img.shape[:2]))
    return NucleiTiles(images, instances, None, mpp=mpp or MONUSEG_MPP, source=f"monuseg:{path}")

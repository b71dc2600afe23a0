"""Regions of interest: read from GeoJSON (QuPath exports and plain GeoJSON), repaired, fitted to the slide.

A ROI file is a GeoJSON FeatureCollection, a list of Features, one Feature, or a bare Polygon / MultiPolygon /
GeometryCollection, with coordinates in level-0 pixels (QuPath's "Export objects as GeoJSON" writes these).
Hand-drawn annotations with many thousands of vertices, or rings that cross themselves, are simplified by a
fraction of a pixel-scale tolerance and repaired with shapely's `make_valid` ("structure" method: a ring that
crosses itself keeps both of its lobes), so that loading stays well under a second.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import numpy as np
import shapely
from shapely.geometry import LineString, Polygon, box, shape
from shapely.geometry.base import BaseGeometry

from wsi import qupath

__all__ = ["ROI_TOLERANCE", "RoiError", "clip_roi", "load_roi", "read_roi", "repair_roi"]

# Simplification tolerance of large or invalid ROIs, in level-0 pixels: 1/32 of a tile 256 px wide at the
# slide's own resolution, and a smaller share of any coarser tile (a tile's tissue fraction is measured on an
# 8 x 8 lattice, so this changes no tile's fate in practice).
ROI_TOLERANCE = 8.0
# ROIs with more vertices than this are simplified even when valid (repair costs grow fast with vertices).
MAX_VERTICES = 10_000

VALID_ROI = (
    "a ROI file is GeoJSON in level-0 pixel coordinates: a FeatureCollection (QuPath's 'Export objects as "
    "GeoJSON'), a list of Features, one Feature, or a Polygon / MultiPolygon geometry"
)
_GEOMETRY_TYPES = ("Point", "MultiPoint", "LineString", "MultiLineString", "Polygon", "MultiPolygon",
                   "GeometryCollection")  # fmt: skip


class RoiError(ValueError):
    """A ROI file that cannot be used: the message names the file and says what a valid one is."""


def _features(data: Any, path: Path) -> list[dict]:
    if isinstance(data, list):
        features = data
    elif isinstance(data, dict) and data.get("type") == "FeatureCollection":
        features = data.get("features")
        if not isinstance(features, list):
            raise RoiError(f"{path}: a FeatureCollection whose 'features' is not a list; {VALID_ROI}")
    elif isinstance(data, dict) and data.get("type") == "Feature":
        features = [data]
    elif isinstance(data, dict) and data.get("type") in _GEOMETRY_TYPES:
        features = [{"type": "Feature", "geometry": data, "properties": {}}]
    else:
        kind = (
            f"an object of type {data.get('type')!r}"
            if isinstance(data, dict)
            else f"a JSON {type(data).__name__}"
        )
        raise RoiError(f"{path}: holds {kind}, not GeoJSON features; {VALID_ROI}")
    for i, feature in enumerate(features):
        if not isinstance(feature, dict) or not isinstance(feature.get("geometry"), dict | None):
            raise RoiError(
                f"{path}: item {i} is {json.dumps(feature)[:40]}, not a GeoJSON Feature; {VALID_ROI}"
            )
    return features


def _polygon(rings: list) -> Polygon:
    """A GeoJSON polygon's rings as shapely builds them from arrays (shapely's `shape` loops over every vertex in
    Python: most of the time of a 50,000-vertex ROI)."""
    arrays = [np.asarray(r, dtype=float)[:, :2] for r in rings]
    if not arrays:
        return Polygon()
    return shapely.polygons(
        shapely.linearrings(arrays[0]), [shapely.linearrings(a) for a in arrays[1:]] or None
    )


def _geometry(feature: dict, i: int, path: Path) -> BaseGeometry | None:
    geometry = feature.get("geometry")
    if not geometry:
        return None
    kind = geometry.get("type")
    if kind not in _GEOMETRY_TYPES:
        raise RoiError(f"{path}: feature {i} has an unknown geometry type {kind!r} (GeoJSON has "
                       f"{', '.join(_GEOMETRY_TYPES)}); {VALID_ROI}")  # fmt: skip
    try:
        if kind == "Polygon":
            return _polygon(geometry["coordinates"])
        if kind == "MultiPolygon":
            return shapely.multipolygons([_polygon(p) for p in geometry["coordinates"]])
        return shape(geometry)
    except Exception as exc:  # shapely's errors for bad coordinates vary by geometry type
        raise RoiError(f"{path}: feature {i} has a {kind} shapely cannot read ({exc}); {VALID_ROI}") from None


def read_roi(path: str | Path, classes: tuple[str, ...] | None = None) -> list[BaseGeometry]:
    """The polygons of the annotations in a ROI file (optionally only those classified as one of `classes`).

    Features without `properties.objectType` count as annotations (plain GeoJSON); QuPath detections, tiles
    and cells are not ROIs. Anything that is not such a file is a `RoiError` naming it.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
        data = json.loads(gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw)
    except json.JSONDecodeError as exc:
        raise RoiError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}); "
                       f"{VALID_ROI}") from None  # fmt: skip
    except (UnicodeDecodeError, EOFError, gzip.BadGzipFile) as exc:
        raise RoiError(f"{path}: not a JSON text file ({exc}); {VALID_ROI}") from None
    except OSError as exc:
        raise RoiError(f"{path}: cannot read the ROI file ({exc.strerror or exc})") from None
    polygons = []
    for i, feature in enumerate(_features(data, path)):
        properties = feature.get("properties") or {}
        if not isinstance(properties, dict) or properties.get("objectType", "annotation") != "annotation":
            continue
        if classes:
            classification = properties.get("classification")
            name = classification.get("name") if isinstance(classification, dict) else classification
            if name not in classes:
                continue
        geometry = _geometry(feature, i, path)
        if geometry is None:
            continue
        polygons += [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
    return polygons


def _simplified(polygon: Polygon, tolerance: float) -> Polygon:
    """`polygon` with each ring simplified as a line (no validity logic: fast even on rings crossing themselves)."""

    def ring(coords):
        line = LineString(coords).simplify(tolerance, preserve_topology=False)
        return list(line.coords) if len(line.coords) >= 4 else None

    shell = ring(polygon.exterior.coords)
    if shell is None:
        return Polygon()
    return Polygon(shell, [h for h in (ring(r.coords) for r in polygon.interiors) if h])


def repair_roi(geometry: BaseGeometry, tolerance: float = ROI_TOLERANCE) -> BaseGeometry:
    """Valid polygons: a ROI with more than `MAX_VERTICES` vertices, or an invalid one, is simplified by
    `tolerance` (level-0 px) and made valid; a small valid one is returned as it is."""
    if geometry.is_empty:
        return geometry
    if shapely.get_num_coordinates(geometry) <= MAX_VERTICES and geometry.is_valid:
        return qupath.clean_geometry(geometry)
    parts = [_simplified(p, tolerance) for p in shapely.get_parts(geometry) if p.geom_type == "Polygon"]
    parts = [shapely.make_valid(p, method="structure", keep_collapsed=False) for p in parts if not p.is_empty]
    parts = [p for p in parts if not p.is_empty]
    return qupath.clean_geometry(_union(parts)) if parts else Polygon()


def _union(geometries: list[BaseGeometry]) -> BaseGeometry:
    """The union of valid geometries; one alone is returned as it is. Its union would only redo the work, and
    cost most of the load: a ring scribbled across itself is made valid as one MultiPolygon of its many cells
    (1,277 for benchmarks/roi_load.py's cross-hatching), which a union dissolves again cell by cell."""
    return geometries[0] if len(geometries) == 1 else shapely.union_all(geometries)


def load_roi(path: str | Path, classes: tuple[str, ...] | None = None, tolerance: float = ROI_TOLERANCE
             ) -> BaseGeometry:  # fmt: skip
    """Union of the annotation polygons of a ROI file (optionally only the named classes), repaired, in level-0
    pixels. A file that is not a ROI file, or holds no polygon annotation, is a `RoiError` naming it."""
    polygons = [repair_roi(p, tolerance) for p in read_roi(path, classes)]
    polygons = [p for p in polygons if not p.is_empty]
    if not polygons:
        which = f" classified {' or '.join(classes)}" if classes else ""
        raise RoiError(f"{path}: no polygon annotations{which} to use as a region of interest; {VALID_ROI}")
    return qupath.clean_geometry(_union(polygons))


def clip_roi(roi: BaseGeometry, dimensions: tuple[int, int], name: str = "the slide") -> BaseGeometry:
    """`roi` inside the slide's level-0 (w, h) box; a ROI that misses the slide entirely is a ValueError."""
    w, h = dimensions
    clipped = qupath.clean_geometry(roi.intersection(box(0, 0, w, h)))
    if clipped.is_empty or clipped.area == 0:
        x0, y0, x1, y1 = (round(v) for v in roi.bounds)
        raise ValueError(f"{name}: ROI outside the slide (the ROI spans x {x0}..{x1}, y {y0}..{y1}; the slide is "
                         f"{w} x {h} px at level 0: is it the ROI of another slide?)")  # fmt: skip
    return clipped

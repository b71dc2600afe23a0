"""QuPath GeoJSON: write and read annotations, detections, tiles and cells that QuPath 0.4-0.6 import.

Rules (from QuPath's own reader): a FeatureCollection of Features, each with a UUID `id`; `properties.objectType`
in annotation / detection / tile / cell; `properties.classification` = {"name", "color": [r, g, b]} (QuPath
throws on a classification without color); `properties.measurements` a name -> number map; cells carry
`nucleusGeometry` beside `geometry`. Polygons are valid with closed rings, and a one-member MultiPolygon is
written as a Polygon. Coordinates are level-0 pixels, origin top-left.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import shapely
from shapely.geometry import MultiPolygon, Polygon, mapping, shape
from shapely.geometry.base import BaseGeometry

from wsi.atomic import atomic_file

__all__ = [
    "OBJECT_TYPES",
    "QuPathObject",
    "class_color",
    "clean_geometry",
    "read_geojson",
    "to_feature",
    "write_geojson",
]

OBJECT_TYPES = ("annotation", "detection", "tile", "cell")

_NAMED_COLORS = {
    "Tumor": (200, 0, 0),
    "Stroma": (150, 200, 150),
    "Immune cells": (160, 90, 160),
    "Necrosis": (50, 50, 50),
    "Other": (255, 200, 0),
    "Region*": (0, 0, 180),
    "Ignore*": (180, 180, 180),
    "Tissue": (20, 160, 60),
    "Positive": (200, 50, 50),
    "Negative": (112, 112, 225),
}


def class_color(name: str) -> tuple[int, int, int]:
    """QuPath's colour for its built-in classes, else a stable colour derived from the name."""
    if name in _NAMED_COLORS:
        return _NAMED_COLORS[name]
    digest = hashlib.sha1(name.encode()).digest()
    return (64 + digest[0] % 192, 64 + digest[1] % 192, 64 + digest[2] % 192)


@dataclass(frozen=True)
class QuPathObject:
    """One QuPath object. `geometry` and `nucleus` are shapely geometries in level-0 pixels."""

    geometry: BaseGeometry
    object_type: str = "annotation"
    classification: str | None = None
    color: tuple[int, int, int] | None = None
    measurements: Mapping[str, float] = field(default_factory=dict)
    nucleus: BaseGeometry | None = None
    name: str | None = None
    id: str | None = None


def clean_geometry(geometry: BaseGeometry) -> BaseGeometry:
    """Valid geometry QuPath accepts: invalid polygons made valid, only areal parts kept, no one-member multi."""
    if geometry.is_empty:
        return geometry
    if geometry.geom_type in ("Polygon", "MultiPolygon", "GeometryCollection") and not geometry.is_valid:
        geometry = shapely.make_valid(geometry)
    if geometry.geom_type == "GeometryCollection":
        polygons = [g for g in shapely.get_parts(geometry) if g.geom_type in ("Polygon", "MultiPolygon")]
        geometry = shapely.union_all(polygons) if polygons else Polygon()
    if isinstance(geometry, MultiPolygon) and len(geometry.geoms) == 1:
        geometry = geometry.geoms[0]
    return geometry


def _number(value: Any) -> float | int | None:
    number = float(value)
    if math.isnan(number) or math.isinf(number):
        return None  # JSON has no NaN; QuPath reads null as a missing measurement
    return int(number) if float(number).is_integer() and isinstance(value, int) else number


def to_feature(obj: QuPathObject) -> dict[str, Any]:
    """One GeoJSON Feature dict following the rules above."""
    if obj.object_type not in OBJECT_TYPES:
        raise ValueError(f"object_type must be one of {OBJECT_TYPES}, got {obj.object_type!r}")
    geometry = clean_geometry(obj.geometry)
    if geometry.is_empty:
        raise ValueError("cannot write an empty geometry to QuPath GeoJSON")
    properties: dict[str, Any] = {"objectType": obj.object_type}
    if obj.name:
        properties["name"] = obj.name
    if obj.classification:
        color = obj.color or class_color(obj.classification)
        properties["classification"] = {"name": obj.classification, "color": [int(c) for c in color]}
    if obj.measurements:
        properties["measurements"] = {str(k): _number(v) for k, v in obj.measurements.items()}
    feature: dict[str, Any] = {
        "type": "Feature",
        "id": obj.id or str(uuid.uuid4()),
        "geometry": mapping(geometry),
    }
    if obj.object_type == "cell":
        if obj.nucleus is None:
            raise ValueError("a cell needs a nucleus geometry (nucleusGeometry)")
        feature["nucleusGeometry"] = mapping(clean_geometry(obj.nucleus))
    feature["properties"] = properties
    return feature


def write_geojson(path: str | Path, objects: Iterable[QuPathObject], compress: bool | None = None) -> Path:
    """Write a FeatureCollection; gzip when `compress` is true or the name ends in .gz. Returns the path."""
    path = Path(path)
    compress = path.suffix == ".gz" if compress is None else compress
    collection = {"type": "FeatureCollection", "features": [to_feature(o) for o in objects]}
    text = json.dumps(collection, separators=(",", ":"))
    with atomic_file(path) as tmp:
        if compress:
            with gzip.open(tmp, "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            tmp.write_text(text, encoding="utf-8")
    return path


def _parse_feature(feature: Mapping[str, Any]) -> QuPathObject:
    props = feature.get("properties") or {}
    classification = props.get("classification") or {}
    if isinstance(classification, str):  # older exports
        classification = {"name": classification}
    nucleus = feature.get("nucleusGeometry")
    color = classification.get("color")
    return QuPathObject(
        geometry=shape(feature["geometry"]),
        object_type=props.get("objectType", "annotation"),
        classification=classification.get("name"),
        color=tuple(color) if color else None,
        measurements=dict(props.get("measurements") or {}),
        nucleus=shape(nucleus) if nucleus else None,
        name=props.get("name"),
        id=feature.get("id"),
    )


def load_json(path: str | Path) -> Any:
    """The parsed JSON of a file, plain or gzip-compressed (detected by its first bytes)."""
    path = Path(path)
    with open(path, "rb") as f:
        magic = f.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return json.load(f)


def read_geojson(path: str | Path) -> list[QuPathObject]:
    """Read a QuPath GeoJSON export (FeatureCollection, a Feature list or one Feature; gzip detected)."""
    data = load_json(path)
    if isinstance(data, list):
        features = data
    elif data.get("type") == "FeatureCollection":
        features = data.get("features", [])
    elif data.get("type") == "Feature":
        features = [data]
    else:
        raise ValueError(f"{path}: not GeoJSON features (type {data.get('type')!r})")
    return [_parse_feature(f) for f in features if f.get("geometry")]

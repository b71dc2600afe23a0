"""Checking a QuPath GeoJSON file against the rules `wsi.qupath` writes by (what QuPath 0.4-0.6 import).

problems = check_geojson("nuclei.geojson.gz")   # [] when every feature follows the rules
"""

from __future__ import annotations

import math
import uuid
from pathlib import Path
from typing import Any

from shapely.geometry import shape

from wsi.qupath import OBJECT_TYPES, load_json

__all__ = ["check_feature", "check_geojson"]


def _check_geometry(value: Any, what: str) -> list[str]:
    if not isinstance(value, dict) or "type" not in value:
        return [f"{what} is not a GeoJSON geometry"]
    try:
        geometry = shape(value)
    except Exception as exc:  # shapely raises several types for malformed input
        return [f"{what} cannot be read ({exc})"]
    problems = []
    if geometry.is_empty:
        problems.append(f"{what} is empty")
    elif not geometry.is_valid:
        problems.append(f"{what} is not valid")
    if value["type"] == "MultiPolygon" and len(value.get("coordinates", [])) == 1:
        problems.append(f"{what} is a one-member MultiPolygon")
    if value["type"] in ("Polygon", "MultiPolygon"):
        polygons = [value["coordinates"]] if value["type"] == "Polygon" else value["coordinates"]
        for rings in polygons:
            for ring in rings:
                if len(ring) < 4 or ring[0] != ring[-1]:
                    problems.append(f"{what} has a ring that is not closed")
    return problems


def check_feature(feature: dict) -> list[str]:
    """What is wrong with one Feature dict ([] when nothing): UUID id, objectType, geometry valid with closed
    rings, cells with nucleusGeometry, classification with name and colour, measurements numeric."""
    problems = []
    if feature.get("type") != "Feature":
        problems.append("type is not 'Feature'")
    try:
        uuid.UUID(str(feature.get("id")))
    except ValueError:
        problems.append(f"id {feature.get('id')!r} is not a UUID")
    problems += _check_geometry(feature.get("geometry"), "geometry")
    props = feature.get("properties")
    if not isinstance(props, dict):
        return [*problems, "properties missing"]
    kind = props.get("objectType")
    if kind not in OBJECT_TYPES:
        problems.append(f"objectType {kind!r} is not one of {OBJECT_TYPES}")
    if kind == "cell":
        problems += _check_geometry(feature.get("nucleusGeometry"), "nucleusGeometry")
    if "nucleusGeometry" in props:
        problems.append("nucleusGeometry is inside properties (QuPath reads it beside geometry)")
    classification = props.get("classification")
    if classification is not None:
        color = classification.get("color") if isinstance(classification, dict) else None
        if not isinstance(classification, dict) or not classification.get("name"):
            problems.append("classification has no name")
        elif not (isinstance(color, list) and len(color) == 3 and all(isinstance(c, int) and 0 <= c <= 255
                                                                       for c in color)):  # fmt: skip
            problems.append("classification has no [r, g, b] colour (QuPath throws without one)")
    measurements = props.get("measurements", {})
    if not isinstance(measurements, dict):
        problems.append("measurements is not a name -> number map")
    else:
        for name, value in measurements.items():
            if value is not None and (not isinstance(value, int | float) or isinstance(value, bool)
                                      or not math.isfinite(value)):  # fmt: skip
                problems.append(f"measurement {name!r} is not a finite number or null")
    return problems


def check_geojson(path: str | Path, limit: int = 20) -> list[str]:
    """Problems of a QuPath GeoJSON file (gzip detected), each naming its feature; at most `limit` listed."""
    path = Path(path)
    data = load_json(path)
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        return [f"{path}: not a FeatureCollection"]
    problems, seen = [], set()
    for index, feature in enumerate(data.get("features", [])):
        for problem in check_feature(feature):
            problems.append(f"{path}: feature {index}: {problem}")
        if feature.get("id") in seen:
            problems.append(f"{path}: feature {index}: id {feature.get('id')} repeated")
        seen.add(feature.get("id"))
        if len(problems) >= limit:
            break
    return problems[:limit]

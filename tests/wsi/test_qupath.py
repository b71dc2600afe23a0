"""QuPath GeoJSON: every rule QuPath's importer relies on is checked on written output."""

from __future__ import annotations

import gzip
import json
import uuid

import pytest
from shapely.geometry import MultiPolygon, Point, Polygon, box

from wsi import qupath
from wsi.qupath import QuPathObject


def _write_and_load(tmp_path, objects, name="out.geojson"):
    path = qupath.write_geojson(tmp_path / name, objects)
    opener = gzip.open if name.endswith(".gz") else open
    with opener(path, "rt") as f:
        return path, json.load(f)


def test_rules_on_written_output(tmp_path):
    bowtie = Polygon([(0, 0), (10, 10), (10, 0), (0, 10)])  # self-intersecting
    objects = [
        QuPathObject(box(0, 0, 100, 50), "annotation", "Tumor", measurements={"area": 5000.0}),
        QuPathObject(bowtie, "detection", "Stroma"),
        QuPathObject(
            MultiPolygon([box(0, 0, 5, 5)]), "tile", "Attention", measurements={"score": 0.7, "n": 3}
        ),
        QuPathObject(Point(50, 50).buffer(8), "cell", "Tumor", nucleus=Point(50, 50).buffer(4)),
    ]
    _, data = _write_and_load(tmp_path, objects)
    assert data["type"] == "FeatureCollection"
    assert len(data["features"]) == 4
    for feature, obj in zip(data["features"], objects, strict=True):
        assert feature["type"] == "Feature"
        uuid.UUID(feature["id"])
        props = feature["properties"]
        assert props["objectType"] == obj.object_type
        cls = props["classification"]
        assert cls["name"] == obj.classification and len(cls["color"]) == 3
        assert all(isinstance(c, int) and 0 <= c <= 255 for c in cls["color"])
        geometry = feature["geometry"]
        assert geometry["type"] in ("Polygon", "MultiPolygon")
        rings = (
            geometry["coordinates"]
            if geometry["type"] == "Polygon"
            else [r for p in geometry["coordinates"] for r in p]
        )
        for ring in rings:
            assert ring[0] == ring[-1], "rings must be closed"
        from shapely.geometry import shape

        assert shape(geometry).is_valid
    assert data["features"][0]["properties"]["measurements"] == {"area": 5000.0}
    assert data["features"][1]["geometry"]["type"] == "MultiPolygon"  # bowtie made valid: two triangles
    assert data["features"][2]["geometry"]["type"] == "Polygon"  # one-member MultiPolygon unwrapped
    cell = data["features"][3]
    assert "nucleusGeometry" in cell and "nucleusGeometry" not in cell["properties"]


def test_round_trip_and_gzip(tmp_path):
    objects = [QuPathObject(box(10, 20, 30, 40), "detection", "Tumor", measurements={"p": 0.25}, name="a")]
    path, _ = _write_and_load(tmp_path, objects, "out.geojson.gz")
    with open(path, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    (back,) = qupath.read_geojson(path)
    assert back.geometry.equals(objects[0].geometry)
    assert back.classification == "Tumor" and back.color == qupath.class_color("Tumor")
    assert back.measurements == {"p": 0.25} and back.name == "a" and back.object_type == "detection"


def test_unclassified_objects_have_no_classification(tmp_path):
    _, data = _write_and_load(tmp_path, [QuPathObject(box(0, 0, 1, 1))])
    assert "classification" not in data["features"][0]["properties"]


def test_bad_objects_are_refused(tmp_path):
    with pytest.raises(ValueError, match="object_type"):
        qupath.write_geojson(tmp_path / "x.geojson", [QuPathObject(box(0, 0, 1, 1), "blob")])
    with pytest.raises(ValueError, match="nucleus"):
        qupath.write_geojson(tmp_path / "x.geojson", [QuPathObject(box(0, 0, 1, 1), "cell")])
    with pytest.raises(ValueError, match="empty"):
        qupath.write_geojson(tmp_path / "x.geojson", [QuPathObject(Polygon())])


def test_nan_measurements_become_null(tmp_path):
    _, data = _write_and_load(tmp_path, [QuPathObject(box(0, 0, 1, 1), measurements={"x": float("nan")})])
    assert data["features"][0]["properties"]["measurements"] == {"x": None}


def test_class_colors_are_stable():
    assert qupath.class_color("Tumor") == (200, 0, 0)
    assert qupath.class_color("my class") == qupath.class_color("my class")


def test_reads_plain_feature_lists(tmp_path):
    path = tmp_path / "list.json"
    path.write_text(
        json.dumps([{"type": "Feature", "geometry": box(0, 0, 2, 2).__geo_interface__, "properties": {}}])
    )
    (obj,) = qupath.read_geojson(path)
    assert obj.object_type == "annotation" and obj.geometry.area == 4

"""ROI files: what is accepted (QuPath exports, plain GeoJSON, bare geometry), what is refused and how it is
said, large self-intersecting polygons repaired, ROIs clipped to the slide."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from shapely.geometry import box, mapping

import tiling
import wsi
from tiling.roi import MAX_VERTICES, ROI_TOLERANCE, RoiError, clip_roi, load_roi, repair_roi


def _write(path, data) -> str:
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


SQUARE = mapping(box(100, 100, 300, 300))


@pytest.mark.parametrize(
    ("content", "said"),
    [
        ([1, 2, 3], "item 0 is 1, not a GeoJSON Feature"),
        ({"type": "Feature", "geometry": {"type": "Circle", "coordinates": [1, 2]}},
         "feature 0 has an unknown geometry type 'Circle'"),
        ('{"type": "Feature"\n"x": 1}', "not valid JSON (Expecting ',' delimiter at line 2, column 1)"),
        ({"type": "Topology"}, "holds an object of type 'Topology', not GeoJSON features"),
        ('"just text"', "holds a JSON str, not GeoJSON features"),
        ({"type": "FeatureCollection", "features": 3}, "a FeatureCollection whose 'features' is not a list"),
        ({"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [[1, 2]]}}, "shapely cannot read"),
        ({"type": "Feature", "geometry": {"type": "Point", "coordinates": [1, 2]}}, "no polygon annotations"),
    ],
)  # fmt: skip
def test_bad_roi_files_are_named_with_what_a_roi_file_is(content, said, tmp_path):
    path = _write(tmp_path / "roi.geojson", content)
    with pytest.raises(RoiError) as exc:
        load_roi(path)
    message = str(exc.value)
    assert message.startswith(path) and said in message
    assert "a ROI file is GeoJSON in level-0 pixel coordinates" in message
    assert isinstance(exc.value, ValueError)  # a per-slide failure where the pipeline catches ValueError


def test_binary_and_missing_files(tmp_path):
    path = tmp_path / "roi.geojson"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(RoiError, match="roi.geojson: not a JSON text file"):
        load_roi(path)
    with pytest.raises(RoiError, match="cannot read the ROI file"):
        load_roi(tmp_path / "nope.geojson")


@pytest.mark.parametrize(
    "content",
    [
        SQUARE,  # a bare geometry
        {"type": "Feature", "geometry": SQUARE},  # plain GeoJSON without objectType
        [{"type": "Feature", "geometry": SQUARE, "properties": {"objectType": "annotation"}}],  # a list
        {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": SQUARE, "properties": {"objectType": "annotation"}},
            {"type": "Feature", "geometry": mapping(box(0, 0, 50, 50)), "properties": {"objectType": "detection"}},
            {"type": "Feature", "geometry": None, "properties": {}}]},
    ],
)  # fmt: skip
def test_accepted_forms(content, tmp_path):
    roi = load_roi(_write(tmp_path / "roi.geojson", content))
    assert roi.equals(box(100, 100, 300, 300))


def test_gzip_and_classes(tmp_path):
    features = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": SQUARE, "properties": {"classification": {"name": "Tumor"}}},
        {"type": "Feature", "geometry": mapping(box(0, 0, 50, 50)), "properties": {"classification": "Stroma"}}]}  # fmt: skip
    path = tmp_path / "roi.geojson.gz"
    path.write_bytes(gzip.compress(json.dumps(features).encode()))
    assert load_roi(path).area == 200 * 200 + 50 * 50
    assert load_roi(path, classes=("Stroma",)).area == 50 * 50
    with pytest.raises(RoiError, match="no polygon annotations classified Necrosis"):
        load_roi(path, classes=("Necrosis",))


def _figure_eight(n: int) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.c_[1500 + 1000 * np.sin(t), 1500 + 600 * np.sin(2 * t)]


def test_a_50000_vertex_self_intersecting_polygon_is_repaired_keeping_both_lobes(tmp_path):
    """The figure of eight crosses itself once: both lobes stay (1.6 million px2); make_valid's default
    method on the unsimplified ring takes seconds (benchmarks/roi_load.py times this)."""
    ring = _figure_eight(50_000)
    path = _write(
        tmp_path / "roi.geojson", {"type": "Polygon", "coordinates": [np.r_[ring, ring[:1]].tolist()]}
    )
    roi = load_roi(path)
    assert roi.is_valid and roi.geom_type == "MultiPolygon" and len(roi.geoms) == 2
    assert roi.area == pytest.approx(1_600_000, rel=0.02)
    assert sum(len(g.exterior.coords) for g in roi.geoms) < 2_000  # simplified


def test_a_cross_hatched_roi_keeps_every_cell_its_union_would(tmp_path):
    """A ring scribbled across itself (20 strokes each way, 400 crossings, 20,000 vertices) is made valid as one
    MultiPolygon of cells; it is no longer unioned again (most of the load's time), which must change nothing:
    the result equals the old path's (simplify, make valid, union). Several annotations are still unioned."""
    import shapely
    from shapely.geometry import Polygon

    from tiling.roi import _simplified

    rng = np.random.default_rng(0)
    along = np.linspace(0, 3000, 500)
    strokes = [np.c_[along if i % 2 == 0 else along[::-1], np.full(500, 150.0 * i) + rng.normal(0, 2, 500)]
               for i in range(20)]  # fmt: skip
    ring = np.concatenate(strokes + [s[:, ::-1] for s in strokes])
    path = _write(
        tmp_path / "roi.geojson", {"type": "Polygon", "coordinates": [np.r_[ring, ring[:1]].tolist()]}
    )
    roi = load_roi(path)
    assert roi.is_valid and roi.geom_type == "MultiPolygon" and len(roi.geoms) > 100
    valid = shapely.make_valid(
        _simplified(Polygon(ring), ROI_TOLERANCE), method="structure", keep_collapsed=False
    )
    assert roi.equals(wsi.qupath.clean_geometry(shapely.union_all([valid])))
    overlapping = [wsi.qupath.QuPathObject(box(0, 0, 200, 200), "annotation", "ROI"),
                   wsi.qupath.QuPathObject(box(100, 100, 300, 300), "annotation", "ROI")]  # fmt: skip
    both = load_roi(wsi.qupath.write_geojson(tmp_path / "two.geojson", overlapping))
    assert both.geom_type == "Polygon" and both.area == pytest.approx(70_000)  # unioned, not two parts


def test_small_valid_rois_are_not_changed():
    ring = _figure_eight(MAX_VERTICES // 4)[: MAX_VERTICES // 8]  # one lobe, a few thousand vertices, valid
    from shapely.geometry import Polygon

    polygon = Polygon(ring)
    assert polygon.is_valid
    assert repair_roi(polygon).equals_exact(polygon, 0)
    assert ROI_TOLERANCE < 256 / 16  # well under a tile's lattice spacing at the slide's own resolution


def test_rois_are_clipped_to_the_slide():
    clipped = clip_roi(box(-100, 1000, 5000, 2000), (2220, 2967))
    assert clipped.bounds == (0, 1000, 2220, 2000)
    with pytest.raises(ValueError, match=r"slide.svs: ROI outside the slide \(the ROI spans x 5000..6000"):
        clip_roi(box(5000, 5000, 6000, 6000), (2220, 2967), "slide.svs")


def test_tissue_area_of_a_roi_partly_outside_the_slide(cmu_path, tmp_path):
    """replace mode: the tissue is the ROI inside the slide (the issue saw 1,245 mm2 on a 1.6 mm2 slide)."""
    roi = box(1000, 1000, 100_000, 100_000)
    result = tiling.tile_slide_result(
        cmu_path, tmp_path / "s.zarr", roi=roi, roi_mode="replace", coords_only=True
    )
    with wsi.open_slide(cmu_path) as slide:
        w, h = slide.meta.dimensions
        mpp = slide.meta.mpp
    assert result.tissue_mm2 == pytest.approx((w - 1000) * (h - 1000) * mpp**2 / 1e6, rel=1e-6)
    with pytest.raises(ValueError, match="ROI outside the slide"):
        tiling.tile_slide_result(
            cmu_path, tmp_path / "t.zarr", roi=box(5e4, 5e4, 6e4, 6e4), roi_mode="replace"
        )
    assert not (tmp_path / "t.zarr").exists()


def test_a_roi_that_misses_its_slide_fails_that_slide_only(cmu_path, tmp_path, capsys):
    """`tile` over two slides with a ROI folder: one ROI lies off its slide, one is partly outside its own."""
    import shutil

    from slidestream.cli import main

    slides, rois = tmp_path / "slides", tmp_path / "rois"
    slides.mkdir(), rois.mkdir()
    for name in ("a", "b"):
        shutil.copy(cmu_path, slides / f"{name}.svs")
    _write(rois / "a.geojson", mapping(box(50_000, 50_000, 60_000, 60_000)))
    _write(rois / "b.geojson", mapping(box(-500, -500, 1000, 1000)))
    code = main(["tile", str(slides), "-o", str(tmp_path / "out"), "--roi", str(rois), "--roi-mode", "replace",
                 "--coords-only", "--size", "128", "-q"])  # fmt: skip
    assert code == 1
    captured = capsys.readouterr()
    assert "failed: a:" in captured.err and "ROI outside the slide" in captured.err
    assert "b: done" in captured.out and "tissue 0.249 mm2" in captured.out  # 1000 x 1000 px at 0.499 um/px

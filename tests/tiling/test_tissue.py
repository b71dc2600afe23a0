"""Tissue detection against synthetic ground truth, on real H&E, and on glass, pen and ROI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import shapely
from shapely.geometry import box

import tiling
import wsi
from tiling.tissue import TissueParams, detect_tissue_mask, mask_to_geometry
from wsi.synthetic import load_truth


def _iou(geometry, truth) -> float:
    d = truth.mask_downsample
    h, w = truth.tissue_mask.shape
    ys, xs = np.mgrid[0:h, 0:w]
    inside = shapely.contains_xy(geometry, (xs + 0.5) * d, (ys + 0.5) * d)
    return (inside & truth.tissue_mask).sum() / (inside | truth.tissue_mask).sum()


@pytest.mark.parametrize("which", ["synthetic_slide", "plain_synthetic"])
def test_iou_with_ground_truth(which, request):
    written = request.getfixturevalue(which)
    with wsi.open_slide(written.path) as slide:
        geometry = tiling.detect_tissue(slide)
    assert geometry.is_valid
    assert _iou(geometry, load_truth(written.path)) >= 0.9


def test_real_slide_tissue_is_plausible(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        result = tiling.detect_tissue_result(slide)
    fraction = result.geometry.area / (2220 * 2967)
    assert 0.25 < fraction < 0.6  # the CMU crop is a strip of skin on glass
    assert result.mask[-3:].any()  # tissue touching the border is kept (no border erosion)


def test_glass_gives_empty_geometry_and_warning(blank_slide):
    with wsi.open_slide(blank_slide) as slide, pytest.warns(UserWarning, match="no tissue"):
        assert tiling.detect_tissue(slide).is_empty


def test_pen_marks_are_rejected():
    image = np.full((200, 200, 3), 240, np.uint8)
    image[40:160, 20:90] = (200, 120, 180)  # H&E-like pink tissue
    image[40:160, 120:180] = (40, 60, 200)  # blue ink
    mask = detect_tissue_mask(image, 8.0, TissueParams())
    assert mask[100, 50] and not mask[100, 150]
    mask = detect_tissue_mask(image, 8.0, TissueParams(reject_pen=False))
    assert mask[100, 150]


def test_small_debris_dropped_and_holes_filled():
    image = np.full((300, 300, 3), 240, np.uint8)
    image[50:250, 50:250] = (190, 110, 170)
    image[140:150, 140:150] = 240  # small hole: filled
    image[10:13, 280:283] = (150, 80, 150)  # dust: dropped
    mask = detect_tissue_mask(image, 8.0, TissueParams())
    assert mask[145, 145] and not mask[11, 281]


def test_pale_tissue_is_kept_where_it_joins_tissue_and_a_pale_smear_alone_is_not():
    """Hysteresis: pale stroma (under the Otsu thresholds, over 0.7 of them) next to well-stained tissue is
    tissue; the same pale colour on its own is not. Without it (`pale_fraction=1`) the pale stroma is glass."""
    image = np.full((300, 300, 3), 245.0)  # glass
    image[40:200, 40:120] = (120, 60, 140)  # well-stained tissue
    image[40:200, 120:170] = (228, 205, 235)  # pale stroma joined to it
    image[230:290, 200:290] = (228, 205, 235)  # the same pale colour, alone (3.5x the minimum area)
    image = np.clip(image + np.random.default_rng(0).normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    image[image.min(axis=-1) >= 240] = (
        245  # noise-free glass; the smear keeps a few pixels over the thresholds
    )
    without = detect_tissue_mask(image, 8.0, TissueParams(pale_fraction=1.0))
    assert without[100, 80] and without[40:200, 130:170].mean() < 0.1 and not without[230:290, 200:290].any()
    mask = detect_tissue_mask(image, 8.0, TissueParams())
    assert mask[100, 80] and mask[40:200, 120:170].all()
    assert not mask[230:290, 200:290].any()


def test_mask_to_geometry_keeps_holes_and_scale():
    mask = np.zeros((40, 40), bool)
    mask[5:35, 5:35] = True
    mask[15:25, 15:25] = False
    geometry = mask_to_geometry(mask, downsample=10.0, simplify=0.0)
    assert geometry.geom_type == "Polygon" and len(geometry.interiors) == 1
    assert geometry.area == pytest.approx(300 * 300 - 100 * 100, rel=0.05)
    assert geometry.bounds == pytest.approx((50, 50, 350, 350), abs=6)


def test_even_odd_equals_folding_symmetric_difference_over_the_rings():
    """Nested rings (islands in holes in tissue) and many small pieces: the same geometry as the quadratic
    fold it replaced."""
    import functools

    from scipy import ndimage
    from shapely.geometry import Polygon
    from skimage import measure

    from tiling.tissue import even_odd

    yy, xx = np.mgrid[:120, :120]
    r = np.hypot(yy - 60, xx - 60)
    annuli = (r < 55) & ~((r > 40) & (r < 48)) & ~((r > 20) & (r < 30)) | (r < 8)
    noisy = ndimage.binary_opening(np.random.default_rng(0).random((120, 120)) > 0.55)
    for mask in (annuli, noisy):
        padded = np.pad(mask.astype(np.uint8), 1)
        rings = [Polygon(c[:, ::-1]) for c in measure.find_contours(padded, 0.5) if len(c) >= 4]
        rings = [ring.buffer(0) if not ring.is_valid else ring for ring in rings]
        assert len(rings) >= 5
        folded = functools.reduce(shapely.symmetric_difference, rings, Polygon())
        assert even_odd(rings).symmetric_difference(folded).area < 1e-6
        assert even_odd(rings).area == pytest.approx(folded.area) and folded.area > 100


def test_roi_from_qupath_and_tissue_geojson(tmp_path):
    roi_path = wsi.qupath.write_geojson(tmp_path / "roi.geojson", [
        wsi.qupath.QuPathObject(box(0, 0, 100, 100), "annotation", "Tumor"),
        wsi.qupath.QuPathObject(box(50, 50, 200, 200), "annotation", "Tumor"),
        wsi.qupath.QuPathObject(box(0, 0, 5, 5), "detection"),
    ])  # fmt: skip
    roi = tiling.load_roi(roi_path)
    assert roi.area == pytest.approx(100 * 100 + 150 * 150 - 50 * 50)
    with pytest.raises(ValueError, match="no polygon annotations"):
        tiling.load_roi(roi_path, classes=("Stroma",))
    out = tiling.write_tissue_geojson(
        tmp_path / "tissue.geojson", roi.union(box(500, 500, 600, 600)), mpp=0.5
    )
    features = json.loads(out.read_text())["features"]
    assert len(features) == 2
    assert features[0]["properties"]["classification"]["name"] == "Tissue"
    assert features[1]["properties"]["measurements"]["Area um^2"] == pytest.approx(100 * 100 * 0.25)


def test_drop_fragments_keeps_pieces_of_at_least_the_area():
    big = box(0, 0, 100, 100)
    ring = box(200, 0, 300, 100).difference(box(205, 5, 295, 95))  # 1,900 px^2 of tissue around a hole
    sliver = box(400, 0, 402, 50)
    kept = tiling.tissue.drop_fragments(shapely.union_all([big, ring, sliver]), 2_000)
    assert kept.equals(big)
    assert tiling.tissue.drop_fragments(sliver, 2_000).is_empty
    assert tiling.tissue.drop_fragments(sliver, 0).equals(sliver)


def test_a_roi_cut_leaves_no_sliver_in_tissue_geojson(synthetic_slide, tmp_path):
    """Cutting the tissue with a ROI whose thin strip crosses it makes a sliver: it is not a Tissue annotation
    (default: under 3 tiles' area is dropped), unless min_fragment_um2=0 asks for every piece."""
    with wsi.open_slide(synthetic_slide.path) as slide:
        tissue = tiling.detect_tissue(slide)
    x, y = shapely.get_coordinates(tissue.representative_point())[0]
    strip = box(x + 400, y - 150, x + 412, y + 150)  # 12 x 300 level-0 px = 3 x 75 um at 0.25 um/px
    roi_path = wsi.qupath.write_geojson(tmp_path / "roi.geojson", [
        wsi.qupath.QuPathObject(box(x - 300, y - 300, x + 300, y + 300), "annotation", "ROI"),
        wsi.qupath.QuPathObject(strip, "annotation", "ROI"),
    ])  # fmt: skip
    assert tissue.intersection(strip).area > 1_000  # the strip does cut tissue
    areas = {}
    for name, minimum in (("default", None), ("every", 0.0)):
        geojson = tmp_path / f"{name}.geojson"
        tiling.tile_slide(synthetic_slide.path, tmp_path / f"{name}.zarr", size=64, mpp=1.0, roi=roi_path,
                          coords_only=True, min_fragment_um2=minimum, tissue_geojson=geojson)  # fmt: skip
        areas[name] = sorted(o.measurements["Area um^2"] for o in wsi.qupath.read_geojson(geojson))
    assert len(areas["every"]) == len(areas["default"]) + 1
    assert min(areas["every"]) < 300  # the sliver, in um^2
    assert min(areas["default"]) >= 3 * 64**2  # three 64 um tiles at 1 um/px


def test_a_replacing_roi_is_kept_as_drawn(synthetic_slide, tmp_path):
    roi_path = wsi.qupath.write_geojson(tmp_path / "roi.geojson", [
        wsi.qupath.QuPathObject(box(200, 200, 1200, 1200), "annotation", "ROI"),
        wsi.qupath.QuPathObject(box(1600, 1600, 1640, 1640), "annotation", "ROI"),  # 100 um^2
    ])  # fmt: skip
    geojson = tmp_path / "tissue.geojson"
    store = tiling.tile_slide(synthetic_slide.path, tmp_path / "s.zarr", size=64, mpp=1.0, roi=roi_path,
                              roi_mode="replace", min_tissue=0.01, coords_only=True, tissue_geojson=geojson)  # fmt: skip
    assert len(wsi.qupath.read_geojson(geojson)) == 2
    # The 256 level-0 px tile over the small piece is in the grid (1 of its 64 sample points is in the ROI).
    assert [1536, 1536] in store.coords.tolist()


def test_min_fragment_below_detections_min_area_keeps_a_small_piece(tmp_path):
    """A 14,400 um^2 piece of tissue (under detection's own 20,000 um^2) is kept with min_fragment_um2=5000
    and dropped by default (3 tiles' area, 49,152 um^2): detection keeps what the grid keeps."""
    import tifffile

    image = np.full((2048, 2048, 3), 243, np.uint8)
    image[200:1200, 200:1200] = (200, 110, 170)  # 500 x 500 um
    image[1600:1840, 1600:1840] = (200, 110, 170)  # 120 x 120 um = 14,400 um^2
    image += np.random.default_rng(0).integers(0, 4, image.shape, dtype=np.uint8)
    path = tmp_path / "pieces.tiff"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", resolution=(2e4, 2e4),
                     resolutionunit="CENTIMETER")  # fmt: skip
    areas = {}
    for name, minimum in (("default", None), ("low", 5_000.0)):
        geojson = tmp_path / f"{name}.geojson"
        tiling.tile_slide(path, tmp_path / f"{name}.zarr", size=64, mpp=2.0, coords_only=True,
                          min_fragment_um2=minimum, tissue_geojson=geojson)  # fmt: skip
        areas[name] = sorted(o.measurements["Area um^2"] for o in wsi.qupath.read_geojson(geojson))
    assert len(areas["default"]) == 1 and areas["default"][0] > 200_000
    assert len(areas["low"]) == 2 and 10_000 < areas["low"][0] < 20_000
    with wsi.open_slide(path) as slide:  # TileGrid's own path detects tissue the same way
        config = tiling.TilingConfig(size=64, mpp=2.0, min_tissue=0.01, min_fragment_um2=5_000)
        spec = tiling.TileSpec.for_slide(slide, config)
        region = tiling.tile_region(
            slide, None, tissue=None, min_fragment=tiling.grid.min_fragment_area(spec, config)
        )
    assert len(shapely.get_parts(region)) == 2

"""Synthetic slides: deterministic, realistic enough to score against, with ground truth that matches pixels."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import wsi
from wsi.synthetic import SyntheticSpec, load_truth, nuclei_in_box, render_region, write_slide


def test_same_seed_same_pixels():
    spec = SyntheticSpec(4000, 3000, seed=3, tumor=True)
    a, _ = render_region(spec, (1000, 1000), (200, 200))
    b, _ = render_region(spec, (1000, 1000), (200, 200))
    np.testing.assert_array_equal(a, b)
    c, _ = render_region(SyntheticSpec(4000, 3000, seed=4, tumor=True), (1000, 1000), (200, 200))
    assert np.abs(a.astype(int) - c).mean() > 5


def test_stain_varies_between_slides():
    h1, e1, s1 = SyntheticSpec(1000, 1000, seed=1).stains()
    h2, e2, s2 = SyntheticSpec(1000, 1000, seed=2).stains()
    assert not np.allclose(h1, h2) and not np.allclose(e1, e2)
    assert np.linalg.norm(h1) == pytest.approx(1)


def test_slide_has_glass_tissue_and_nuclei(synthetic_slide):
    truth = load_truth(synthetic_slide.path)
    assert 0.15 < truth.tissue_mask.mean() < 0.85
    assert truth.tumor_mask.any() and not (truth.tumor_mask & ~truth.tissue_mask).any()
    with wsi.open_slide(synthetic_slide.path) as slide:
        thumb = slide.read_region((0, 0), 1, slide.meta.level_dimensions[1]).astype(float)
    d = truth.mask_downsample // 4  # mask pixel -> level-1 pixels
    mask = np.kron(truth.tissue_mask, np.ones((d, d), bool))[: thumb.shape[0], : thumb.shape[1]]
    glass, tissue = thumb[~mask].mean(axis=0), thumb[mask].mean(axis=0)
    assert glass.min() > 225  # bright glass
    assert tissue[1] < glass[1] - 40  # eosin/hematoxylin absorb green


def test_tumor_nuclei_are_larger_and_denser():
    spec = SyntheticSpec(20000, 20000, seed=5, tumor=True)
    nuc = nuclei_in_box(spec, (0, 0, 20000, 20000))
    area = np.pi * nuc.ra * nuc.rb
    assert nuc.tumor.sum() > 100 and (~nuc.tumor).sum() > 100
    assert area[nuc.tumor].mean() > 1.5 * area[~nuc.tumor].mean()
    assert len(np.unique(nuc.ids)) == len(nuc.ids)


def test_labels_match_nucleus_polygons():
    from shapely.geometry import Point, Polygon

    spec = SyntheticSpec(4000, 4000, seed=2, tumor=True)
    box = (1500, 1500, 2012, 2012)
    _, labels = render_region(spec, box[:2], (512, 512), with_labels=True)
    nuclei = nuclei_in_box(spec, box, margin=200)
    polygons = {int(i): Polygon(p) for i, p in zip(nuclei.ids, nuclei.polygons(64), strict=True)}
    ids = [i for i in np.unique(labels) if i]
    assert len(ids) > 10
    for i in ids:
        rows, cols = np.nonzero(labels == i)
        poly = polygons[int(i)]
        centre = Point(box[0] + cols.mean() + 0.5, box[1] + rows.mean() + 0.5)
        assert poly.buffer(2).contains(centre)
        # Pixel area agrees with the polygon area where the nucleus is not clipped by the box or a neighbour.
        if poly.bounds[0] > box[0] + 2 and poly.bounds[2] < box[2] - 2 and poly.bounds[1] > box[1] + 2:
            assert len(rows) == pytest.approx(poly.area, rel=0.3)


def test_truth_files(synthetic_slide):
    record = json.loads(synthetic_slide.truth.read_text())
    assert record["format"] == "slidestream.synthetic/1"
    assert record["mask_downsample"] == 8
    truth = load_truth(synthetic_slide.path)
    assert truth.tissue_mask.shape == (2048 // 8, 2560 // 8)
    objects = wsi.qupath.read_geojson(truth.nuclei)
    assert len(objects) == record["nuclei_count"] > 50
    assert {o.classification for o in objects} == {"Tumor", "Stroma"}


def test_missing_truth_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="truth.json"):
        load_truth(tmp_path / "x.svs")


def test_spec_rejects_bad_sizes():
    with pytest.raises(ValueError, match="at least 64"):
        SyntheticSpec(10, 1000)


def test_writing_streams_with_bounded_memory(tmp_path):
    """Peak Python-heap use is the same for a slide with four times the pixels (tiles, not whole levels)."""

    def peak(width: int) -> int:
        spec = SyntheticSpec(width, 1024, seed=1)
        tracemalloc.start()
        write_slide(tmp_path / f"w{width}.svs", spec, tile_size=256, render_workers=1, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1536), peak(6144)
    with pytest.warns(DeprecationWarning, match="'workers' is deprecated.*'render_workers'"):
        write_slide(
            tmp_path / "old.svs", SyntheticSpec(256, 256, seed=1), tile_size=256, workers=1, progress=False
        )
    assert large < 1.5 * small + 4e6, (small, large)
    assert large < 150e6

"""Tile grid arithmetic: levels, sizes, no drift, edges, tissue fractions."""

from __future__ import annotations

import numpy as np
import pytest
from shapely.geometry import box

import tiling
import wsi
from tests.conftest import OPENSLIDE_DATA
from tiling.grid import TileGrid, TileSpec
from wsi.synthetic import load_truth


def test_spec_of_a_resampled_grid(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        grid = TileGrid.from_slide(slide, size=128, mpp=0.5, min_tissue=0)
    spec = grid.spec
    assert (spec.level, spec.downsample, spec.extent, spec.read_size) == (0, 1.0, 256.0, 256)
    assert spec.needs_resize
    assert len(grid) == 10 * 8  # 2560 x 2048 level-0 px in 256 px steps


def test_level_choice_and_magnification(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        grid = TileGrid.from_slide(slide, size=64, magnification=10, min_tissue=0)  # 1.0 um/px = level 1
    assert grid.spec.mpp == 1.0 and grid.spec.level == 1 and not grid.spec.needs_resize


def test_no_drift_at_the_far_edge():
    spec = TileSpec(size=256, stride=256, mpp=0.5, slide_mpp=0.499, level=0, downsample=1.0)
    grid = TileGrid.from_region(spec, (100_000, 300), None, min_tissue=0)
    xs = np.unique(grid.coords[:, 0])
    k = np.arange(len(xs))
    np.testing.assert_array_equal(xs, np.round(k * spec.stride_level0))  # exact, not accumulated
    assert xs[-1] < 100_000 <= xs[-1] + spec.extent + 1
    assert grid.edge[grid.coords[:, 0] == xs[-1]].all()
    top_left = (grid.coords[:, 0] == 0) & (grid.coords[:, 1] == 0)
    assert not grid.edge[top_left].any()  # 256.5 px reach neither border of a 100,000 x 300 slide
    assert grid.edge[grid.coords[:, 1] > 0].all()  # the second row reaches past y = 300


def test_overlap_and_tissue_fraction():
    spec = TileSpec(size=100, stride=50, mpp=1.0, slide_mpp=1.0, level=0, downsample=1.0)
    region = box(0, 0, 100, 100)
    grid = TileGrid.from_region(spec, (300, 300), region, min_tissue=0.25)
    fractions = dict(zip(map(tuple, grid.coords.tolist()), grid.tissue.tolist(), strict=True))
    assert fractions[(0, 0)] == 1.0 and fractions[(50, 0)] == 0.5 and fractions[(50, 50)] == 0.25
    assert (100, 100) not in fractions


def test_min_tissue_zero_keeps_every_tile():
    spec = TileSpec(size=100, stride=100, mpp=1.0, slide_mpp=1.0, level=0, downsample=1.0)
    assert len(TileGrid.from_region(spec, (300, 300), box(0, 0, 10, 10), min_tissue=0)) == 9
    assert len(TileGrid.from_region(spec, (300, 300), box(0, 0, 10, 10), min_tissue=0.5)) == 0


def test_roi_replace_and_restrict(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        roi = box(0, 0, 512, 512)
        replaced = TileGrid.from_slide(slide, size=128, mpp=0.25, roi=roi, roi_mode="replace", min_tissue=0.5)
        restricted = TileGrid.from_slide(slide, size=128, mpp=0.25, roi=roi, min_tissue=0.5)
    assert len(replaced) == 16  # the ROI's 4 x 4 tiles whatever the tissue
    # Restricted: the tiles of the ROI that are tissue in the slide's ground truth (borderline ones may go
    # either way, the detector's outline is not the truth's to the pixel).
    truth = load_truth(synthetic_slide.path)
    d = truth.mask_downsample
    kept = set(map(tuple, restricted.coords.tolist()))
    assert kept <= set(map(tuple, replaced.coords.tolist()))
    tissue_tiles, glass_tiles = set(), set()
    for x, y in replaced.coords.tolist():
        fraction = truth.tissue_mask[y // d : (y + 128) // d, x // d : (x + 128) // d].mean()
        (tissue_tiles if fraction >= 0.8 else glass_tiles if fraction <= 0.2 else set()).add((x, y))
    assert len(tissue_tiles) >= 4 and glass_tiles  # the ROI holds both, so the check below means something
    assert tissue_tiles <= kept and not glass_tiles & kept


def test_bad_arguments(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        for kwargs, message in [({"size": 0}, "size"), ({"stride": -1}, "stride"), ({"min_tissue": 2}, "min_tissue"),
                                ({"mpp": 0}, "mpp"), ({"roi_mode": "x", "roi": box(0, 0, 1, 1)}, "roi_mode"),
                                ({"roi_mode": "replcae"}, "roi_mode")]:  # fmt: skip
            with pytest.raises(ValueError, match=message):
                TileGrid.from_slide(slide, **kwargs)


def test_missing_mpp_names_the_option():
    with (
        wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff") as slide,
        pytest.raises(wsi.MissingMppError, match="--slide-mpp"),
    ):
        TileGrid.from_slide(slide, tissue=box(0, 0, 10, 10))


def test_detect_tissue_is_the_default_region(plain_synthetic):
    with wsi.open_slide(plain_synthetic.path) as slide:
        auto = TileGrid.from_slide(slide, size=256, mpp=0.25)
        explicit = TileGrid.from_slide(slide, size=256, mpp=0.25, tissue=tiling.detect_tissue(slide))
    np.testing.assert_array_equal(auto.coords, explicit.coords)
    assert 0 < len(auto) < 12 * 10

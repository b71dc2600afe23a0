"""Reader conformance: every registered backend reads the same pixels and metadata as raw openslide."""

from __future__ import annotations

import numpy as np
import openslide
import pytest

import wsi
from tests.conftest import openslide_rgb
from wsi.backends import backend_order, list_backends

REGIONS = [
    ((0, 0), (256, 256)),
    ((1000, 1500), (300, 200)),
    ((2100, 2900), (200, 120)),
    ((-20, -10), (64, 64)),
]


@pytest.fixture(params=list_backends())
def backend(request):
    return request.param


def test_auto_order_tries_openslide_first():
    assert backend_order()[0] == "openslide"
    assert set(backend_order()) == {"openslide", "tiffslide"}


@pytest.mark.parametrize(("location", "size"), REGIONS)
def test_cmu_regions_match_raw_openslide(cmu_path, backend, location, size):
    expected = openslide_rgb(cmu_path, location, 0, size)
    with wsi.open_slide(cmu_path, backend=backend) as slide:
        got = slide.read_region(location, 0, size)
    assert got.shape == (size[1], size[0], 3) and got.dtype == np.uint8
    np.testing.assert_array_equal(got, expected)


def test_cmu_meta_agrees_with_openslide(cmu_path, backend):
    raw = openslide.OpenSlide(str(cmu_path))
    with wsi.open_slide(cmu_path, backend=backend) as slide:
        meta = slide.meta
    assert meta.backend == backend
    assert meta.dimensions == raw.dimensions == (2220, 2967)
    assert meta.level_dimensions == tuple(raw.level_dimensions)
    assert meta.level_downsamples == pytest.approx(raw.level_downsamples)
    assert meta.mpp == pytest.approx(0.499)
    assert meta.objective_power == pytest.approx(20)
    assert meta.vendor == "aperio"


def test_synthetic_slide_levels_agree(synthetic_slide, backend):
    with wsi.open_slide(synthetic_slide.path, backend=backend) as slide:
        meta = slide.meta
        assert meta.level_dimensions == synthetic_slide.level_dimensions
        assert meta.level_downsamples == pytest.approx([1.0, 4.0])
        assert meta.mpp == pytest.approx(0.25)
        assert meta.objective_power == pytest.approx(40)
        level1 = slide.read_region((512, 256), 1, (100, 80))
    np.testing.assert_array_equal(level1, openslide_rgb(synthetic_slide.path, (512, 256), 1, (100, 80)))


def test_reads_past_the_edge_are_white_at_every_level(backend):
    from tests.conftest import OPENSLIDE_DATA

    with wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff", backend=backend) as slide:
        w, h = slide.meta.level_dimensions[2]
        ds = slide.meta.level_downsamples[2]
        region = slide.read_region((int(ds * (w - 5)), int(ds * (h - 5))), 2, (20, 20))
    assert (region[8:, 8:] == 255).all()
    assert region.shape == (20, 20, 3)


def test_tiffslide_level_location_is_where_tiffslide_reads(synthetic_slide):
    """The backend restates tiffslide's level-0 -> level mapping (private in tiffslide): they must agree."""
    import tiffslide

    from wsi.backends.tiffslide_reader import level_location

    with tiffslide.TiffSlide(str(synthetic_slide.path)) as raw:
        level, ds = 1, raw.level_downsamples[1]
        whole = raw.read_region((0, 0), level, raw.level_dimensions[level], as_array=True)
        for location in [(0, 0), (513, 257), (1023, 1021), (2047, 3)]:
            x, y = level_location(location, ds)
            got = raw.read_region(location, level, (40, 30), as_array=True)
            np.testing.assert_array_equal(got, whole[y : y + 30, x : x + 40])

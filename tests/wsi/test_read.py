"""Reading at a target mpp, thumbnails, transparency, plausibility of resolutions."""

from __future__ import annotations

import numpy as np
import pytest

import wsi
from wsi.slide import _composite_on_white


def test_read_at_native_mpp_is_read_region(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        a = slide.read((300, 400), (256, 256), mpp=0.499)
        b = slide.read_region((300, 400), 0, (256, 256))
    np.testing.assert_array_equal(a, b)


def test_read_picks_the_level_then_resizes(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        assert slide.best_level_for_mpp(1.0) == 1  # level 1 is exactly 1.0 mpp
        assert slide.best_level_for_mpp(0.5) == 0
        assert slide.best_level_for_mpp(4.0) == 1
        assert slide.best_level_for_mpp(0.1) == 0
        exact = slide.read((400, 800), (512, 512), mpp=1.0)
        np.testing.assert_array_equal(exact, slide.read_region((400, 800), 1, (128, 128)))
        half = slide.read((400, 800), (512, 512), mpp=0.5)
        assert half.shape == (256, 256, 3)
        # A resample of level 0 by 2 agrees with the content on average.
        level0 = slide.read_region((400, 800), 0, (512, 512)).astype(float)
        pooled = level0.reshape(256, 2, 256, 2, 3).mean(axis=(1, 3))
        assert np.abs(pooled - half).mean() < 4


def test_thumbnail_keeps_aspect(synthetic_slide):
    with wsi.open_slide(synthetic_slide.path) as slide:
        thumb = slide.thumbnail(max_size=320)
    assert thumb.shape == (256, 320, 3)


def test_read_region_rejects_bad_arguments(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        with pytest.raises(ValueError, match="level 3 out of range"):
            slide.read_region((0, 0), 3, (10, 10))
        with pytest.raises(ValueError, match="size must be positive"):
            slide.read_region((0, 0), 0, (0, 10))


def test_transparent_pixels_become_white():
    rgba = np.array([[[10, 20, 30, 0], [10, 20, 30, 255], [0, 0, 0, 128]]], dtype=np.uint8)
    out = _composite_on_white(rgba)
    assert out.tolist() == [[[255, 255, 255], [10, 20, 30], [127, 127, 127]]]


def test_outside_the_slide_reads_white(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        corner = slide.read_region((2200, 2950), 0, (64, 64))
    assert (corner[40:, 40:] == 255).all()


@pytest.mark.parametrize(
    ("value", "expected"), [(0.25, 0.25), ("0.499", 0.499), (352.8, None), (0, None), ("x", None)]
)
def test_plausible_mpp(value, expected):
    assert wsi.plausible_mpp(value) == expected


def test_magnification_alias():
    assert wsi.magnification_to_mpp(40) == 0.25
    assert wsi.magnification_to_mpp(20) == 0.5


def test_one_level_choice_for_a_downsample(synthetic_slide):
    """level_for_downsample is what best_level_for_mpp, thumbnail and tissue detection use."""
    with wsi.open_slide(synthetic_slide.path) as slide:  # downsamples 1 and 4, 0.25 um/px
        choices = [slide.level_for_downsample(d) for d in (0.5, 1.0, 3.9, 3.998, 4.0, 100.0)]
        assert choices == [0, 0, 0, 1, 1, 1]  # 3.998: within 0.1 % of level 1 (vendor rounding)
        assert slide.best_level_for_mpp(1.0) == 1 and slide.best_level_for_mpp(0.99) == 0
        assert slide.thumbnail(160).shape == (128, 160, 3)  # read from level 1, then shrunk

"""Tissue detection's work image from DCT-scaled native JPEG tiles against the exact read_region path."""

from __future__ import annotations

import numpy as np
import pytest

import tiling
import wsi
from tiling import tissue
from tiling.tissue import read_downsampled


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    return (a & b).sum() / (a | b).sum()


@pytest.mark.parametrize("which", ["cmu_path", "synthetic_slide", "plain_synthetic"])
def test_native_mask_agrees_with_the_exact_one(which, request):
    fixture = request.getfixturevalue(which)
    path = getattr(fixture, "path", fixture)
    with wsi.open_slide(path) as slide:
        factor = max(1.0, 8.0 / slide.meta.mpp)
        assert tissue._read_native_downsampled(slide, factor) is not None  # the fast path is taken
        fast = tiling.detect_tissue_result(slide)
        exact = tiling.detect_tissue_result(slide, exact=True)
    assert fast.image.shape == exact.image.shape and fast.downsample == exact.downsample
    assert np.abs(fast.image.astype(np.int16) - exact.image.astype(np.int16)).mean() < 6
    assert _iou(fast.mask, exact.mask) > 0.97
    assert fast.geometry.symmetric_difference(exact.geometry).area < 0.05 * exact.geometry.area


@pytest.mark.parametrize("factor", [2.9, 4.0, 16.0, 40.0])
def test_native_image_has_the_exact_size_and_pixels_close_to_it(cmu_path, factor):
    with wsi.open_slide(cmu_path) as slide:
        fast, exact = read_downsampled(slide, factor), read_downsampled(slide, factor, exact=True)
    assert fast.shape == exact.shape == (round(2967 / factor), round(2220 / factor), 3)
    assert np.abs(fast.astype(np.int16) - exact.astype(np.int16)).mean() < 6


def test_levels_that_are_not_jpeg_read_exactly(blank_slide):
    with wsi.open_slide(blank_slide) as slide:
        assert tissue._read_native_downsampled(slide, 16.0) is None  # uncompressed tiles: read_region
        assert np.array_equal(read_downsampled(slide, 16.0), read_downsampled(slide, 16.0, exact=True))


def test_native_tiles_that_disagree_with_the_reader_are_not_used(cmu_path, monkeypatch):
    from tiling.reader import NativeTiles

    real = NativeTiles.decode_tile
    monkeypatch.setattr(
        NativeTiles, "decode_tile", lambda self, tx, ty, scale=1: 255 - real(self, tx, ty, scale)
    )
    with wsi.open_slide(cmu_path) as slide:
        assert tissue._read_native_downsampled(slide, 16.0) is None
        assert np.array_equal(read_downsampled(slide, 16.0), read_downsampled(slide, 16.0, exact=True))


def test_a_mosaic_over_the_memory_bound_reads_exactly(cmu_path, monkeypatch):
    monkeypatch.setattr(tissue, "NATIVE_MOSAIC_BYTES", 1000)
    with wsi.open_slide(cmu_path) as slide:
        assert tissue._read_native_downsampled(slide, 16.0) is None


def test_a_corrupt_slide_fails_as_the_slide_reader_says(tmp_path):
    """The native path gives way to read_region, whose error names the slide (as before the native path)."""
    from tests.conftest import OPENSLIDE_DATA

    with wsi.open_slide(OPENSLIDE_DATA / "unreadable.svs") as slide:
        assert tissue._read_native_downsampled(slide, 16.0) is None
        with pytest.raises(wsi.SlideError, match="Bogus marker"):
            tiling.detect_tissue_result(slide)


def test_a_small_slide_keeps_the_finer_image_its_work_image_was_averaged_from(cmu_path):
    """A biopsy's work image (185 px high) is averaged from its native tiles at 1/4 (742 px), which is kept as
    the preview (the thumbnail the pictures need): the same tissue as from the 1/8 decode, within the mask's
    edge pixels, and the same tiles."""
    from PIL import Image

    from tiling.tissue import TissueParams

    with wsi.open_slide(cmu_path) as slide:
        result = tiling.detect_tissue_result(slide)
        direct = tiling.detect_tissue_result(slide, TissueParams(preview_size=0))  # the 1/8 decode, resized
        exact = tiling.detect_tissue_result(slide, exact=True)
        thumbnail = slide.thumbnail(742)
        spec = tiling.TileSpec.for_slide(slide, tiling.TilingConfig())
    assert result.preview.shape == (742, 555, 3) and result.preview_downsample == 4.0
    assert result.image.shape == direct.image.shape == (185, 138, 3)
    assert np.abs(result.preview.astype(np.int16) - thumbnail.astype(np.int16)).mean() < 6
    # The work image is the preview's area average over the work image's pixels.
    box = (0, 0, 2220 / 4, 2967 / 4)
    averaged = np.asarray(Image.fromarray(result.preview).resize((138, 185), Image.Resampling.BOX, box=box))
    assert np.abs(averaged.astype(np.int16) - result.image.astype(np.int16)).max() <= 1
    assert direct.preview is None and exact.preview is None  # no finer decode asked for / by read_region
    assert _iou(result.mask, direct.mask) > 0.98 and _iou(result.mask, exact.mask) > 0.97
    grids = [
        tiling.TileGrid.from_region(spec, (2220, 2967), r.geometry, 0.5).coords for r in (result, direct)
    ]
    np.testing.assert_array_equal(*grids)


def test_a_slide_whose_work_image_is_large_enough_has_no_preview(cmu_path):
    from tiling.tissue import TissueParams

    with wsi.open_slide(cmu_path) as slide:
        assert tiling.detect_tissue_result(slide, TissueParams(preview_size=185)).preview is None
        finer = tiling.detect_tissue_result(slide, TissueParams(preview_size=1000))  # 1/2: 1484 px
    assert finer.preview.shape == (1484, 1110, 3) and finer.preview_downsample == 2.0


@pytest.mark.parametrize("fails", ["tile_check", "memory_bound"])
def test_a_small_slide_whose_native_tiles_cannot_be_used_is_read_exactly_once(cmu_path, monkeypatch, fails):
    """The preview's fallbacks through `detect_tissue_result`: a sample tile that disagrees with the slide reader
    or a mosaic over NATIVE_MOSAIC_BYTES gives no preview and the exact work image, with the native tiles
    opened once (not again by a second try of the native path)."""
    from tiling.reader import NativeTiles

    with wsi.open_slide(cmu_path) as slide:
        exact = tiling.detect_tissue_result(slide, exact=True)
    if fails == "tile_check":
        real = NativeTiles.decode_tile
        monkeypatch.setattr(
            NativeTiles, "decode_tile", lambda self, tx, ty, scale=1: 255 - real(self, tx, ty, scale)
        )
    else:
        monkeypatch.setattr(tissue, "NATIVE_MOSAIC_BYTES", 1000)
    opened = []
    open_level = NativeTiles.open_level.__func__
    monkeypatch.setattr(
        NativeTiles, "open_level", classmethod(lambda cls, *a: opened.append(a) or open_level(cls, *a))
    )
    with wsi.open_slide(cmu_path) as slide:
        result = tiling.detect_tissue_result(slide)
    assert result.preview is None and result.preview_downsample is None
    np.testing.assert_array_equal(result.image, exact.image)
    assert len(opened) == 1

"""Resampled, overlapping and unaligned grids read from native JPEG tiles: exact mode, DCT scaling, the
per-thread cache, the check against the slide reader, and corrupt tiles."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from shapely.geometry import box

import wsi
from tests.wsi.bad_files import corrupt_tile
from tiling import tile_slide
from tiling.config import TilingConfig
from tiling.grid import TileSpec
from tiling.reader import TileReader
from tiling.resample import ResampledTiles, area_resize, dct_scale
from wsi.errors import UnreadableSlideError


def _grid(slide: wsi.Slide, spec: TileSpec) -> list[tuple[int, int]]:
    """Every tile of the spec's grid over the slide, edge tiles included (row-major)."""
    step, (w, h) = spec.stride_level0, slide.meta.dimensions
    xs = [round(k * step) for k in range(int(w // step) + 1) if round(k * step) < w]
    ys = [round(k * step) for k in range(int(h // step) + 1) if round(k * step) < h]
    return [(x, y) for y in ys for x in xs]


def _reference(slide: wsi.Slide, spec: TileSpec, x: int, y: int, area: bool = False) -> np.ndarray:
    region = slide.read_region((x, y), spec.level, (spec.read_size, spec.read_size))
    return (area_resize if area else wsi.resize_rgb)(region, (spec.size, spec.size))


@pytest.mark.parametrize(
    ("size", "factor", "stride"),
    [(256, 2, None), (224, 2, None), (224, 1, None), (256, 2, 128), (200, 1.5, 150)],
    ids=["256@2x", "224@2x", "224@1x", "stride128@2x", "200@1.5x"],
)
def test_exact_mode_is_read_region_plus_resize(cmu_path, size, factor, stride):
    """CMU's 240 px JPEG tiles never line up with these grids: every tile (edges too) is pasted from several."""
    with wsi.open_slide(cmu_path) as slide:
        config = TilingConfig(size=size, mpp=slide.mpp * factor, stride=stride)
        spec = TileSpec.for_slide(slide, config)
        reader = TileReader(cmu_path, spec, exact=True)
        assert reader.path_name == "resampled"
        for x, y in _grid(slide, spec)[::3]:
            np.testing.assert_array_equal(
                reader.read(x, y), _reference(slide, spec, x, y), err_msg=f"{x},{y}"
            )


@pytest.mark.parametrize(("factor", "tile_limit", "mean_limit"), [(2, 1.5, 0.5), (4, 1.5, 0.5), (1.985, 6, 1.5)],
                         ids=["2x", "4x", "1.985x"])  # fmt: skip
def test_dct_scaled_tiles_are_close_to_a_resize(cmu_path, factor, tile_limit, mean_limit):
    """At 2x and 4x a DCT-scaled tile is an area average (compared with read_region + area resize). At 1.985x
    (a slide at 0.2519 um/px tiled at 0.5) the half-size box (127 px) is resized up to 128: compared with
    read_region + resize_rgb, as an area resize by a non-integer factor is a filter of its own."""
    with wsi.open_slide(cmu_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=128, mpp=slide.mpp * factor))
        reader = TileReader(cmu_path, spec)
        assert reader.path_name == f"resampled-dct{round(factor)}"
        means = []
        for x, y in _grid(slide, spec):
            expected = _reference(slide, spec, x, y, area=factor in (2, 4))
            diff = np.abs(reader.read(x, y).astype(int) - expected)
            means.append(diff.mean())
            assert diff.mean() < tile_limit, (x, y)
        assert np.mean(means) < mean_limit


def test_dct_scale_choice():
    assert [dct_scale(f, 256) for f in (1.0, 1.5, 1.97, 2.0, 3.8, 3.95, 8.0, 16.0)] == [
        1,
        1,
        2,
        2,
        2,
        4,
        8,
        8,
    ]
    assert (dct_scale(4.0, 250), dct_scale(2.0, 255)) == (2, 1)  # scaled tiles must be whole pixels


def test_overlapping_grid_decodes_each_native_tile_once(cmu_path, monkeypatch):
    with wsi.open_slide(cmu_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=256, mpp=slide.mpp * 2, stride=64))
        reader = TileReader(cmu_path, spec)
        reader.read(0, 0)  # sets up (and checks) the resampled path
        resampled = reader._resampled
        resampled._local.__dict__.clear()
        decoded = []
        original = resampled.native.decode_tile
        monkeypatch.setattr(
            resampled.native, "decode_tile", lambda tx, ty, s: decoded.append((tx, ty)) or original(tx, ty, s)
        )
        coords = _grid(slide, spec)
        tiles = reader.read_many(np.asarray(coords))
        assert len(decoded) == len(set(decoded))  # each at most once
        across, down = -(-slide.meta.dimensions[0] // 240), -(-slide.meta.dimensions[1] // 240)
        assert len(decoded) == across * down  # every native tile is covered by some output tile
        assert len(coords) > 3 * len(decoded)  # while each output tile covers 4 to 9 of them
        for i in range(0, len(coords), 17):
            x, y = coords[i]
            diff = np.abs(tiles[i].astype(int) - _reference(slide, spec, x, y, area=True))
            assert diff.mean() < 1.5


def test_cache_stays_within_its_bound(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=224, mpp=slide.mpp, stride=112))
        reader = TileReader(cmu_path, spec)
        reader.read(0, 0)
        bounded = ResampledTiles(reader._resampled.native, spec, cache_bytes=3 * 240 * 240 * 3)
        for x, y in _grid(slide, spec)[::2]:
            np.testing.assert_array_equal(bounded.read(x, y), reader.read(x, y))
            assert bounded._local.nbytes <= 3 * 240 * 240 * 3


def test_reader_with_resampled_path_pickles(cmu_path):
    with wsi.open_slide(cmu_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=256, mpp=slide.mpp * 2))
    reader = TileReader(cmu_path, spec)
    before = reader.read(480, 480)
    again = pickle.loads(pickle.dumps(reader))
    assert again.path_name == "resampled-dct2"
    np.testing.assert_array_equal(again.read(480, 480), before)


def test_a_level_the_reader_maps_differently_is_not_trusted(cmu_path, monkeypatch):
    """If native pixels do not match read_region on the sample, tiles come from read_region."""
    import tiling.reader as reader_module

    with wsi.open_slide(cmu_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=256, mpp=slide.mpp * 2))
        monkeypatch.setattr(reader_module, "DCT_TOLERANCE", -1.0)
        reader = TileReader(cmu_path, spec)
        assert reader.path_name == "read_region"
        np.testing.assert_array_equal(reader.read(480, 480), _reference(slide, spec, 480, 480))


@pytest.mark.parametrize("mpp", [0.5, 0.25], ids=["resampled", "aligned"])
def test_a_corrupt_native_tile_fails_the_slide_with_its_location(plain_synthetic, tmp_path, mpp):
    path = tmp_path / "corrupt.svs"
    shutil.copy(plain_synthetic.path, path)
    corrupt_tile(path, 1, 1)  # level-0 (256, 256); far from the sample checked in the middle
    with pytest.raises(UnreadableSlideError, match=r"level-0 \(256, 256\)"):
        tile_slide(path, tmp_path / "s.zarr", size=256, mpp=mpp, min_tissue=0, codec="lz4",
                   roi=box(0, 0, 3072, 2560), roi_mode="replace")  # fmt: skip


def test_exact_is_in_the_fingerprint_only_when_set():
    assert "exact" not in TilingConfig().content()
    assert TilingConfig(exact=True).content()["exact"] is True
    with pytest.raises(ValueError, match="exact"):
        TilingConfig(exact="yes")


@pytest.fixture(scope="module", params=["lzw", "zlib", None], ids=["lzw", "deflate", "uncompressed"])
def non_jpeg_slide(request, tmp_path_factory):
    """A 1200 x 1000 tiled TIFF (CMU-1-Small-Region's pixels, 0.25 um/px tag) in a non-JPEG compression."""
    with tifffile.TiffFile(Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs") as tif:
        image = np.ascontiguousarray(tif.pages[0].asarray()[500:1500, 700:1900, :3])
    path = tmp_path_factory.mktemp("nonjpeg") / f"{request.param}.tiff"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", compression=request.param,
                     resolution=(1e4 / 0.25, 1e4 / 0.25), resolutionunit="CENTIMETER")  # fmt: skip
    return path


@pytest.mark.parametrize(
    ("size", "mpp", "stride"),
    [(256, 0.25, None), (224, 0.5, None), (256, 0.5, 128)],
    ids=["aligned", "224", "stride"],
)
def test_non_jpeg_levels_are_read_tile_by_tile_exactly(non_jpeg_slide, size, mpp, stride):
    with wsi.open_slide(non_jpeg_slide) as slide:
        assert slide.mpp == pytest.approx(0.25)
        spec = TileSpec.for_slide(slide, TilingConfig(size=size, mpp=mpp, stride=stride))
        reader = TileReader(non_jpeg_slide, spec)
        assert reader.path_name == "resampled"  # decoded by tifffile, no DCT scaling, no read_region
        for x, y in _grid(slide, spec):
            np.testing.assert_array_equal(
                reader.read(x, y), _reference(slide, spec, x, y), err_msg=f"{x},{y}"
            )

"""Which way tiles are read: strips of neighbours on the read_region path, a resumed store that must not mix
tile kinds, and a corrupt native tile on every decoding path."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from shapely.geometry import box

import wsi
from tests.conftest import OPENSLIDE_DATA
from tests.wsi.bad_files import corrupt_tile
from tiling import PatchStore, tile_slide, tile_slide_result
from tiling.config import TilingConfig
from tiling.engine import READ_PATH
from tiling.grid import TileGrid, TileSpec
from tiling.reader import TileReader
from wsi.errors import UnreadableSlideError


def _count_reads(monkeypatch) -> list:
    calls = []
    original = wsi.Slide.read_region

    def counted(self, *args, **kwargs):
        calls.append(args)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(wsi.Slide, "read_region", counted)
    return calls


@pytest.mark.parametrize(
    ("slide", "slide_mpp", "size", "mpp", "stride"),
    [("cmu", None, 256, 0.499, 128), ("cmu", None, 128, 1.0, 64), ("boxes", 1.0, 64, 1.0, 32)],
    ids=["cmu-stride128", "cmu-2x-stride64", "openslide-boxes-stride32"],
)
def test_overlapping_tiles_on_the_read_region_path_are_read_in_strips(cmu_path, monkeypatch, slide, slide_mpp,
                                                                      size, mpp, stride):  # fmt: skip
    """Neighbours of a row are read as one region and cut out: the same pixels as one read per tile, in far
    fewer reads (openslide's tiny generic-tiff fixture included)."""
    path = cmu_path if slide == "cmu" else OPENSLIDE_DATA / "boxes.tiff"
    with wsi.open_slide(path, backend="openslide", slide_mpp=slide_mpp) as opened:
        config = TilingConfig(size=size, mpp=mpp, stride=stride, min_tissue=0)
        grid = TileGrid.from_config(opened, config, tissue=box(0, 0, *opened.meta.dimensions))  # every tile
    reader = TileReader(path, grid.spec, backend="openslide", slide_mpp=slide_mpp, native=False)
    assert reader.path_name == "read_region"
    coords = grid.coords[np.isin(grid.coords[:, 1], np.unique(grid.coords[:, 1])[1:4])]  # three whole rows
    single = np.stack([reader.read(int(x), int(y)) for x, y in coords])
    calls = _count_reads(monkeypatch)
    batched = reader.read_many(coords)
    np.testing.assert_array_equal(batched, single)
    assert reader._strips_agree is True
    # One read per row (narrower than STRIP_PIXELS here), plus the first strip read again, tile
    # by tile.
    assert len(calls) == 3 + 1 + len(coords[coords[:, 1] == coords[0, 1]])


def test_strips_that_differ_from_tile_reads_are_not_used(cmu_path, monkeypatch):
    with wsi.open_slide(cmu_path) as opened:
        config = TilingConfig(size=128, mpp=1.0, stride=64, min_tissue=0)
        grid = TileGrid.from_config(opened, config, tissue=box(0, 0, *opened.meta.dimensions))
    reader = TileReader(cmu_path, grid.spec, native=False)
    coords = grid.coords[:40]
    single = np.stack([reader.read(int(x), int(y)) for x, y in coords])
    original = TileReader._read_strip

    def shifted(self, strip_coords, out):  # as a reader rounding fractional positions differently would
        original(self, strip_coords + [1, 0], out)

    monkeypatch.setattr(TileReader, "_read_strip", shifted)
    np.testing.assert_array_equal(reader.read_many(coords), single)
    assert reader._strips_agree is False


def _make_partial(store_path, shards: list[int]) -> None:
    """As if the run that made the store had been cut off before writing `shards`."""
    store = PatchStore.open(store_path, mode="r+")
    for shard in shards:
        store._group["shards_done"][shard] = 0
    store._group.attrs["complete"] = False


def test_a_store_records_how_its_tiles_were_read(synthetic_slide, tmp_path):
    fast = tile_slide(synthetic_slide.path, tmp_path / "f.zarr", size=128, mpp=0.5, shard_tiles=8)
    exact = tile_slide(
        synthetic_slide.path, tmp_path / "e.zarr", size=128, mpp=0.5, shard_tiles=8, exact=True
    )
    aligned = tile_slide(synthetic_slide.path, tmp_path / "a.zarr", size=128, mpp=0.25, shard_tiles=8)
    coords = tile_slide(synthetic_slide.path, tmp_path / "c.zarr", size=128, mpp=0.5, coords_only=True)
    assert (fast.attrs[READ_PATH], exact.attrs[READ_PATH], aligned.attrs[READ_PATH]) == (
        "resampled-dct2", "resampled", "native"
    )  # fmt: skip
    assert READ_PATH not in coords.attrs


def test_a_partial_store_is_resumed_only_by_the_path_that_wrote_it(synthetic_slide, tmp_path):
    """A partial store whose tiles were read another way (here: recorded as read_region, e.g. by a run with
    another backend) is written again from the start, never completed with tiles of another kind."""
    options = {"size": 128, "mpp": 0.5, "shard_tiles": 8, "codec": "zstd"}
    reference = tile_slide(synthetic_slide.path, tmp_path / "ref.zarr", **options)
    target = tmp_path / "t.zarr"
    shutil.copytree(tmp_path / "ref.zarr", target)
    _make_partial(target, [1, 3])
    same = tile_slide_result(synthetic_slide.path, target, **options)
    assert same.status == "resumed" and same.store.is_complete

    _make_partial(target, [1, 3])
    written_before = (target / "patches" / "c" / "0").stat().st_mtime_ns
    PatchStore.open(target, mode="r+")._group.attrs[READ_PATH] = "read_region"
    other = tile_slide_result(synthetic_slide.path, target, **options)
    assert other.status == "done" and other.store.is_complete  # started again, not resumed
    assert other.store.attrs[READ_PATH] == reference.attrs[READ_PATH] == "resampled-dct2"
    assert (target / "patches" / "c" / "0").stat().st_mtime_ns != written_before  # shard 0 written again
    np.testing.assert_array_equal(other.store.patches[:], reference.patches[:])


@pytest.mark.parametrize(
    ("size", "mpp", "exact", "path"),
    [(256, 0.5, True, "resampled"), (224, 0.25, False, "resampled")],
    ids=["exact", "unaligned"],  # DCT-scaled and aligned: test_resample.py
)  # fmt: skip
def test_a_corrupt_native_tile_fails_every_decoding_path_with_its_location(plain_synthetic, tmp_path, size, mpp,
                                                                           exact, path):  # fmt: skip
    """Never a white or stale tile: the slide fails, and the message names the tile's level-0 location."""
    slide_path = tmp_path / "corrupt.svs"
    shutil.copy(plain_synthetic.path, slide_path)
    corrupt_tile(slide_path, 1, 1)  # level-0 (256, 256); far from the sample checked in the middle
    with wsi.open_slide(slide_path) as slide:
        spec = TileSpec.for_slide(slide, TilingConfig(size=size, mpp=mpp))
    assert TileReader(slide_path, spec, exact=exact).path_name == path
    with pytest.raises(UnreadableSlideError, match=r"level-0 \(256, 256\)"):
        tile_slide(slide_path, tmp_path / "s.zarr", size=size, mpp=mpp, exact=exact, min_tissue=0, codec="lz4",
                   roi=box(0, 0, 3072, 2560), roi_mode="replace")  # fmt: skip


def test_tiling_closes_the_slide_handles_its_threads_opened(tmp_path):
    """A 16-bit grey TIFF goes through read_region (tiffslide): each thread's handle is closed after tiling."""
    import gc
    import warnings

    from tests.wsi import bad_files

    path = tmp_path / "g.tif"
    bad_files.gray16_tiff(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        store = tile_slide(path, tmp_path / "s.zarr", mpp=2.0, size=64, min_tissue=0.2, min_fragment_um2=0)
        gc.collect()
    assert len(store) > 0
    assert not [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]

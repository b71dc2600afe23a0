"""Pipeline steps and run configuration: the tile step's outputs, the thumbnail's content, one vocabulary."""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pytest
import shapely
from PIL import Image

import tiling
import wsi
from slidestream.discovery import SlideInput
from slidestream.pipeline import RunConfig, TileOptions, load_config, process_slide
from tiling import PatchStore, TilingConfig
from tiling.thumbnail import ROI_OUTLINE, Overlay, draw_thumbnail


def _tissue(folder):
    return shapely.union_all([o.geometry for o in wsi.qupath.read_geojson(folder / "tissue.geojson")])


def test_pictures_show_the_slide_its_tiles_and_its_tissue(synthetic_slide, tmp_path):
    config = load_config(out=tmp_path / "out", progress=False, steps=("tile",),
                         **{"tiling.mpp": 1.0, "tiling.size": 64})  # fmt: skip
    (record,) = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert record.status == "done"
    folder = config.out / "slides" / "alpha"
    store = PatchStore.open(folder / "patches.zarr")
    with wsi.open_slide(synthetic_slide.path) as slide:
        tissue = tiling.detect_tissue_result(slide)
        # Tissue detection's work image is small (80 px wide): the pictures are drawn on the image it was
        # averaged from, its preview (level 1's native tiles, 640 px wide), not on a second read of the slide.
        raw, downsample = tissue.preview, tissue.preview_downsample
        assert max(tissue.image.shape) < 512 and raw.shape == (512, 640, 3) and downsample == 4
        assert np.abs(raw.astype(np.int16) - slide.thumbnail(640).astype(np.int16)).mean() < 6
    # The figure: the store's tiles, the tissue file's outline, a scale bar at the slide's 0.25 um/px, the
    # slide id and tile count above (the drawing itself is tested in tests/tiling/test_thumbnail.py).
    shown = np.asarray(Image.open(folder / "thumbnail.png").convert("RGB"))
    overlay = Overlay(coords=store.coords, extent=256, tissue=_tissue(folder), slide_mpp=0.25, title="alpha",
                      subtitle=f"{len(store)} tiles of 64 px at 1 um/px, tissue {store.attrs['tissue_mm2']:.2f} mm^2")  # fmt: skip
    expected = draw_thumbnail(raw, downsample, overlay, min_size=512)
    np.testing.assert_array_equal(shown, expected.image)
    x0, y0, x1, y1 = expected.box
    # 640 px: drawn on as it is (no enlarging), between the title band and the legend.
    assert (x1 - x0, y1 - y0) == (640, 512) and shown.shape[0] > 512 + 40
    # The tiles' green fill inside the slide's box: over every tile, nowhere far from one.
    tinted = _tile_fill(shown[y0:y1, x0:x1], raw)
    inside = np.zeros(raw.shape[:2], bool)
    for x, y in np.round(store.coords / downsample).astype(int):
        inside[y + 2 : y + 62, x + 2 : x + 62] = True  # 256 level-0 px = 64 px here, less the edges
    near = np.zeros(raw.shape[:2], bool)
    for x, y in np.round(store.coords / downsample).astype(int):
        near[max(0, y - 3) : y + 67, max(0, x - 3) : x + 67] = True
    assert tinted[inside].mean() > 0.95 and inside.any() and tinted[~near].mean() < 0.05
    # The mask: the tissue on the thumbnail's grid.
    mask = np.asarray(Image.open(folder / "tissue_mask.png"))
    assert mask.shape == raw.shape[:2]
    assert (mask == 255).mean() == pytest.approx(_tissue(folder).area / (2560 * 2048), abs=0.02)
    # ... and it agrees with tissue detection's own mask (8x coarser here), pixel by pixel, but for the edges.
    k = raw.shape[1] // tissue.mask.shape[1]
    coarse = np.repeat(np.repeat(tissue.mask, k, axis=0), k, axis=1)[: mask.shape[0], : mask.shape[1]]
    assert ((mask == 255) == coarse).mean() > 0.97
    # The stitch: each stored tile shrunk into its box on black, nothing elsewhere.
    stitch = np.asarray(Image.open(folder / "stitch.png"))
    assert stitch.shape == raw.shape
    side = 256 / downsample
    covered = np.zeros(raw.shape[:2], bool)
    for i in (0, len(store) // 2, len(store) - 1):
        x, y = np.round(store.coords[i] / downsample).astype(int)
        w, h = np.round((store.coords[i] + 256) / downsample).astype(int) - (x, y)
        small = np.asarray(Image.fromarray(store.patches[i]).resize((w, h), Image.Resampling.BOX))
        np.testing.assert_array_equal(
            stitch[y : y + h, x : x + w], small[: stitch.shape[0] - y, : stitch.shape[1] - x]
        )
    for x, y in np.round(store.coords / downsample).astype(int):
        covered[y : y + int(side) + 2, x : x + int(side) + 2] = True
    assert (stitch[~covered] == 0).all() and covered.mean() < 0.9


def _tile_fill(figure: np.ndarray, slide: np.ndarray) -> np.ndarray:
    """Where `figure` is `slide` under the tiles' translucent green fill (within 2 grey levels)."""
    from tiling.thumbnail import TILE_FILL

    alpha = TILE_FILL[3] / 255
    blend = slide * (1 - alpha) + np.array(TILE_FILL[:3]) * alpha
    return (np.abs(figure - blend) <= 2).all(axis=-1)


def test_a_roi_run_draws_its_roi(synthetic_slide, tmp_path):
    with wsi.open_slide(synthetic_slide.path) as slide:
        x, y = shapely.get_coordinates(tiling.detect_tissue(slide).representative_point())[0]
    roi = wsi.qupath.write_geojson(tmp_path / "roi.geojson", [
        wsi.qupath.QuPathObject(shapely.box(x - 400, y - 400, x + 400, y + 400), "annotation", "ROI")])  # fmt: skip
    blue = {}
    for name, where in (("plain", None), ("roi", str(roi))):
        config = load_config(out=tmp_path / name, progress=False, steps=("tile",),
                             **{"tiling.mpp": 1.0, "tiling.size": 64, "tiling.roi": where})  # fmt: skip
        process_slide(SlideInput("alpha", synthetic_slide.path), config)
        shown = np.asarray(Image.open(config.out / "slides" / "alpha" / "thumbnail.png").convert("RGB"))
        blue[name] = (shown == ROI_OUTLINE[:3]).all(axis=-1).sum()
    # The ROI's ring (800 level-0 px a side, 4 level-0 px per thumbnail px: the 640 px preview, 3 px wide) and
    # its legend swatch.
    assert blue["plain"] == 0 and blue["roi"] > 3 * 4 * 800 / 4 * 0.8


def test_tile_options_go_to_tile_slide_unchanged(synthetic_slide, tmp_path):
    """The pipeline's TileOptions are a TilingConfig plus the ROI's location; the store records them."""
    options = TileOptions(size=64, mpp=1.0, min_tissue=0.25, codec="zstd", shard_tiles=16)
    assert isinstance(options, TilingConfig)
    config = replace(load_config(out=tmp_path / "out", progress=False, steps=("tile",)), tiling=options)
    process_slide(SlideInput("alpha", synthetic_slide.path), config)
    store = PatchStore.open(tmp_path / "out" / "slides" / "alpha" / "patches.zarr")
    assert (store.codec, store.shard_tiles, store.tile_size) == ("zstd", 16, 64)
    assert store.attrs["tiling"]["min_tissue"] == 0.25 and store.attrs["tiling"]["mpp"] == 1.0


def test_tiling_values_are_checked_when_the_config_is_built(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[tiling]\nroi_mode = "replcae"\n')
    with pytest.raises(ValueError, match="roi_mode.*'replcae'"):
        load_config(toml)


def test_old_run_names_warn_and_still_work(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[run]\nworkers = 3\nscheduler = "tcp://127.0.0.1:8786"\n')
    with pytest.warns(DeprecationWarning) as caught:
        config = load_config(toml)
    assert {str(w.message).split(":")[0] for w in caught} == {"[run]"}
    assert config.slide_workers == 3 and config.scheduler_address == "tcp://127.0.0.1:8786"
    with pytest.warns(DeprecationWarning, match="'workers' is deprecated.*'slide_workers'"):
        assert RunConfig(workers=2).slide_workers == 2
    with pytest.warns(DeprecationWarning, match="'scheduler' is deprecated.*'scheduler_address'"):
        assert config.scheduler == "tcp://127.0.0.1:8786"
    with pytest.warns(DeprecationWarning, match="'id' is deprecated.*'slide_id'"):
        assert SlideInput(id="a", path=tmp_path).slide_id == "a"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the new names never warn
        assert RunConfig(slide_workers=2, scheduler_address=None).slide_workers == 2
        assert SlideInput("a", tmp_path).slide_id == "a"


def test_a_large_tissue_image_serves_as_the_thumbnail_without_reading_the_slide(synthetic_slide, tmp_path):
    from slidestream.pipeline.steps import FIGURE_MIN, THUMBNAIL_MIN, slide_pictures

    folder = tmp_path / "alpha"
    store = tiling.tile_slide(synthetic_slide.path, folder / "patches.zarr", mpp=1.0, size=64)
    with wsi.open_slide(synthetic_slide.path) as slide:
        image = slide.thumbnail(600)
        tissue = tiling.detect_tissue_result(slide)
    assert THUMBNAIL_MIN <= image.shape[1] == 600 < FIGURE_MIN
    downsample = 2560 / image.shape[1]
    large = replace(tissue, image=image, downsample=downsample)
    gone = tmp_path / "moved.svs"  # a read of the slide would fail: the image given is used
    written = slide_pictures(folder, gone, store, tissue=large)
    shown = np.asarray(Image.open(written[0]).convert("RGB"))
    assert shown.shape[1] == FIGURE_MIN  # a work image of 600 px is enlarged in the figure, as ever
    mask = np.asarray(Image.open(folder / "tissue_mask.png"))
    assert mask.shape == image.shape[:2]
    # Too small for a figure: the preview it was averaged from is drawn on as tissue detection decoded it
    # (640 x 512 px: not enlarged).
    small = replace(tissue, image=image[:100, :100])
    slide_pictures(folder, gone, store, tissue=small)
    assert np.asarray(Image.open(folder / "stitch.png")).shape == tissue.preview.shape == (512, 640, 3)
    assert np.asarray(Image.open(folder / "thumbnail.png")).shape[1] == 640
    # Without a preview (read by read_region, `exact`): the slide is read.
    with pytest.raises(wsi.SlideError):
        slide_pictures(folder, gone, store, tissue=replace(small, preview=None, preview_downsample=None))


def _two_level_slide(path, image: np.ndarray, mpp: float, tile: int = 64):
    """An SVS-like file of `image` as level 0 and a 4x coarser level 1, JPEG tiles of `tile` px (and the
    stripped thumbnail after level 0 that makes it an SVS pyramid for tifffile, as `wsi.synthetic` writes)."""
    import tifffile

    h0, w0 = image.shape[:2]
    aperio = f"Aperio Image Library v12.0.16\r\n{w0}x{h0}"
    coarse = np.asarray(Image.fromarray(image).reduce(4))
    jpeg = {"compression": "jpeg", "photometric": "rgb", "subfiletype": 0, "metadata": None}
    with tifffile.TiffWriter(path) as tif:
        tif.write(image, tile=(tile, tile), description=f"{aperio} [0,0 {w0}x{h0}] ({tile}x{tile}) JPEG/RGB "
                  f"Q=90|MPP = {mpp}", **jpeg)  # fmt: skip
        tif.write(
            coarse, rowsperstrip=16, description=f"{aperio} -> {w0 // 4}x{h0 // 4} - |MPP = {mpp}", **jpeg
        )
        tif.write(coarse, tile=(tile, tile), description=f"{aperio} [0,0 {w0}x{h0}] ({tile}x{tile}) -> "
                  f"{coarse.shape[1]}x{coarse.shape[0]} JPEG/RGB Q=90", **jpeg)  # fmt: skip
    return path


def test_a_small_slide_whose_coarse_level_is_too_small_for_a_preview_is_read_again(cmu_path, tmp_path):
    """1600 x 1200 px at 1 um/px, levels of 1600 and 400 px: tissue detection reads the 400 px level, whose full
    decode is still under 512 px: no preview (an enlarged 400 px image would be a poor thumbnail); the pictures
    read the slide again at 1024 px, as for `exact`."""
    from slidestream.pipeline.steps import slide_pictures
    from tiling.tissue import _native_mosaic

    with wsi.open_slide(cmu_path) as slide:  # CMU's tissue, turned and shrunk to 1600 x 1200
        cmu = Image.fromarray(slide.read_region((0, 0), 0, slide.meta.dimensions))
    image = np.asarray(cmu.resize((1200, 1600)).transpose(Image.Transpose.ROTATE_90))
    path = _two_level_slide(tmp_path / "small.svs", image, mpp=1.0)
    folder = tmp_path / "small"
    with wsi.open_slide(path) as slide:
        assert slide.meta.level_dimensions == ((1600, 1200), (400, 300))
        assert _native_mosaic(slide, 8.0) is not None  # read from level 1's native tiles (as a biopsy is)
        tissue = tiling.detect_tissue_result(slide)
        exact = tiling.detect_tissue_result(slide, exact=True)
    assert (
        tissue.image.shape == (150, 200, 3) and tissue.preview is None and tissue.preview_downsample is None
    )
    assert np.abs(tissue.image.astype(np.int16) - exact.image.astype(np.int16)).mean() < 6
    store = tiling.tile_slide(path, folder / "patches.zarr", mpp=4.0, size=64)
    assert len(store)
    slide_pictures(folder, path, store, tissue=tissue)
    assert np.asarray(Image.open(folder / "stitch.png")).shape == (768, 1024, 3)
    assert np.asarray(Image.open(folder / "thumbnail.png")).shape[1] == 1024


def test_pictures_from_the_region_in_memory_equal_those_from_tissue_geojson(cmu_path, tmp_path):
    """The tile step draws the pictures from the tissue it has just written (no re-read of tissue.geojson):
    the same pixels as drawn from the file, and PNGs that decode to exactly what was drawn."""
    from slidestream.pipeline.steps import PICTURES, slide_pictures, tile_with_pictures

    folder = tmp_path / "cmu"
    options = TileOptions()
    result, _ = tile_with_pictures(folder, cmu_path, "cmu", options)
    assert result.region is not None and not result.region.is_empty
    from_memory = {name: np.asarray(Image.open(folder / name)) for name in PICTURES}
    slide_pictures(
        folder, cmu_path, result.store, tissue=result.tissue
    )  # region=None: tissue.geojson is read
    for name in PICTURES:
        np.testing.assert_array_equal(np.asarray(Image.open(folder / name)), from_memory[name])
    assert from_memory["tissue_mask.png"].max() == 255 and from_memory["stitch.png"].any()


def test_the_roi_is_parsed_once_per_slide_for_the_tiles_and_the_pictures(cmu_path, tmp_path, monkeypatch):
    import tiling.roi
    from slidestream.pipeline.steps import tile_with_pictures

    w, h = 2220, 2967
    roi_file = tmp_path / "roi.geojson"
    wsi.qupath.write_geojson(roi_file, [wsi.qupath.QuPathObject(shapely.box(0, 0, w / 2, h))])
    calls = []
    parse = (
        tiling.roi.read_roi
    )  # every name of load_roi (tiling, tiling.tissue, tiling.engine) reads through it
    monkeypatch.setattr(tiling.roi, "read_roi", lambda path, *args: calls.append(path) or parse(path, *args))
    result, _ = tile_with_pictures(tmp_path / "cmu", cmu_path, "cmu", TileOptions(roi=str(roi_file)))
    assert calls == [roi_file]
    assert result.store.coords[:, 0].max() < w / 2
    assert result.region.bounds[2] <= w / 2 + 1


def test_the_stitch_is_drawn_from_the_tiles_as_written_and_equals_the_stitch_read_back(cmu_path, tmp_path,
                                                                                      monkeypatch):  # fmt: skip
    """A small slide's tiles stay in memory as they are written (`TilesKept`): the stitch reads none back from
    the store, and every picture is the same, byte for byte, as when they are read back (the old way)."""
    import tiling.thumbnail
    from slidestream.pipeline import steps
    from slidestream.pipeline.steps import PICTURES, tile_with_pictures

    given = []
    stitch = tiling.thumbnail.stitch_image
    monkeypatch.setattr(tiling.thumbnail, "stitch_image",
                        lambda *args, patches=None, **kwargs: given.append(patches) or stitch(*args, patches=patches, **kwargs))  # fmt: skip
    kept, _ = tile_with_pictures(tmp_path / "kept" / "cmu", cmu_path, "cmu", TileOptions())
    monkeypatch.setattr(steps, "KEEP_TILES_BYTES", 0)  # nothing kept: read back from the store
    read, _ = tile_with_pictures(tmp_path / "read" / "cmu", cmu_path, "cmu", TileOptions())
    assert kept.store.codec == "lz4" and len(kept.store) == len(read.store) > 0
    assert isinstance(given[0], np.ndarray) and not isinstance(given[1], np.ndarray)  # a zarr array
    np.testing.assert_array_equal(given[0], read.store.patches[:])
    for name in PICTURES:
        assert (tmp_path / "kept" / "cmu" / name).read_bytes() == (
            tmp_path / "read" / "cmu" / name
        ).read_bytes()


def test_tiles_kept_are_given_in_store_order_only_when_every_row_was_written_and_they_fit():
    from concurrent.futures import ThreadPoolExecutor

    from slidestream.pipeline.steps import TilesKept

    tiles = np.arange(10 * 2 * 2 * 3, dtype=np.uint8).reshape(10, 2, 2, 3)
    kept = TilesKept()
    kept.expect(10)
    with ThreadPoolExecutor(3) as pool:  # shards from the tiling's threads, in any order
        list(pool.map(lambda start: kept(start, tiles[start : start + 4]), (8, 0, 4)))
    np.testing.assert_array_equal(kept.patches(10), tiles)
    assert kept.patches(12) is None  # rows past the last shard kept: not all written here
    resumed = TilesKept()
    resumed.expect(4)  # shards 0 and 2 were written by an earlier run: 4 rows left
    resumed(4, tiles[4:8])
    assert resumed.patches(10) is None and resumed.over
    first = TilesKept()
    first.expect(4)  # only shard 0 left to write: its rows are not all the store's
    first(0, tiles[:4])
    assert first.patches(10) is None
    unknown = TilesKept()  # no total said: nothing kept
    unknown(0, tiles)
    assert unknown.patches(10) is None
    small = TilesKept(budget=tiles[:4].nbytes * 2)
    small.expect(10)
    for start in (0, 4, 8):
        small(start, tiles[start : start + 4])
    assert small.over and small.array is None and small.patches(10) is None  # past the budget: nothing held


def test_tiles_kept_hold_one_copy_of_the_tiles_not_two():
    """The shards are copied in place as they come (each one dropped by the tiling once written): at most one
    copy of the tiles plus a shard is held. Keeping the shards and putting them together for the stitch held
    twice the tiles (2.0x here), per slide worker."""
    import tracemalloc

    from slidestream.pipeline.steps import TilesKept

    n, shard = 40, 2
    tiles_bytes = n * 64 * 64 * 3
    kept = TilesKept()
    tracemalloc.start()
    try:
        kept.expect(n)
        for start in range(0, n, shard):  # a fresh shard each time, as the tile reader makes them
            kept(start, np.full((shard, 64, 64, 3), start, np.uint8))
        patches = kept.patches(n)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert patches.shape == (n, 64, 64, 3) and (patches[::shard, 0, 0, 0] == np.arange(0, n, shard)).all()
    # One copy of the tiles, the shard being copied in and some slack (2.0x the tiles before: kept + concatenated).
    shard_bytes = shard * 64 * 64 * 3
    assert peak < tiles_bytes + 2 * shard_bytes + 256 * 1024, f"{peak / tiles_bytes:.2f}x the tiles' bytes"


def test_pictures_refuse_tiles_that_are_not_the_stores(cmu_path, tmp_path):
    from slidestream.pipeline.steps import tile_with_pictures, write_pictures

    result, _ = tile_with_pictures(tmp_path / "cmu", cmu_path, "cmu", TileOptions())
    n = len(result.store)
    with pytest.raises(
        ValueError, match=rf"shape \({n}, 256, 256, 3\) \(N, S, S, 3\); got \({n - 1}, 256, 256, 3\)"
    ):
        write_pictures(tmp_path / "cmu", result.store, np.zeros((64, 48, 3), np.uint8), 50.0,
                       patches=np.zeros((n - 1, 256, 256, 3), np.uint8))  # fmt: skip


def test_the_tile_step_on_dasks_processes_scheduler_reads_the_stitch_back(cmu_path, tmp_path, monkeypatch):
    """Shards written in other processes reach no `on_patches` here (a thread lock does not pickle): the
    stitch reads them back from the store (it is given the store's zarr array, not tiles in memory), and
    equals the one drawn from the tiles in memory."""
    import zarr

    import tiling.thumbnail
    from slidestream.pipeline.steps import PICTURES, tile_with_pictures

    given = []
    stitch = tiling.thumbnail.stitch_image
    monkeypatch.setattr(tiling.thumbnail, "stitch_image",
                        lambda *args, patches=None, **kwargs: given.append(patches) or stitch(*args, patches=patches, **kwargs))  # fmt: skip
    tile_with_pictures(tmp_path / "threads" / "cmu", cmu_path, "cmu", TileOptions(shard_tiles=16))
    options = TileOptions(shard_tiles=16, scheduler="processes", shard_workers=2)
    result, _ = tile_with_pictures(tmp_path / "processes" / "cmu", cmu_path, "cmu", options)
    assert result.status == "done" and len(result.store) > 16
    assert len(given) == 2 and isinstance(given[0], np.ndarray)  # threads: the tiles as written
    assert isinstance(given[1], zarr.Array) and given[1].shape == (
        len(result.store),
        256,
        256,
        3,
    )  # read back
    for name in PICTURES:
        assert (tmp_path / "threads" / "cmu" / name).read_bytes() == (
            tmp_path / "processes" / "cmu" / name
        ).read_bytes()

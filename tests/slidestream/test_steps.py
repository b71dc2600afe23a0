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
from slidestream.pipeline.steps import THUMBNAIL_MIN, TILE_OUTLINE, TISSUE_OUTLINE
from tiling import PatchStore, TilingConfig


def test_thumbnail_shows_the_slide_its_tiles_and_its_tissue(synthetic_slide, tmp_path):
    config = load_config(out=tmp_path / "out", progress=False, steps=("tile",),
                         **{"tiling.mpp": 1.0, "tiling.size": 64})  # fmt: skip
    (record,) = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert record.status == "done"
    folder = config.out / "slides" / "alpha"
    shown = np.asarray(Image.open(folder / "thumbnail.png").convert("RGB")).astype(int)
    with wsi.open_slide(synthetic_slide.path) as slide:  # the image tissue detection read: not read again
        raw = tiling.detect_tissue_result(slide).image.astype(int)
    repeat = shown.shape[1] // raw.shape[1]  # a small image is enlarged by whole pixels
    assert repeat >= 2 and max(shown.shape[:2]) > THUMBNAIL_MIN // 2
    raw = raw.repeat(repeat, axis=0).repeat(repeat, axis=1)
    assert shown.shape == raw.shape
    scale = raw.shape[1] / 2560
    store = PatchStore.open(folder / "patches.zarr")
    side = 256 * scale  # 64 px at 1 um/px are 256 level-0 px of a 0.25 um/px slide
    # Every tile's box is drawn in blue over the slide: its top-left and bottom-right corners are blue.
    for x, y in store.coords * scale:
        for cx, cy in [(x, y), (x + side, y + side)]:
            r, g, b = shown[min(int(cy), raw.shape[0] - 1), min(int(cx), raw.shape[1] - 1)]  # PIL truncates
            assert b > r + 40 and b > g + 20, (x, y, (r, g, b))
    # The tissue outline is drawn in green, on the tissue's boundary.
    tissue = shapely.union_all([o.geometry for o in wsi.qupath.read_geojson(folder / "tissue.geojson")])
    rows, cols = np.nonzero((shown == TISSUE_OUTLINE[:3]).all(axis=-1))
    assert len(rows) > 100
    boundary = shapely.affinity.scale(tissue.boundary, scale, scale, origin=(0, 0))
    distance = shapely.distance(boundary, shapely.points(cols + 0.5, rows + 0.5))
    assert np.percentile(distance, 99) < 2.5
    # Everywhere else it is the slide's own pixels, pixel for pixel.
    drawn = np.zeros(raw.shape[:2], bool)
    for x, y in store.coords * scale:
        x0, y0, x1, y1 = (int(np.floor(v)) for v in (x - 2, y - 2, x + side + 3, y + side + 3))
        drawn[max(0, y0) : y1, max(0, x0) : x1] = True
    rows, cols = np.nonzero(~drawn[::3, ::3])  # a lattice of pixels away from the boxes
    rows, cols = rows * 3, cols * 3
    away = shapely.distance(boundary, shapely.points(cols + 0.5, rows + 0.5)) > 3
    rows, cols = rows[away], cols[away]
    assert len(rows) > 0.2 * raw.shape[0] * raw.shape[1] / 9
    np.testing.assert_array_equal(shown[rows, cols], raw[rows, cols])
    assert TILE_OUTLINE[3] < 255  # tile boxes are translucent: the tissue stays visible under them


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

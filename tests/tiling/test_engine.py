"""tile_slide end to end: exact pixels, JPEG tile copies, resume after a kill, skip, rewrite, empty slides."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from shapely.geometry import box

import tiling
import wsi
from tiling import PatchDataset, PatchStore, tile_slide, tile_slide_result


def test_cmu_patches_are_openslide_pixels(cmu_path, tmp_path):
    """At a target mpp equal to the level's (0.499), stored patches are read_region's pixels exactly."""
    from tests.conftest import openslide_rgb

    store = tile_slide(cmu_path, tmp_path / "cmu.zarr", size=256, mpp=0.499, min_tissue=0.3)
    assert store.is_complete and len(store) > 20 and store.codec == "lz4"  # 240 px file tiles: no copy
    for i in range(0, len(store), 7):
        x, y = (int(v) for v in store.coords[i])
        np.testing.assert_array_equal(store.patches[i], openslide_rgb(cmu_path, (x, y), 0, (256, 256)))


def test_resampled_patches_equal_slide_read(synthetic_slide, tmp_path):
    """exact=True: resampled tiles are the slide reader's resampled pixels exactly."""
    store = tile_slide(synthetic_slide.path, tmp_path / "s.zarr", size=128, mpp=0.5, codec="zstd", exact=True)
    assert store.attrs["tiling"]["read_size"] == 256 and store.codec == "zstd"
    with wsi.open_slide(synthetic_slide.path) as slide:
        for i in range(0, len(store), 5):
            x, y = (int(v) for v in store.coords[i])
            np.testing.assert_array_equal(store.patches[i], slide.read((x, y), (256, 256), mpp=0.5))


def test_resampled_patches_by_default_are_dct_scaled_area_averages(synthetic_slide, tmp_path):
    """The default decodes native tiles at half size (DCT scaling): close to read_region + area resize."""
    from tiling.resample import area_resize

    store = tile_slide(synthetic_slide.path, tmp_path / "s.zarr", size=128, mpp=0.5, codec="zstd")
    exact = tile_slide(synthetic_slide.path, tmp_path / "e.zarr", size=128, mpp=0.5, codec="zstd", exact=True)
    assert store.attrs["fingerprint"] != exact.attrs["fingerprint"]
    with wsi.open_slide(synthetic_slide.path) as slide:
        for i in range(0, len(store), 5):
            x, y = (int(v) for v in store.coords[i])
            expected = area_resize(slide.read_region((x, y), 0, (256, 256)), (128, 128)).astype(int)
            diff = np.abs(store.patches[i].astype(int) - expected)
            assert diff.mean() < 1.0 and diff.max() < 64


def test_jpeg_tiles_are_copied_exactly(plain_synthetic, tmp_path):
    result = tile_slide_result(plain_synthetic.path, tmp_path / "j.zarr", size=256, mpp=0.25, min_tissue=0)
    store = result.store
    assert store.codec == "jpeg" and len(store) == 12 * 10 and store.edge.sum() == 0
    with wsi.open_slide(plain_synthetic.path) as slide:
        for i in range(len(store)):
            x, y = (int(v) for v in store.coords[i])
            np.testing.assert_array_equal(store.patches[i], slide.read_region((x, y), 0, (256, 256)))


def test_edge_tiles_read_white(tmp_path):
    from wsi.synthetic import SyntheticSpec, write_slide

    written = write_slide(tmp_path / "odd.svs", SyntheticSpec(1000, 700, seed=3), progress=False)
    store = tile_slide(written.path, tmp_path / "odd.zarr", size=256, mpp=0.25, min_tissue=0)
    assert store.codec == "jpeg" and store.edge.sum() == 4 + 3 - 1
    with wsi.open_slide(written.path) as slide:
        for i in np.flatnonzero(store.edge):
            x, y = (int(v) for v in store.coords[i])
            expected = slide.read_region((x, y), 0, (256, 256))
            np.testing.assert_array_equal(store.patches[i], expected)
            assert (
                store.patches[i][:, max(0, 1000 - x) :] == 255
            ).all()  # past the right border (maybe none)
            assert (store.patches[i][max(0, 700 - y) :] == 255).all()  # past the bottom border (maybe none)
            assert x + 256 > 1000 or y + 256 > 700


def test_skip_rewrite_and_overwrite(synthetic_slide, tmp_path):
    path = tmp_path / "s.zarr"
    first = tile_slide_result(synthetic_slide.path, path, size=128, mpp=0.25)
    assert first.status == "done"
    assert tile_slide_result(synthetic_slide.path, path, size=128, mpp=0.25).status == "skipped"
    with pytest.raises(
        tiling.StoreError, match="other options"
    ):  # never replaced without overwrite (issue 15)
        tile_slide_result(synthetic_slide.path, path, size=64, mpp=0.25)
    changed = tile_slide_result(synthetic_slide.path, path, size=64, mpp=0.25, overwrite=True)
    assert changed.status == "done" and changed.store.tile_size == 64 and changed.tiles > first.tiles
    assert tile_slide_result(synthetic_slide.path, path, size=64, mpp=0.25, overwrite=True).status == "done"


def test_no_tissue_gives_an_empty_complete_store(blank_slide, tmp_path):
    with pytest.warns(UserWarning, match="no tiles"):
        store = tile_slide(blank_slide, tmp_path / "blank.zarr", size=128, mpp=0.5)
    assert store.is_complete and len(store) == 0 and store.coords.shape == (0, 2)
    assert len(PatchDataset(store)) == 0


def test_coords_only_reads_from_the_slide(synthetic_slide, tmp_path):
    full = tile_slide(synthetic_slide.path, tmp_path / "full.zarr", size=128, mpp=0.5)
    light = tile_slide(synthetic_slide.path, tmp_path / "light.zarr", size=128, mpp=0.5, coords_only=True)
    assert light.patches is None and light.is_complete
    np.testing.assert_array_equal(light.coords, full.coords)
    dataset = PatchDataset(light)
    for i in (0, len(light) // 2, len(light) - 1):
        image, index = dataset[i]
        assert index == i and image.shape == (3, 128, 128)
        np.testing.assert_array_equal((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8),
                                      full.patches[i])  # fmt: skip


def test_patch_batches_are_contiguous_rows_of_the_store(synthetic_slide, tmp_path):
    full = tile_slide(synthetic_slide.path, tmp_path / "full.zarr", size=64, mpp=1.0)
    light = tile_slide(synthetic_slide.path, tmp_path / "light.zarr", size=64, mpp=1.0, coords_only=True)
    for store in (full, light):
        batches = tiling.PatchBatches(store, batch_size=7)
        assert len(batches) == -(-len(full) // 7)
        got = [batches[i] for i in range(len(batches))]
        assert [start for _, start in got] == list(range(0, len(full), 7))
        np.testing.assert_array_equal(np.concatenate([rows for rows, _ in got]), full.patches[:])
    with pytest.raises(IndexError):
        batches[len(batches)]


def test_roi_replace_tiles_only_the_roi(synthetic_slide, tmp_path):
    store = tile_slide(synthetic_slide.path, tmp_path / "roi.zarr", size=128, mpp=0.25,
                       roi=box(1024, 1024, 1536, 1280), roi_mode="replace")  # fmt: skip
    assert len(store) == 8
    assert store.coords[:, 0].min() == 1024 and store.coords[:, 1].max() == 1152


def test_processes_scheduler_gives_the_same_store(synthetic_slide, tmp_path):
    a = tile_slide(synthetic_slide.path, tmp_path / "t.zarr", size=128, mpp=0.5, scheduler="threads")
    b = tile_slide(
        synthetic_slide.path, tmp_path / "p.zarr", size=128, mpp=0.5, scheduler="processes", shard_workers=2
    )
    np.testing.assert_array_equal(a.patches[:], b.patches[:])


_SLOW_TILING = textwrap.dedent(
    """
    import sys, time
    import tiling.engine as engine
    real = engine._write_shard
    def slow(*args):  # slow enough that the test can kill the process between shards
        time.sleep(0.15)
        return real(*args)
    engine._write_shard = slow
    engine.tile_slide(sys.argv[1], sys.argv[2], size=64, mpp=0.5, shard_tiles=8, codec="zstd",
                      scheduler="synchronous")
    """
)


def test_killed_run_resumes_to_the_same_store(synthetic_slide, tmp_path):
    reference = tile_slide(
        synthetic_slide.path, tmp_path / "ref.zarr", size=64, mpp=0.5, shard_tiles=8, codec="zstd"
    )
    assert reference.n_shards >= 6
    target = tmp_path / "killed.zarr"
    proc = subprocess.Popen([sys.executable, "-c", _SLOW_TILING, str(synthetic_slide.path), str(target)])
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and proc.poll() is None:
        try:
            done = int(PatchStore.open(target).shards_done().sum())
        except Exception:
            done = 0
        if done >= 3:
            break
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = PatchStore.open(target)
    assert not partial.is_complete, "the run finished before it could be killed"
    assert 0 < partial.shards_done().sum() < partial.n_shards
    resumed = tile_slide_result(synthetic_slide.path, target, size=64, mpp=0.5, shard_tiles=8, codec="zstd")
    assert resumed.status == "resumed" and resumed.store.is_complete
    np.testing.assert_array_equal(resumed.store.coords, reference.coords)
    np.testing.assert_array_equal(resumed.store.patches[:], reference.patches[:])
    assert not list(target.glob("patches/c/**/.*.tmp"))


def test_dataset_with_dataloader_workers(synthetic_slide, tmp_path):
    import torch

    store = tile_slide(synthetic_slide.path, tmp_path / "d.zarr", size=64, mpp=0.5)
    dataset = PatchDataset(store, transform=lambda a: torch.from_numpy(a.copy()))
    loader = torch.utils.data.DataLoader(dataset, batch_size=16, num_workers=2)
    seen = []
    for images, index in loader:
        np.testing.assert_array_equal(
            images.numpy(), store.patches[index.min().item() : index.max().item() + 1]
        )
        seen.extend(index.tolist())
    assert sorted(seen) == list(range(len(store)))


def test_partial_store_is_not_trusted(synthetic_slide, tmp_path):
    tile_slide(synthetic_slide.path, tmp_path / "x.zarr", size=64, mpp=0.5)
    PatchStore.open(tmp_path / "x.zarr", mode="r+")._group.attrs["complete"] = False  # as if interrupted
    with pytest.raises(ValueError, match="partial"):
        PatchDataset(PatchStore.open(tmp_path / "x.zarr"))


def test_heatmap_aligns_with_the_thumbnail(synthetic_slide, tmp_path):
    store = tile_slide(synthetic_slide.path, tmp_path / "h.zarr", size=128, mpp=0.25, min_tissue=0)
    values = store.coords[:, 0].astype(float)  # increases left to right
    with wsi.open_slide(synthetic_slide.path) as slide:
        thumb = slide.thumbnail(320)
    heat = tiling.tile_heatmap(values, store.coords, 128, (2560, 2048), thumb.shape[:2])
    assert heat.shape == (256, 320) and np.isfinite(heat).all()
    assert heat[10, 5] == 0 and heat[10, 315] == values.max()
    blended = tiling.overlay(thumb, heat)
    assert blended.shape == thumb.shape and blended.dtype == np.uint8
    with pytest.raises(ValueError, match="differ in length"):
        tiling.tile_heatmap(values[:3], store.coords, 128, (2560, 2048), (10, 10))


def test_overlay_colours_the_tiles_and_leaves_the_rest(synthetic_slide, tmp_path):
    """Where a tile has a value the overlay shows its colour (scaled min..max), elsewhere the thumbnail."""
    from matplotlib import colormaps

    store = tile_slide(synthetic_slide.path, tmp_path / "o.zarr", size=128, mpp=0.25, min_tissue=0.5)
    values = store.coords[:, 0].astype(float)
    with wsi.open_slide(synthetic_slide.path) as slide:
        thumb = slide.thumbnail(320)  # 1/8 of level 0: a 128 px tile is 16 x 16 thumbnail px
    heat = tiling.tile_heatmap(values, store.coords, 128, (2560, 2048), thumb.shape[:2])
    covered = np.isfinite(heat)
    assert 0 < covered.mean() < 0.9  # tissue tiles only: both kinds of pixels are there
    opaque = tiling.overlay(thumb, heat, cmap="viridis", alpha=1.0)
    np.testing.assert_array_equal(opaque[~covered], thumb[~covered])
    lo, hi = values.min(), values.max()
    expected = (colormaps["viridis"]((heat[covered] - lo) / (hi - lo))[:, :3] * 255).astype(np.uint8)
    np.testing.assert_allclose(opaque[covered], expected, atol=1)
    for value, (x, y) in [(lo, store.coords[values.argmin()]), (hi, store.coords[values.argmax()])]:
        colour = np.array(colormaps["viridis"](float(value == hi))[:3]) * 255
        np.testing.assert_allclose(opaque[y // 8 + 8, x // 8 + 8], colour, atol=1)
    half = tiling.overlay(thumb, heat, cmap="viridis", alpha=0.5)
    np.testing.assert_allclose(half[covered], 0.5 * thumb[covered] + 0.5 * expected, atol=1.5)
    np.testing.assert_array_equal(half[~covered], thumb[~covered])


def test_real_aperio_tiles_are_copied_exactly(cmu_path, tmp_path):
    """CMU's 240 px JPEG tiles are RGB without colour markers: the store records it and decodes them exactly."""
    from tests.conftest import openslide_rgb

    store = tile_slide(cmu_path, tmp_path / "copy.zarr", size=240, mpp=0.499, min_tissue=0)
    assert store.codec == "jpeg" and store.edge.sum() > 0
    (codec,) = store.patches.metadata.codecs[0].codecs
    assert codec.colorspace == "RGB"
    for i in range(0, len(store), 3):
        x, y = (int(v) for v in store.coords[i])
        np.testing.assert_array_equal(store.patches[i], openslide_rgb(cmu_path, (x, y), 0, (240, 240)))


def test_on_patches_gets_each_shard_of_pixels_as_stored_and_nothing_for_a_jpeg_store(cmu_path, tmp_path):
    from tiling import tile_slide_result

    given: dict[int, np.ndarray] = {}
    result = tile_slide_result(cmu_path, tmp_path / "lz4.zarr", codec="lz4", shard_tiles=16,
                               on_patches=lambda row, patches: given.update({row: patches}))  # fmt: skip
    n = len(result.store)
    assert sorted(given) == list(range(0, n, 16))
    np.testing.assert_array_equal(np.concatenate([given[r] for r in sorted(given)]), result.store.patches[:])
    given.clear()
    jpeg = tile_slide_result(cmu_path, tmp_path / "jpeg.zarr", codec="jpeg",
                             on_patches=lambda row, patches: given.update({row: patches}))  # fmt: skip
    assert jpeg.store.codec == "jpeg" and len(jpeg.store) == n and not given  # streams, not pixels

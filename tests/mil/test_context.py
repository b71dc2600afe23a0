"""Spatial context: each tile's features next to its neighbourhood's, so a model can tell a tile by its
surroundings (a planted bag whose label is two tile kinds side by side: found with context, missed without)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import mil
from mil import SpatialContext

STEP = 128.0


def test_mean_and_max_over_the_window_of_present_tiles():
    rng = np.random.default_rng(0)
    cells = rng.choice(400, 120, replace=False)
    coords = np.stack([cells % 20, cells // 20], axis=1) * STEP + 512  # level-0 corners, an offset grid
    features = rng.normal(size=(120, 5)).astype(np.float32)
    out = SpatialContext(2, ("mean", "max"))(features, coords, STEP)
    assert out.shape == (120, 15) == (120, SpatialContext(2, ("mean", "max")).out_dim(5))
    assert np.array_equal(out[:, :5], features)  # the tile's own features first, rows in the given order
    for i in range(120):
        window = np.abs(coords - coords[i]).max(axis=1) <= 2 * STEP  # the tile itself included
        assert np.allclose(out[i, 5:10], features[window].mean(axis=0), atol=1e-5)
        assert np.allclose(out[i, 10:], features[window].max(axis=0))
    # Radius 1: a lone tile's neighbourhood is itself.
    lone = SpatialContext(1)(features[:2], np.array([[0, 0], [10 * STEP, 0]]), STEP)
    assert np.allclose(lone[:, 5:], features[:2])


def test_bad_settings_and_inputs_are_refused_by_name():
    with pytest.raises(ValueError, match="radius"):
        SpatialContext(0)
    with pytest.raises(ValueError, match="stats"):
        SpatialContext(1, ("median",))
    context = SpatialContext(1)
    with pytest.raises(ValueError, match=r"coords must have shape \(N, 2\) = \(3, 2\)"):
        context(np.zeros((3, 4)), np.zeros((2, 2)), STEP)
    with pytest.raises(ValueError, match="two tiles fall on one grid cell"):
        context(np.zeros((2, 4)), np.array([[0, 0], [10, 0]]), STEP)
    with pytest.raises(ValueError, match="grid step"):
        context(np.zeros((2, 4)), np.zeros((2, 2)), 0.0)
    assert SpatialContext.from_dict(context.to_dict()) == context and SpatialContext.from_dict(None) is None


GRID, DIM = 8, 4


def _planted(n_bags: int, seed: int):
    """Bags of an 8 x 8 tile grid: noise tiles, two tiles of kind A and two of kind B in every bag. In a positive
    bag an A tile touches a B tile (8-neighbourhood); in a negative bag every A is at least 3 tiles from every B.
    The bags of both classes hold the same tiles, so only where they lie tells them apart."""
    rng = np.random.default_rng(seed)
    cells = np.stack(np.meshgrid(np.arange(GRID), np.arange(GRID)), axis=-1).reshape(-1, 2)
    bags, coords, y = [], [], []
    for i in range(n_bags):
        positive = i % 2 == 1
        while True:
            pick = rng.choice(len(cells), 4, replace=False)
            a, b = cells[pick[:2]], cells[pick[2:]]
            if positive:  # move the first B next to the first A
                near = a[0] + rng.choice([-1, 0, 1], size=2)
                if (near == a[0]).all() or (near < 0).any() or (near >= GRID).any():
                    continue
                if any((near == c).all() for c in (a[1], b[1])):
                    continue
                b = np.stack([near, b[1]])
            distance = np.abs(a[:, None] - b[None]).max(axis=-1)
            if (distance.min() <= 1) == positive and (positive or distance.min() >= 3):
                break
        x = rng.normal(scale=0.3, size=(len(cells), DIM)).astype(np.float32)
        where = {tuple(c): k for k, c in enumerate(cells)}
        for c in a:
            x[where[tuple(c)], 0] += 3.0
        for c in b:
            x[where[tuple(c)], 1] += 3.0
        bags.append(x)
        coords.append(cells * STEP)
        y.append(int(positive))
    return bags, coords, np.array(y)


def _held_out_auc(context: SpatialContext | None) -> float:
    def widen(data):
        bags, coords, y = data
        return [b if context is None else context(b, c, STEP) for b, c in zip(bags, coords, strict=True)], y

    train, val, test = widen(_planted(96, 0)), widen(_planted(32, 1)), widen(_planted(64, 2))
    torch.manual_seed(0)
    model = mil.create_model("abmil", train[0][0].shape[1], 1, embed_dim=16, attn_dim=16)
    config = mil.FitConfig(epochs=30, batch_size=8, lr=3e-3, patience=0, progress=False)
    mil.fit(model, mil.create_task("binary"), train, val, config)
    return roc_auc_score(test[1], mil.predict_logits(model, test, "cpu")[:, 0])


def test_context_finds_two_tile_kinds_side_by_side_that_plain_abmil_cannot():
    with_context, plain = _held_out_auc(SpatialContext(1, ("mean", "max"))), _held_out_auc(None)
    assert with_context >= 0.9 and plain <= 0.7, (with_context, plain)  # measured: 1.00 and 0.45


def test_far_apart_tiles_take_memory_by_tile_not_by_grid_extent():
    # Two tiles 10^4 grid steps apart in x and in y: a dense grid over their bounding box would hold 10^8 cells
    # (400 MB as int32, 25 GB of float64 features at D = 64); per tile, the work is a few KB.
    import tracemalloc

    features = np.arange(2 * 64, dtype=np.float32).reshape(2, 64)
    coords = np.array([[0.0, 0.0], [1e4 * STEP, 1e4 * STEP]])
    tracemalloc.start()
    try:
        out = SpatialContext(2, ("mean", "max"))(features, coords, STEP)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 * 2**20, peak
    assert np.array_equal(out, np.concatenate([features] * 3, axis=1))  # each tile alone in its window


def test_read_bag_context_is_on_the_stores_grid_of_strides_not_tile_sizes(synthetic_slide, tmp_path):
    # Overlapping tiles (stride 37 < size 48 px) resampled from 0.25 to 0.6 um/px: a stride of 88.8 level-0 px,
    # coordinates rounded to whole pixels. read_bag's context must be a window over the tiles' grid indices.
    from tiling import PatchStore, TileSpec, tile_slide

    path = tile_slide(synthetic_slide.path, tmp_path / "patches.zarr", size=48, stride=37, mpp=0.6).path
    mil.extract_features(PatchStore.open(path, mode="r+"), "stain_stats")
    store = PatchStore.open(path)
    spec = TileSpec.from_dict(store.attrs["tiling"])
    assert spec.stride != spec.size and spec.stride_level0 != round(spec.stride_level0)
    coords = np.asarray(store.coords[:], dtype=np.float64)
    features = np.asarray(store.features("stain_stats")[:], dtype=np.float32)
    assert 50 < len(features) < np.ptp(coords[:, 0]) * np.ptp(coords[:, 1]) / spec.stride_level0**2  # holes
    out = mil.read_bag(store, "stain_stats", SpatialContext(1, ("mean", "max")))
    assert out.shape == (len(features), 3 * features.shape[1])
    for i in range(len(features)):
        # Neighbours: at most one stride away in x and y (rounding moves a corner by under a pixel).
        window = np.abs(coords - coords[i]).max(axis=1) <= spec.stride_level0 + 1
        assert np.allclose(out[i, features.shape[1] : 2 * features.shape[1]], features[window].mean(axis=0),
                           atol=1e-4)  # fmt: skip
        assert np.array_equal(out[i, 2 * features.shape[1] :], features[window].max(axis=0))


def test_a_grid_whose_origin_is_half_a_step_off():
    """Cells are counted from the grid's own origin: tiles at 0.5, 1.5, 2.5 steps are three cells, as at 0, 1, 2
    (rounding 1.5 and 2.5 steps first put two tiles on one cell)."""
    features = np.eye(3, dtype=np.float32)
    shifted = mil.SpatialContext(1)(features, np.array([[128, 0], [384, 0], [640, 0]]), 256.0)
    plain = mil.SpatialContext(1)(features, np.array([[0, 0], [256, 0], [512, 0]]), 256.0)
    np.testing.assert_array_equal(shifted, plain)

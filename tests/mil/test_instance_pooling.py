"""Top-k and max pooling find a bag's single positive tile, which mean pooling dilutes among the others."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

import mil

DIM, TILES = 8, 40


def _planted(n_bags: int, seed: int):
    """Bags of 40 noise tiles; a positive bag has one tile shifted by 5 sd along dimension 0 (its index kept)."""
    rng = np.random.default_rng(seed)
    bags, y, where = [], [], []
    for i in range(n_bags):
        x = rng.normal(size=(TILES, DIM)).astype(np.float32)
        spot = int(rng.integers(TILES))
        if i % 2:
            x[spot, 0] += 5.0
        bags.append(x)
        y.append(i % 2)
        where.append(spot)
    return bags, np.array(y), np.array(where)


def _held_out_auc(name: str, **kwargs):
    train, val, test = _planted(80, 0), _planted(30, 1), _planted(60, 2)
    torch.manual_seed(0)
    model = mil.create_model(name, DIM, 1, embed_dim=16, **kwargs)
    config = mil.FitConfig(epochs=25, batch_size=8, lr=3e-3, patience=0, progress=False)
    mil.fit(model, mil.create_task("binary"), train[:2], val[:2], config)
    logits, scores = mil.predict_logits(model, test[:2], "cpu", attention=True)
    return roc_auc_score(test[1], logits[:, 0]), test, scores


def test_top_tiles_find_the_planted_tile_that_the_mean_misses():
    auc, test, scores = _held_out_auc("topk", top_k=2)
    mean_auc = _held_out_auc("mean")[0]
    assert auc >= 0.85 and mean_auc <= 0.75, (auc, mean_auc)  # measured: 0.91 and 0.61
    positives = np.flatnonzero(test[1] == 1)
    found = [int(np.argmax(scores[i][:, 0]) == test[2][i]) for i in positives]
    assert np.mean(found) >= 0.8  # the highest-scoring tile is the planted one (measured: 28 of 30)


def test_topk_averages_the_k_best_tiles_of_each_bag():
    model = mil.create_model("topk", 2, 1, top_k=3, embed_dim=4).eval()
    x, mask = torch.randn(2, 5, 2), torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = model(x, mask)
    tiles = out.instance_scores[..., 0]
    assert torch.isclose(out.logits[0, 0], tiles[0].topk(3).values.mean())
    assert torch.isclose(out.logits[1, 0], tiles[1, :2].mean())  # a bag of two tiles averages both
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        mil.create_model("topk", 2, 1, top_k=0)

"""`mil.tumour_pool`: slide vectors from the tiles a tumour model scores highest, and their logistic read-out."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold

from mil.tumour_pool import TumourPoolConfig, TumourPooledLogistic, pool_tumour_tiles, top_tiles


def _slides(n=80, tiles=60, tumour=4, seed=0):
    """Bags where only a few tumour tiles (feature 0 high, what a cancer model scores) carry the trait (feature
    1: +1 with it, -1 without); the other tiles' feature 1 is loud noise (aggregates away from the tumour), and
    feature 2 is noise everywhere."""
    rng = np.random.default_rng(seed)
    bags, labels = [], []
    for i in range(n):
        label = i % 2
        x = rng.normal(0.0, 1.0, (tiles, 3))
        x[:, 1] *= 3.0
        where = rng.choice(tiles, tumour, replace=False)
        x[where, 0] += 4.0
        x[where, 1] = (1.0 if label else -1.0) + rng.normal(0.0, 0.5, tumour)
        bags.append(x)
        labels.append(label)
    return bags, np.array(labels, dtype=float)


def _cv_auc(vectors, labels):
    oof = np.zeros(len(labels))
    for train, test in StratifiedKFold(4, shuffle=True, random_state=0).split(vectors, labels):
        oof[test] = (
            TumourPooledLogistic(0.05).fit(vectors[train], labels[train]).predict_proba(vectors[test])[:, 0]
        )
    return roc_auc_score(labels, oof)


def test_the_tumour_tiles_carry_a_trait_the_whole_slide_mean_drowns():
    bags, labels = _slides()
    scores = [b[:, 0] for b in bags]  # a tumour model's per-tile scores
    pooled = np.array([pool_tumour_tiles(b, s, 0.05) for b, s in zip(bags, scores, strict=True)])
    whole = np.array([pool_tumour_tiles(b, s, 1.0) for b, s in zip(bags, scores, strict=True)])
    assert np.allclose(whole, np.array([b.mean(axis=0) for b in bags]))
    assert _cv_auc(pooled, labels) > 0.95
    assert _cv_auc(whole, labels) < 0.75


def test_pool_takes_the_top_fraction_at_least_one_tile():
    features = np.arange(20, dtype=float).reshape(10, 2)
    scores = np.array([0, 9, 1, 8, 2, 7, 3, 6, 4, 5], dtype=float)
    assert np.allclose(pool_tumour_tiles(features, scores, 0.2), features[[1, 3]].mean(axis=0))
    assert np.allclose(pool_tumour_tiles(features, scores, 0.01), features[1])  # one tile, never none
    assert np.allclose(pool_tumour_tiles(features, scores, 0.25), features[[1, 3, 5]].mean(axis=0))  # ceil
    with pytest.raises(ValueError, match=r"scores must have shape \(N,\) = \(10,\)"):
        pool_tumour_tiles(features, scores[:5], 0.1)
    with pytest.raises(ValueError, match=r"features must have shape \(N, D\)"):
        pool_tumour_tiles(features[:0], scores[:0], 0.1)
    with pytest.raises(ValueError, match="fraction"):
        pool_tumour_tiles(features, scores, 0.0)
    with pytest.raises(ValueError, match="finite"):
        pool_tumour_tiles(features, np.full(10, np.nan), 0.1)
    with pytest.raises(ValueError, match="pooled tumour fraction"):
        TumourPoolConfig(fraction=1.5)

    with pytest.raises(ValueError, match=r"scores must have shape \(N,\)"):
        top_tiles(scores[:, None], 0.1)


def test_top_tiles_are_the_pooled_ones_with_ties_and_any_fraction():
    """`top_tiles` picks what the pooling averages: ceil(fraction * N) tiles, ties by tile order."""
    scores = np.array([1.0, 3.0, 3.0, 2.0, 3.0])
    assert top_tiles(scores, 0.4).tolist() == [1, 2]  # a tie at the cut: the earlier tiles
    assert top_tiles(scores, 0.01).tolist() == [1] and sorted(top_tiles(scores, 1.0)) == list(range(5))
    features = np.arange(10, dtype=float).reshape(5, 2)
    rng = np.random.default_rng(0)
    for n in (1, 7, 10, 33):
        x, s = rng.normal(size=(n, 3)), rng.normal(size=n)
        for fraction in (0.1, 0.2, 0.25, 0.5):
            assert np.allclose(pool_tumour_tiles(x, s, fraction), x[top_tiles(s, fraction)].mean(axis=0))
    assert np.allclose(pool_tumour_tiles(features, scores, 0.4), features[[1, 2]].mean(axis=0))


def test_read_out_skips_unknown_targets_and_round_trips_through_json():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 5))
    y = np.column_stack([(X[:, 0] > 0).astype(float), (X[:, 1] > 0).astype(float)])
    y[::3, 1] = np.nan  # the second target unknown on some slides: skipped for it only
    model = TumourPooledLogistic(1.0).fit(X, y)
    proba = model.predict_proba(X)
    assert proba.shape == (40, 2) and ((proba > 0) & (proba < 1)).all()
    assert roc_auc_score(y[:, 0], proba[:, 0]) > 0.95
    again = TumourPooledLogistic.from_dict(json.loads(json.dumps(model.to_dict())))
    assert np.allclose(again.predict_proba(X), proba)
    with pytest.raises(ValueError, match=r"X must have shape \(n, 5\)"):
        model.predict_proba(X[:, :3])
    with pytest.raises(ValueError, match="both 0 and 1"):
        TumourPooledLogistic().fit(X, np.zeros(40))
    with pytest.raises(ValueError, match="not fitted"):
        TumourPooledLogistic().predict_proba(X)

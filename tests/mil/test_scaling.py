"""Feature standardisation: fitted on each fold's training bags only, kept in the checkpoint, applied by the model."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mil
from tests.mil.synthetic_bags import DIM, synthetic_bags

FAST = mil.FitConfig(epochs=2, batch_size=8, lr=3e-3, progress=False)


def _scaled(bags, scale):
    return [(b - np.asarray(scale.mean)) / np.asarray(scale.sd) for b in bags]


def test_scale_of_the_tiles_and_constant_dimensions():
    bags = [np.array([[1.0, 5.0], [3.0, 5.0]]), np.array([[5.0, 5.0]])]
    scale = mil.FeatureScale.fit(bags)
    assert scale.mean == pytest.approx((3.0, 5.0)) and scale.sd == pytest.approx((2.0, 1.0))  # constant: sd 1
    assert mil.FeatureScale.from_dict(json.loads(json.dumps(scale.to_dict()))) == scale
    with pytest.raises(ValueError, match="one length"):
        mil.FeatureScale((0.0, 1.0), (1.0,))
    with pytest.raises(ValueError, match="no tile"):
        mil.FeatureScale.fit([np.zeros((0, 2))])


def test_scale_is_accumulated_bag_by_bag_as_numpy_computes_it_over_all_tiles():
    rng = np.random.default_rng(0)
    # Bags of different sizes and offsets (one of one tile, one empty, one a torch tensor), a large mean
    # against a small sd: the merge must not lose the sd to cancellation.
    bags = [rng.normal(1000.0 + k, 0.01 + k, size=(n, 5)) for k, n in enumerate([1, 40, 7, 300])]
    bags += [np.zeros((0, 5)), torch.from_numpy(rng.normal(-3.0, 2.0, size=(25, 5)).astype(np.float32))]
    tiles = np.concatenate([np.asarray(b, dtype=np.float64) for b in bags])
    scale = mil.FeatureScale.fit(bags)
    np.testing.assert_allclose(scale.mean, tiles.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(scale.sd, tiles.std(axis=0, ddof=1), rtol=1e-9)
    small = [rng.normal(50.0, 1e-3, size=(n, 3)) for n in (3, 9, 1)]
    np.testing.assert_allclose(
        mil.FeatureScale.fit(small).sd, np.concatenate(small).std(axis=0, ddof=1), rtol=1e-6
    )


def test_fit_scales_with_the_training_bags_never_the_validation_bags():
    train, y = synthetic_bags("binary", 16, 0)
    val, y_val = synthetic_bags("binary", 8, 1)
    train, val = [b + 3.0 for b in train], [b + 3.0 for b in val]
    task = mil.create_task("binary")
    outlier = [val[0] + 1000.0, *val[1:]]
    model = mil.create_model("mean", DIM, 1, embed_dim=8)
    mil.fit(model, task, (train, y), (outlier, y_val), FAST)
    assert np.abs(np.asarray(model.feature_scale.mean) - 3.0).max() < 1.0
    model = mil.create_model("mean", DIM, 1, embed_dim=8)
    mil.fit(model, task, ([train[0] + 1000.0, *train[1:]], y), (val, y_val), FAST)
    assert np.asarray(model.feature_scale.mean).min() > 20.0


def test_each_fold_scales_with_its_training_bags_only():
    bags, y = synthetic_bags("binary", 24, 0)
    bags = [b + 3.0 for b in bags]
    bags[0] = bags[0] + 1000.0  # an outlier slide: it moves the mean of any scale it enters
    ids = [f"s{i}" for i in range(24)]
    result = mil.cross_validate("mean", "binary", (bags, y, ids), n_splits=3, config=FAST,
                                model_kwargs={"embed_dim": 8})  # fmt: skip
    held_out_in = int(result.oof.set_index("slide_id").loc["s0", "fold"])
    for k, model in enumerate(result.models):
        mean = np.asarray(model.feature_scale.mean)
        assert len(model.feature_scale) == DIM
        if k == held_out_in:  # the fold that tests the outlier never saw it
            assert np.abs(mean - 3.0).max() < 1.0
        else:  # the outlier is in the fold's training or validation part: only training bags count
            assert np.abs(mean - 3.0).max() < 1.0 or mean.min() > 20.0
    assert sum(np.asarray(m.feature_scale.mean).min() > 20.0 for m in result.models) >= 1  # it did enter one
    # and every fold's scale differs: each is fitted on its own bags
    assert len({m.feature_scale for m in result.models}) == 3


def test_scale_is_saved_refused_when_inconsistent_and_applied_at_predict(tmp_path):
    bags, y = synthetic_bags("binary", 20, 1)
    bags = [b * 50.0 + 7.0 for b in bags]
    task = mil.create_task("binary")
    torch.manual_seed(0)
    model = mil.create_model("abmil", DIM, 1, embed_dim=8)
    mil.fit(model, task, (bags, y), config=FAST)
    scale = model.feature_scale
    assert scale.mean == pytest.approx(mil.FeatureScale.fit(bags).mean, rel=1e-6) and np.mean(scale.sd) > 10
    logits = mil.predict_logits(model, (bags, y), "cpu")
    # The model standardises raw features itself: the same as an unscaled model given scaled features.
    bare = mil.create_model("abmil", DIM, 1, embed_dim=8)
    bare.load_state_dict(model.state_dict())
    np.testing.assert_allclose(mil.predict_logits(bare, (_scaled(bags, scale), y), "cpu"), logits, rtol=1e-4,
                               atol=1e-5)  # fmt: skip
    assert not np.allclose(mil.predict_logits(bare, (bags, y), "cpu"), logits, atol=1e-3)

    path = mil.save_model(tmp_path / "ckpt", model, task)
    loaded = mil.load_model(path)
    assert loaded.model.feature_scale == scale
    np.testing.assert_allclose(mil.predict_logits(loaded.model, (bags, y), "cpu"), logits, rtol=1e-5)

    config = json.loads((path / "config.json").read_text())
    config["feature_scale"]["mean"] = config["feature_scale"]["mean"][:-1]
    config["feature_scale"]["sd"] = config["feature_scale"]["sd"][:-1]
    (path / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError, match=rf"ckpt: a feature scale of {DIM - 1} dimensions for a model of {DIM}-"
    ):
        mil.load_model(path)
    with pytest.raises(ValueError, match="feature scale of 3 dimensions"):
        model.set_feature_scale(mil.FeatureScale((0.0,) * 3, (1.0,) * 3))


def test_standardize_off_leaves_the_features_as_given():
    bags, y = synthetic_bags("binary", 12, 2)
    model = mil.create_model("mean", DIM, 1, embed_dim=8)
    model.set_feature_scale(mil.FeatureScale.fit(bags))
    mil.fit(
        model,
        mil.create_task("binary"),
        (bags, y),
        config=mil.FitConfig(**{**FAST.__dict__, "standardize": False}),
    )
    assert model.feature_scale is None

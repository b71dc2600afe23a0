"""The training loop: plan from data, early stopping, tile subsampling, bad input, cross-validation."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

import mil
from tests.mil.synthetic_bags import DIM, synthetic_bags

FAST = mil.FitConfig(epochs=3, batch_size=8, lr=3e-3, progress=False)


def _model(task, name="abmil"):
    torch.manual_seed(0)
    return mil.create_model(name, DIM, task.n_outputs, embed_dim=32, **task.model_kwargs())


def test_auto_plan_follows_the_data_and_is_written(tmp_path):
    bags, y = synthetic_bags("binary", 40, 0)
    task = mil.create_task("binary")
    planned = mil.plan((bags, y), task)
    assert planned["data"]["n_bags"] == 40 and planned["data"]["dim"] == DIM
    assert planned["config"]["epochs"] == 100 and planned["config"]["batch_size"] == 16
    assert planned["config"]["lr"] == 2e-3  # 2e-4 per bag, times 16 bags a step, capped
    assert planned["config"]["max_tiles"] is None
    big = [np.zeros((10_000, 1536), np.float32)] * 2
    big_plan = mil.plan((big, [0, 1]), mil.create_task("binary"))["config"]
    assert big_plan["max_tiles"] == 4096 and big_plan["batch_size"] == 1 and big_plan["lr"] == 1e-4
    survival_plan = mil.plan(synthetic_bags("survival", 40, 0), mil.create_task("survival"))["config"]
    assert survival_plan["batch_size"] == 32
    imbalanced = mil.plan((bags[:10], [0] * 8 + [1] * 2), mil.create_task("binary"))["config"]
    assert imbalanced["class_weight"] == "balanced"
    with pytest.raises(ValueError, match="unknown FitConfig field"):
        mil.plan((bags, y), task, epoch=3)
    # The learning rate grows with the batch size trained with (an override's), and a given one is kept.
    assert mil.plan((bags, y), task, batch_size=1)["config"]["lr"] == 2e-4
    assert mil.plan((bags, y), task, batch_size=4)["config"]["lr"] == pytest.approx(8e-4)
    assert mil.plan((bags, y), task, lr=5e-5)["config"]["lr"] == 5e-5

    history = mil.fit(_model(task), task, (bags[:12], y[:12]), None, "auto", plan_path=tmp_path / "plan.json")
    written = json.loads((tmp_path / "plan.json").read_text())
    assert written["config"]["epochs"] == len(history) == 100
    assert history.attrs["config"]["epochs"] == 100


def test_early_stopping_counts_epochs_without_improvement():
    train, val = synthetic_bags("binary", 16, 0), synthetic_bags("binary", 8, 1)
    task = mil.create_task("binary")
    # lr 0: nothing improves after the first epoch, so training stops `patience` epochs later.
    config = mil.FitConfig(epochs=30, patience=2, batch_size=8, lr=0.0, progress=False, schedule="plateau")
    history = mil.fit(_model(task), task, train, val, config)
    assert len(history) == 3 and history.attrs["best_epoch"] == 0


def test_history_and_best_weights():
    train, val = synthetic_bags("binary", 48, 0), synthetic_bags("binary", 16, 1)
    task = mil.create_task("binary")
    model = _model(task)
    history = mil.fit(model, task, train, val, mil.FitConfig(epochs=6, batch_size=8, lr=3e-3, progress=False))
    assert list(history.columns) == ["epoch", "train_loss", "lr", "val_loss", "val_auc", "val_balanced_accuracy",
                                     "val_accuracy", "seconds"]  # fmt: skip
    best = history.attrs["best_epoch"]
    logits = mil.predict_logits(model, val)
    assert task.metrics(task.encode(val[1]), task.predict(logits))["auc"] == pytest.approx(
        history["val_auc"][best]
    )
    assert task.threshold_ != 0.5  # chosen on validation


def test_deterministic_mode_repeats_a_run():
    train, val = synthetic_bags("binary", 24, 0), synthetic_bags("binary", 8, 1)
    runs = []
    for _ in range(2):
        task = mil.create_task("binary")
        config = mil.FitConfig(
            epochs=2, batch_size=4, max_tiles=6, deterministic=True, seed=5, progress=False
        )
        runs.append(mil.fit(_model(task), task, train, val, config)[["train_loss", "val_loss"]])
    assert runs[0].equals(runs[1])


def _training_inputs(monkeypatch, model) -> list:
    """The features of each training step, as the model receives them (recorded by wrapping its forward)."""
    seen = []
    forward = model.forward

    def spy(x, mask=None, instance_labels=None):
        if model.training:
            seen.append(x.detach().clone())
        return forward(x, mask, instance_labels)

    monkeypatch.setattr(model, "forward", spy)
    return seen


def test_max_tiles_draws_new_tiles_each_epoch(monkeypatch):
    bags = [np.arange(40, dtype=np.float32)[:, None].repeat(DIM, 1) for _ in range(2)]
    task = mil.create_task("binary")
    model = _model(task)
    seen = _training_inputs(monkeypatch, model)
    mil.fit(model, task, (bags, [0, 1]), None, mil.FitConfig(epochs=3, max_tiles=5, progress=False))
    assert all(x.shape[1] == 5 for x in seen)
    drawn = {tuple(x[0, :, 0].tolist()) for x in seen}
    assert len(seen) == 6 and len(drawn) == 6


def test_instance_dropout_drops_a_share_of_each_training_bag(monkeypatch):
    bags = [np.arange(n, dtype=np.float32)[:, None].repeat(DIM, 1) for n in (40, 3)]
    task = mil.create_task("binary")
    model = _model(task)
    seen = _training_inputs(monkeypatch, model)
    mil.fit(model, task, (bags, [0, 1]), None, mil.FitConfig(epochs=2, instance_dropout=0.75, progress=False))
    assert sorted(x.shape[1] for x in seen) == [1, 1, 10, 10]  # a quarter of 40 tiles; of 3 tiles, one stays
    with pytest.raises(ValueError, match="instance_dropout"):
        mil.FitConfig(instance_dropout=1.0)


@pytest.mark.parametrize("name", ["clam_sb", "dsmil", "transmil"])
def test_one_loop_serves_models_with_extra_losses(name):
    task = mil.create_task("binary")
    torch.manual_seed(0)
    model = mil.create_model(name, DIM, 1, embed_dim=32)
    history = mil.fit(model, task, synthetic_bags("binary", 16, 0), synthetic_bags("binary", 8, 1), FAST)
    assert np.isfinite(history["train_loss"]).all()


def test_empty_bags_are_skipped_with_their_names():
    bags, y = synthetic_bags("binary", 6, 0)
    bags[2] = np.zeros((0, DIM), np.float32)
    with pytest.warns(UserWarning, match=r"without tiles: \['s2'\]"):
        data = mil.as_bags((bags, y, [f"s{i}" for i in range(6)]))
    assert len(data) == 5 and "s2" not in data.ids


def test_dimension_mismatch_names_both():
    bags, y = synthetic_bags("binary", 4, 0)
    bags[3] = np.zeros((5, DIM + 2), np.float32)
    with pytest.raises(ValueError, match=rf"s0 has {DIM}, s3 has {DIM + 2}"):
        mil.as_bags((bags, y, ["s0", "s1", "s2", "s3"]))
    task = mil.create_task("binary")
    wide = mil.create_model("abmil", DIM + 1, 1)
    with pytest.raises(ValueError, match=rf"{DIM + 1}-dimensional features but the bags have {DIM}"):
        mil.fit(wide, task, synthetic_bags("binary", 4, 0), None, FAST)


def test_fit_refuses_a_model_of_the_wrong_size():
    task = mil.create_task("multiclass")
    with pytest.raises(ValueError, match="gives 2 outputs but the multiclass task needs 3"):
        mil.fit(mil.create_model("mean", DIM, 2), task, synthetic_bags("multiclass", 30, 0), None, FAST)


def test_cross_validation_grouped_stratified_with_ensemble(tmp_path):
    bags, y = synthetic_bags("binary", 36, 0)
    groups = np.repeat([f"p{i}" for i in range(18)], 2)  # two slides per patient
    data = mil.as_bags((bags, y, [f"s{i}" for i in range(36)]), groups=groups)
    config = mil.FitConfig(epochs=4, batch_size=8, lr=3e-3, progress=False)
    result = mil.cross_validate("abmil", "binary", data, n_splits=3, config=config,
                                model_kwargs={"embed_dim": 32}, out_dir=tmp_path)  # fmt: skip
    assert len(result.folds) == 3 and {"auc", "balanced_accuracy"} <= set(result.summary.index)
    assert result.summary.loc["auc", "sd"] >= 0
    # The monitored metric also over the pooled out-of-fold predictions: one AUC over all slides.
    from sklearn.metrics import roc_auc_score

    truth = pd.Series(y, index=data.ids).loc[result.oof["slide_id"]]
    pooled = roc_auc_score(truth, result.oof["probability"])
    assert result.summary.loc["auc", "pooled"] == pytest.approx(pooled)
    assert result.summary["pooled"].drop("auc").isna().all()  # threshold metrics are per fold only
    assert (
        result.oof["slide_id"].tolist() == data.ids
    )  # every slide predicted once, by the fold that held it out
    for _, rows in result.oof.groupby("group"):
        assert rows["fold"].nunique() == 1  # a patient never straddles folds
    ensemble = result.predict(data)
    assert list(ensemble.columns) == ["probability_mean", "probability_sd"]
    assert (ensemble["probability_sd"] > 0).all()
    assert {"plan.json", "folds.csv", "oof.csv"} <= {p.name for p in tmp_path.iterdir()}


def test_a_fold_without_positives_is_named():
    bags, _ = synthetic_bags("binary", 12, 0)
    y = np.array([1, 1] + [0] * 10)
    with pytest.raises(ValueError, match=r"fold \d of 5 has no positive slide.*fewer folds"):
        mil.cross_validate("mean", "binary", (bags, y), n_splits=5, config=FAST)


def test_survival_cross_validation_reports_hazard_ratio():
    data = synthetic_bags("survival", 48, 0)
    config = mil.FitConfig(epochs=3, batch_size=16, lr=3e-3, progress=False)
    result = mil.cross_validate(
        "mean", "survival", data, n_splits=3, config=config, model_kwargs={"embed_dim": 16}
    )
    assert {"c_index", "hazard_ratio", "logrank_p"} <= set(result.folds.columns)
    assert list(result.oof.columns[-1:]) == ["risk"]


def test_prediction_keeps_rows_aligned_and_names_empty_bags():
    bags, y = synthetic_bags("binary", 5, 0)
    task = mil.create_task("binary")
    model = _model(task)
    full = mil.predict_logits(model, (bags, y))
    bags[1] = np.zeros((0, DIM), np.float32)
    with pytest.warns(UserWarning, match=r"no prediction \(NaN\) for 1 bag\(s\) without tiles: \['b1'\]"):
        logits, scores = mil.predict_logits(model, (bags, y, [f"b{i}" for i in range(5)]), attention=True)
    assert logits.shape == (5, 1) and np.isnan(logits[1]).all()
    np.testing.assert_allclose(logits[[0, 2, 3, 4]], full[[0, 2, 3, 4]], rtol=1e-5, atol=1e-6)
    assert [len(s) for s in scores] == [len(b) for b in bags]


def test_mismatched_validation_bags_and_eventless_survival_fold_are_named():
    task = mil.create_task("binary")
    train, val = synthetic_bags("binary", 8, 0), synthetic_bags("binary", 4, 1, dim=DIM + 3)
    with pytest.raises(
        ValueError, match=rf"validation bags have {DIM + 3}-dimensional features, training bags {DIM}"
    ):
        mil.fit(_model(task), task, train, val, FAST)
    bags, y = synthetic_bags("survival", 12, 0)
    y[:, 1] = 0
    y[:2, 1] = 1  # two events among twelve slides: three folds cannot each hold one
    with pytest.raises(ValueError, match=r"fold \d of 3 has no event \(every slide censored\).*fewer folds"):
        mil.cross_validate("mean", "survival", (bags, y), n_splits=3, config=FAST)


def test_one_split_trains_on_three_parts_and_reports_the_fourth():
    bags, y = synthetic_bags("binary", 24, 0)
    ids = [f"s{i}" for i in range(24)]
    result = mil.cross_validate("mean", "binary", (bags, y, ids), n_splits=1, config=FAST,
                                model_kwargs={"embed_dim": 8})  # fmt: skip
    assert len(result.models) == 1 and result.plan["validation_parts"] == 4
    row = result.folds.iloc[0]
    assert row["n_val"] == row["n_test"] == len(result.oof) and row["n_train"] + row["n_val"] == 24
    assert set(result.oof["slide_id"]) < set(ids) and np.isnan(result.summary.loc["auc", "sd"])


def test_one_split_needs_two_patients_and_an_evaluable_part():
    bags, y = synthetic_bags("binary", 8, 0)
    with pytest.raises(ValueError, match="at least 2 patients"):
        mil.cross_validate(
            "mean", "binary", mil.as_bags((bags, y), groups=["p"] * 8), n_splits=1, config=FAST
        )
    groups = ["p0", "p0", "p1", "p1", "p2", "p2", "p3", "p3"]
    with pytest.raises(ValueError, match="every validation split has a problem, e.g. no positive slide"):
        mil.cross_validate("mean", "binary", mil.as_bags((bags, np.zeros(8)), groups=groups), n_splits=1,
                           config=FAST)  # fmt: skip
    with pytest.raises(ValueError, match="n_splits must be 1"):
        mil.cross_validate("mean", "binary", (bags, y), n_splits=0, config=FAST)

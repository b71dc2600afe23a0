"""Checkpoints: safetensors + JSON, checked against the features they are given, never unpickled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import mil
from tests.mil.synthetic_bags import DIM, synthetic_bags


@pytest.fixture
def saved(tmp_path):
    task = mil.create_task("grade", levels=["low", "mid", "high"])
    torch.manual_seed(0)
    model = mil.create_model("abmil_gated", DIM, task.n_outputs, embed_dim=16)
    encoder = {"encoder": "resnet18", "weights_hash": "abc123", "dim": DIM}
    path = mil.save_model(tmp_path / "run" / "model", model, task, feature="resnet18", encoder=encoder,
                          plan={"config": {"epochs": 3}}, metrics={"qwk": 0.5})  # fmt: skip
    return path, model, task


def test_round_trip_keeps_model_task_and_provenance(saved):
    path, model, _ = saved
    assert sorted(p.name for p in path.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((path / "config.json").read_text())
    assert config["model"] == {
        "name": "abmil_gated",
        "in_dim": DIM,
        "n_outputs": 2,
        "kwargs": {"embed_dim": 16},
    }
    assert config["feature"] == "resnet18" and config["metrics"] == {"qwk": 0.5}
    assert {"torch", "python", "safetensors"} <= set(config["versions"])
    loaded = mil.load_model(path, in_dim=DIM, encoder={"encoder": "resnet18", "weights_hash": "abc123"})
    bags, _ = synthetic_bags("grade", 3, 0)
    x = torch.as_tensor(bags[0])[None]
    torch.testing.assert_close(loaded.model(x).logits, model.eval()(x).logits)
    assert loaded.task.levels == ["low", "mid", "high"]
    assert not loaded.model.training


def test_refuses_other_features(saved):
    path, _, _ = saved
    with pytest.raises(
        ValueError, match=rf"trained on {DIM}-dimensional features \(resnet18\).*given are 768"
    ):
        mil.load_model(path, in_dim=768)
    with pytest.raises(
        ValueError, match=r"encoder 'resnet18' \(weights abc123\).*come from 'uni' \(weights None\)"
    ):
        mil.load_model(path, encoder="uni")
    with pytest.raises(ValueError, match=r"weights abc123.*weights zzz"):
        mil.load_model(path, encoder={"encoder": "resnet18", "weights_hash": "zzz"})


def test_a_checkpoint_with_spatial_context_keeps_it_and_names_it_for_plain_features(tmp_path):
    context = mil.SpatialContext(2, ("mean", "max"))
    task = mil.create_task("binary")
    model = mil.create_model("abmil", context.out_dim(DIM), 1, embed_dim=8)
    path = mil.save_model(tmp_path / "m", model, task, feature="resnet18", context=context)
    assert mil.load_model(path, in_dim=3 * DIM).context == context
    # Plain (unwidened) features: the error says the model's features carry the context and how to read them.
    with pytest.raises(ValueError, match=r"given are \d+-dimensional \(the model's features carry spatial "
                                         r"context \{'radius': 2, 'stats': \['mean', 'max'\]\}: read them with "
                                         r"mil.read_bag"):  # fmt: skip
        mil.load_model(path, in_dim=DIM)
    plain = mil.save_model(tmp_path / "plain", mil.create_model("abmil", DIM, 1, embed_dim=8), task)
    assert mil.load_model(plain).context is None
    with pytest.raises(ValueError, match=r"given are \d+-dimensional$"):
        mil.load_model(plain, in_dim=3 * DIM)


def test_never_unpickles(saved, monkeypatch):
    path, _, _ = saved
    import pickle

    def refuse(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    mil.load_model(path)
    assert (path / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors: 8-byte length, JSON header


def test_overwrites_only_its_own_checkpoints(saved, tmp_path):
    path, model, task = saved
    mil.save_model(path, model, task)  # replacing a checkpoint is fine
    other = tmp_path / "results"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a MIL checkpoint"):
        mil.save_model(other, model, task)
    assert (other / "notes.txt").read_text() == "mine"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary leftovers


def test_fitted_threshold_survives(tmp_path):
    task = mil.create_task("binary")
    task.finalize(np.array([0, 1, 1]), np.array([0.2, 0.7, 0.9]))
    path = mil.save_model(tmp_path / "m", mil.create_model("max", DIM, 1), task)
    assert mil.load_model(path).task.threshold_ == task.threshold_

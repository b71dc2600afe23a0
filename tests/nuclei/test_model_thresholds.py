"""A model folder's post-processing thresholds (config.json `postprocess`): loaded, checked, used, chosen."""

import json
from dataclasses import asdict

import numpy as np
import pytest
import torch

import nuclei
from benchmarks.nuclei_thresholds import best_index, grid_configs, score_grid
from nuclei.inference import predict_instances
from nuclei.model import read_postprocess, write_postprocess
from nuclei.segmenters import CnnSegmenter
from nuclei.targets import hv_maps

FLAT = 0.73  # the flat model's nucleus probability everywhere: sigmoid(1)


@pytest.fixture(scope="module")
def flat_model():
    """A small model whose probability head says 0.73 everywhere: foreground at threshold 0.5, none at 0.9."""
    torch.manual_seed(0)
    model = nuclei.create_model(decoder_channels=(16, 16, 8, 8)).eval()
    with torch.no_grad():
        model.np_head.weight.zero_()
        model.np_head.bias.fill_(1.0)
    return model


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)


def _folder(tmp_path, model, postprocess=None, name="m"):
    return nuclei.save_model(model, tmp_path / name, postprocess=postprocess)


def test_folder_thresholds_change_segment_and_an_explicit_config_wins(tmp_path, flat_model, image):
    strict = nuclei.PostprocessConfig(foreground=0.9)
    loaded = nuclei.load_model(_folder(tmp_path, flat_model, strict))
    assert loaded.postprocess == strict
    assert nuclei.segment(image, mpp=0.5, model=loaded, device="cpu").max() == 0  # 0.73 < 0.9: nothing
    default = nuclei.segment(
        image, mpp=0.5, model=loaded, device="cpu", postprocess=nuclei.PostprocessConfig()
    )
    assert default.max() > 0
    assert predict_instances(loaded, image).max() == 0
    assert predict_instances(loaded, image, postprocess=nuclei.PostprocessConfig()).max() > 0
    segmenter = CnnSegmenter(loaded, device="cpu")
    assert segmenter.postprocess == strict and segmenter.describe()["postprocess"]["foreground"] == 0.9
    assert (
        CnnSegmenter(loaded, device="cpu", postprocess=nuclei.PostprocessConfig()).postprocess.foreground
        == 0.5
    )


def test_older_folder_without_thresholds_loads_as_before(tmp_path, flat_model, image):
    folder = _folder(tmp_path, flat_model)
    meta = json.loads((folder / "config.json").read_text())
    assert "postprocess" not in meta  # a new model has none: nothing written
    loaded = nuclei.load_model(folder)
    assert loaded.postprocess is None and read_postprocess(folder) is None
    labels = nuclei.segment(image, mpp=0.5, model=loaded, device="cpu")
    explicit = nuclei.segment(
        image, mpp=0.5, model=loaded, device="cpu", postprocess=nuclei.PostprocessConfig()
    )
    assert labels.max() > 0 and np.array_equal(labels, explicit)
    assert CnnSegmenter(loaded, device="cpu").postprocess == nuclei.PostprocessConfig()


def test_thresholds_travel_with_a_saved_model_and_can_be_set_in_place(tmp_path, flat_model):
    chosen = nuclei.PostprocessConfig(foreground=0.6, min_size=20)
    loaded = nuclei.load_model(_folder(tmp_path, flat_model, chosen))
    again = nuclei.load_model(nuclei.save_model(loaded, tmp_path / "again"))  # fine-tuned and saved: kept
    assert again.postprocess == chosen
    folder = _folder(tmp_path, flat_model, name="plain")
    weights = (folder / "model.safetensors").read_bytes()
    write_postprocess(folder, chosen, {"rule": "test"})
    assert nuclei.load_model(folder).postprocess == chosen
    assert nuclei.load_model(folder).provenance["postprocess"] == {"rule": "test"}
    assert (folder / "model.safetensors").read_bytes() == weights
    assert not list(folder.glob("*.tmp"))


@pytest.mark.parametrize(
    ("postprocess", "message"),
    [
        ({"foregrund": 0.4}, r"unknown thresholds \['foregrund'\]"),
        ({"min_size": 2.5}, r"postprocess.min_size must be an integer, got 2.5"),
        ({"foreground": "0.5"}, r"postprocess.foreground must be a number, got '0.5'"),
        ({"centre": True}, r"postprocess.centre must be a number, got True"),
        ({"foreground": 1.5}, r"foreground must be a probability in \[0, 1\]"),
        ([0.5], r"postprocess must be an object of thresholds, got list"),
        ({"centre": 0}, r"centre must be positive"),
        ({"min_size": -1}, r"min_size must be >= 0"),
        (
            {"centre": float("nan"), "slope": float("-inf")},
            r"centre, slope must be finite numbers",
        ),  # JSON's NaN
    ],
)
def test_bad_thresholds_refused_on_load_naming_the_key(tmp_path, flat_model, postprocess, message):
    folder = _folder(tmp_path, flat_model)
    meta = json.loads((folder / "config.json").read_text())
    meta["postprocess"] = postprocess
    (folder / "config.json").write_text(json.dumps(meta))
    with pytest.raises(nuclei.ModelError, match=message):
        nuclei.load_model(folder)


def test_from_dict_fills_missing_keys_with_defaults():
    config = nuclei.PostprocessConfig.from_dict({"min_size": 30, "foreground": 1})
    assert config == nuclei.PostprocessConfig(min_size=30, foreground=1.0)
    assert isinstance(config.foreground, float)
    assert nuclei.PostprocessConfig.from_dict(asdict(config)) == config


def test_threshold_grid_scores_pooled_and_picks_the_best_pq():
    truth = np.zeros((48, 48), np.int32)
    truth[5:15, 5:15], truth[25:37, 20:30], truth[30:40, 35:45] = 1, 2, 3
    prob = np.where(truth > 0, 0.6, 0.1).astype(np.float32)  # found at foreground 0.5, lost at 0.7
    grid = {"foreground": [0.7, 0.5], "min_size": [10, 200]}
    configs = grid_configs(grid)
    assert [(c.foreground, c.min_size) for c in configs] == [(0.7, 10), (0.7, 200), (0.5, 10), (0.5, 200)]
    results = score_grid([(prob, hv_maps(truth))] * 2, [truth, truth], configs)
    assert results[2].tp == 6 and results[2].pq > 0.9  # pooled over the two images: 2 x 3 nuclei
    assert results[0].tp == results[1].tp == results[3].tp == 0  # nothing above 0.7; 200 px drops all three
    assert best_index(results) == 2
    with pytest.raises(ValueError, match="2 map pairs for 1 reference images"):
        score_grid([(prob, hv_maps(truth))] * 2, [truth], configs)


def test_nuclei_evaluate_uses_and_records_the_folders_thresholds(tmp_path, flat_model, capsys):
    from slidestream.cli import main

    strict = nuclei.PostprocessConfig(foreground=0.9)  # above the flat model's 0.73: it finds nothing
    out = tmp_path / "scores.json"
    assert main(["nuclei", "evaluate", "--synthetic", "1", "--model", str(_folder(tmp_path, flat_model, strict)),
                 "--device", "cpu", "--json", str(out)]) == 0  # fmt: skip
    scores = json.loads(out.read_text())
    assert scores["postprocess"] == asdict(strict)
    assert (
        scores["cnn"]["recall"] == 0.0 and scores["classical"]["recall"] > 0
    )  # the folder's thresholds applied
    assert "'foreground': 0.9" in capsys.readouterr().out

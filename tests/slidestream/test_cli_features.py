"""`slidestream features` over a run folder; encoders by name, their arguments and weights from the CLI, the
TOML config and into the summary."""

from __future__ import annotations

import csv
from dataclasses import asdict

import pytest

import mil
from slidestream.cli import main
from slidestream.discovery import SlideInput
from slidestream.pipeline import load_config, process_slide
from slidestream.pipeline.manifest import write_summary
from tests.mil.published_checkpoints import write_checkpoint
from tiling import PatchStore


@pytest.fixture(scope="module")
def run_folder(synthetic_slide, tmp_path_factory):
    out = tmp_path_factory.mktemp("features") / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "2.0", "--size", "64", "-q"]) == 0
    )
    return out


def _store(out):
    return PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")


def test_features_for_every_store(run_folder, capsys):
    assert main(["features", str(run_folder), "--encoder", "stain_stats", "--workers", "0", "-q"]) == 0
    assert "synthetic: features/stain_stats" in capsys.readouterr().out
    store = _store(run_folder)
    assert store.features("stain_stats").shape == (len(store), 53)


def test_features_errors(tmp_path, capsys):
    assert main(["features", str(tmp_path)]) == 2
    assert "no patch stores" in capsys.readouterr().err
    (tmp_path / "slides" / "x" / "patches.zarr").mkdir(parents=True)
    assert main(["features", str(tmp_path), "--encoder", "nope_net"]) == 2
    assert "unknown encoder" in capsys.readouterr().err
    assert main(["features", str(tmp_path), "--encoder", "test_vit", "--encoder-arg", "init_values"]) == 2
    assert "--encoder-arg wants KEY=VALUE" in capsys.readouterr().err


def test_encoders_without_weights_are_refused(run_folder, capsys):
    for name in ("resnet50", "uni_v1"):
        assert main(["features", str(run_folder), "--encoder", name, "-q"]) == 2
        assert capsys.readouterr().err.strip() == (
            f"error: {name} needs --weights FILE (a random initialisation gives meaningless features); pass "
            "--random-weights to use one anyway, for testing (in Python: weights=FILE or random_weights=True)"
        )
    assert "test_vit" not in _store(run_folder).feature_names()


def test_random_weights_are_said_everywhere(run_folder, capsys):
    args = ["features", str(run_folder), "--encoder", "test_vit", "--random-weights", "-q"]
    assert main([*args, "--encoder-arg", "init_values=1e-5", "--encoder-arg", "dynamic_img_size=true"]) == 0
    captured = capsys.readouterr()
    assert "RANDOM WEIGHTS" in captured.err and "(RANDOM WEIGHTS)" in captured.out
    description = _store(run_folder).features("test_vit").attrs["description"]
    assert description["random_weights"] is True and description["weights_hash"] == "random-init-seed-0"
    assert description["arguments"] == {"dynamic_img_size": True, "init_values": 1e-5}


def test_recipe_by_name_with_its_published_checkpoint(run_folder, tmp_path, capsys):
    weights = write_checkpoint("uni_v1", tmp_path / "pytorch_model", depth=1)  # UNI's layout, one block
    args = ["features", str(run_folder), "--encoder", "uni_v1", "--weights", str(weights), "-q"]
    assert main([*args, "--encoder-arg", "depth=1"]) == 0
    out = capsys.readouterr().out
    store = _store(run_folder)
    assert f"features/uni_v1 {len(store)} x 1024" in out and "RANDOM" not in out
    description = store.features("uni_v1").attrs["description"]
    assert description["random_weights"] is False and description["weights_hash"] in out
    # A UNI2-h checkpoint passed as UNI is refused, and the right recipe is named.
    uni2 = write_checkpoint("uni_v2", tmp_path / "uni2", depth=1)
    assert main(["features", str(run_folder), "--encoder", "uni_v1", "--weights", str(uni2),
                 "--encoder-arg", "depth=1", "-q"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "recipe 'uni_v1'" in err and "use --encoder uni_v2" in err


def test_list_encoders(capsys):
    assert main(["features", "--list-encoders"]) == 0
    out = capsys.readouterr().out
    for name in ("uni_v1", "virchow2", "hoptimus0", "phikon", "ctranspath", "resnet50_trunc", "stain_stats"):
        assert name in out
    assert "2560" in out and "MahmoodLab/UNI" in out and "CC-BY-NC-ND-4.0" in out


def test_toml_encoder_args_and_cli_on_top(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[features]\nencoder = "uni_v1"\nweights = "w.bin"\n'
                    "[features.encoder_args]\ninit_values = 1e-5\ndynamic_img_size = true\n")  # fmt: skip
    config = load_config(toml, **{"features.encoder_args": {"init_values": 1e-6}})
    assert config.features.encoder == "uni_v1" and config.features.weights == "w.bin"
    assert config.features.encoder_args == {"init_values": 1e-6, "dynamic_img_size": True}
    assert not config.features.random_weights


def test_run_refuses_missing_weights_before_any_work(synthetic_slide, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", str(synthetic_slide.path), "-o", str(out), "--encoder", "resnet50", "-q"]) == 2
    assert "resnet50 needs --weights FILE" in capsys.readouterr().err
    assert not out.exists()


def test_recipe_from_toml_and_random_weights_in_the_summary(synthetic_slide, tmp_path):
    weights = write_checkpoint("uni_v1", tmp_path / "pytorch_model", depth=1)
    toml = tmp_path / "run.toml"
    toml.write_text(f'[tiling]\nmpp = 2.0\nsize = 64\n[features]\nencoder = "uni_v1"\nweights = "{weights}"\n'
                    "[features.encoder_args]\ndepth = 1\n")  # fmt: skip
    config = load_config(toml, out=tmp_path / "out", progress=False)
    records = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert [r.status for r in records] == ["done", "done"] and not records[1].warnings
    # The same slide again with a timm model on random weights, as asked.
    random = load_config(out=tmp_path / "out", progress=False, **{
        "tiling.mpp": 2.0, "tiling.size": 64, "features.encoder": "test_vit", "features.random_weights": True})  # fmt: skip
    records += process_slide(SlideInput("beta", synthetic_slide.path), random)
    assert any("RANDOM WEIGHTS" in w for w in records[-1].warnings)
    write_summary(tmp_path / "summary.csv", [asdict(r) for r in records])
    with open(tmp_path / "summary.csv") as f:
        rows = {row["slide_id"]: row for row in csv.DictReader(f)}
    assert rows["alpha"]["encoder"] == "uni_v1" and rows["alpha"]["feature_dim"] == "1024"
    assert rows["alpha"]["weights"] == mil.create_encoder("uni_v1", weights=weights, depth=1).weights_hash
    assert rows["beta"]["encoder"] == "test_vit" and rows["beta"]["weights"] == "RANDOM WEIGHTS"


def test_a_store_another_run_is_writing_is_left_alone(run_folder, capsys):
    """The slide's lock is held (a `run` working on it): features fail for that slide, naming the holder, and
    the store is not touched; once the lock is free the same command computes them."""
    from slidestream.pipeline.lock import SlideLock

    folder = run_folder / "slides" / "synthetic"
    with SlideLock(folder):
        code = main(["features", str(run_folder), "--encoder", "stain_stats", "--name", "locked", "-q"])
    err = capsys.readouterr().err
    assert code == 1
    assert "synthetic: in progress in another run" in err and "PID" in err
    assert "locked" not in _store(run_folder).feature_names()
    assert main(["features", str(run_folder), "--encoder", "stain_stats", "--name", "locked", "-q"]) == 0
    assert _store(run_folder).features("locked").shape[1] == 53

"""The thresholds benchmark's split (the model's own, a --real folder's recorded mpp first), bad input and --write."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import nuclei
from benchmarks.nuclei_thresholds import main
from nuclei.datasets import synthetic_tiles
from nuclei.model import read_postprocess, save_model

# Two values of foreground around the defaults (kept in the grid, so the best never scores below them).
SMALL = ["--foreground", "0.5", "0.3", "--centre", "0.5", "--min-size", "10", "--slope", "0.0", "--min-marker", "2",
         "--max-hole", "400", "--threads", "1"]  # fmt: skip


def _folder(path: Path, mpp: float | None = 0.5) -> Path:
    tiles = synthetic_tiles(2, size=64, seed=11)
    for name in ("images", "masks"):
        (path / name).mkdir(parents=True)
    for k in range(2):
        Image.fromarray(tiles.images[k]).save(path / "images" / f"a{k}.png")
        Image.fromarray(tiles.instances[k].astype(np.uint16)).save(path / "masks" / f"a{k}.png")
    (path / "dataset.json").write_text(json.dumps({"mpp": mpp} if mpp else {}))
    return path


def _model(path: Path, split: dict | None) -> Path:
    torch.manual_seed(0)
    model = nuclei.create_model(decoder_channels=(8, 8, 8, 8))
    save_model(model, path, provenance={"real": {"split": split}} if split else {})
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_thresholds_benchmark_splits_as_the_model_was_trained_and_writes_only_on_a_gain(tmp_path, capsys):
    real = _folder(tmp_path / "real")
    model = _model(tmp_path / "m", {"grid": 2, "val_blocks": [3]})
    before = _snapshot(model)
    # --real-mpp is a fallback only: the folder's 0.5 wins (no resampling); the model's grid 2, block 3 held out
    main(
        [
            "--model",
            str(model),
            "--real",
            str(real),
            "--real-mpp",
            "0.25",
            *SMALL,
            "--write",
            "--min-gain",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert "grid 2, held-out blocks [3]]: 2 blocks" in out and " um/px]" not in out.split(": 2 blocks")[0]
    assert "not written" in out and _snapshot(model) == before  # the folder is left as it was
    main(["--model", str(model), "--real", str(real), *SMALL, "--write", "--min-gain", "0"])
    assert "written:" in capsys.readouterr().out
    chosen = read_postprocess(model)
    meta = json.loads((model / "config.json").read_text())
    assert chosen is not None and chosen.foreground in (0.3, 0.5)
    record = meta["provenance"]["postprocess"]
    assert (
        record["grid"]["foreground"] == [0.5, 0.3] and "pq" in record["best"] and "pq" in record["defaults"]
    )
    assert (model / "model.safetensors").read_bytes() == before["model.safetensors"]  # weights untouched


def test_thresholds_benchmark_refuses_bad_input(tmp_path):
    real = _folder(tmp_path / "real")
    trained = _model(tmp_path / "m", {"grid": 2, "val_blocks": [3]})
    with pytest.raises(SystemExit, match="records no resolution; give --real-mpp"):
        main(["--model", str(trained), "--real", str(_folder(tmp_path / "bare", mpp=None)), *SMALL])
    with pytest.raises(SystemExit, match=r"--real-val-blocks: val_blocks \[9\] outside the 2 x 2 grid"):
        main(["--model", str(trained), "--real", str(real), "--real-val-blocks", "9", *SMALL])
    with pytest.raises(SystemExit, match="--real-grid 3: the model was trained with grid 2"):
        main(["--model", str(trained), "--real", str(real), "--real-grid", "3", *SMALL])
    (tmp_path / "notes").mkdir()
    with pytest.raises(SystemExit, match="--real: "):
        main(["--model", str(trained), "--real", str(tmp_path / "notes"), *SMALL])
    untrained = _model(tmp_path / "u", None)
    with pytest.raises(SystemExit, match="records no split .* give --real-val-blocks"):
        main(["--model", str(untrained), "--real", str(real), *SMALL])
    refit = _model(tmp_path / "r", {"held_out": "none"})  # trained on every block: nothing left to tune on
    meta = json.loads((refit / "config.json").read_text())
    for folder in (None, str(real)):  # unrecorded (taken as this one), or recorded
        if folder:
            meta["provenance"]["real"]["folder"] = folder
            (refit / "config.json").write_text(json.dumps(meta))
        for blocks in ([], ["--real-val-blocks", "3"]):  # naming blocks does not make them held out
            with pytest.raises(SystemExit, match=r"trained on every image of this folder \(held out: none\)"):
                main(["--model", str(refit), "--real", str(real), *blocks, *SMALL])
    other = _folder(tmp_path / "other")  # all of another folder is held out from it: its blocks must be named
    with pytest.raises(SystemExit, match="trained on every image of another folder"):
        main(["--model", str(refit), "--real", str(other), *SMALL])


def test_thresholds_benchmark_holds_out_the_images_of_an_image_level_split(tmp_path, capsys):
    real = _folder(tmp_path / "real")
    model = _model(tmp_path / "m", {"val_fraction": 0.5, "val_images": [1]})
    main(["--model", str(model), "--real", str(real), *SMALL])
    out = capsys.readouterr().out
    assert "held out: {'val_images': [1]} (as the model was trained)" in out and ": 1 blocks" in out


def test_errors_benchmark_post_processes_the_model_with_its_own_thresholds(tmp_path, monkeypatch, capsys):
    import benchmarks.nuclei_errors as errors
    from nuclei.model import write_postprocess
    from nuclei.postprocess import PostprocessConfig

    model = _model(tmp_path / "m", None)
    chosen = PostprocessConfig(foreground=0.3, min_size=5)
    write_postprocess(model, chosen)
    used = []
    real = errors.instances_from_maps
    monkeypatch.setattr(errors, "instances_from_maps", lambda p, hv, c=None: used.append(c) or real(p, hv, c))
    errors.main(["--model", str(model), "--tiles", "1", "--threads", "1"])
    assert used == [
        chosen,
        None,
        None,
    ]  # the model's maps with its thresholds; the true maps with the defaults
    assert "| all | 1 |" in capsys.readouterr().out

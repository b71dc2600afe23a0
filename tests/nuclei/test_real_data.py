"""The vendored real training crop (data/nuclei/hgsc_nest), grid splits, resampling, and `nuclei train --real`."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage as ndi

import nuclei
from nuclei.datasets import (
    DatasetError,
    NucleiTiles,
    grid_split,
    load_dataset,
    resample_tiles,
    synthetic_tiles,
)
from nuclei.datasets.base import UNKNOWN_TYPE
from nuclei.selftrain import mix_tiles
from slidestream.cli import main

NEST = Path(__file__).resolve().parents[2] / "data" / "nuclei" / "hgsc_nest"
PANNUKE = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")


@pytest.fixture(scope="module")
def nest():
    return load_dataset(NEST)


def test_vendored_nest_crop_loads_with_types_and_mpp(nest):
    assert nest.source.startswith("folder") and len(nest) == 1
    assert nest.images[0].shape == (1500, 1500, 3) and nest.instances[0].shape == (1500, 1500)
    inst, typ = nest.instances[0], nest.types[0]
    assert inst.max() == 1294 and len(np.unique(inst)) == 1295
    assert nest.mpp == 0.44 and nest.classes == PANNUKE
    assert not typ[inst == 0].any() and (typ[inst > 0] > 0).all()
    counts = np.zeros((1295, 4), int)  # pixels of each type in each nucleus
    np.add.at(counts, (inst[inst > 0], typ[inst > 0]), 1)
    per_nucleus = counts[1:].argmax(1)  # the majority type (4 nuclei have two)
    assert np.bincount(per_nucleus, minlength=4)[1:].tolist() == [
        288,
        633,
        373,
    ]  # neoplastic, inflammatory, connective
    # lymphocytes (inflammatory) are the smallest nuclei, tumour nuclei the largest: the mapping is not shuffled
    area = ndi.sum(np.ones_like(inst), inst, np.arange(1, 1295))
    medians = [np.median(area[per_nucleus == k]) for k in (1, 2, 3)]
    assert medians[1] < medians[2] < medians[0]


def test_grid_split_and_resample_of_the_nest(nest):
    train, val = grid_split(nest, 3, (2, 4, 6))
    assert len(train) == 6 and len(val) == 3
    assert all(im.shape == (500, 500, 3) for im in train.images + val.images)
    np.testing.assert_array_equal(val.images[1], nest.images[0][500:1000, 500:1000])  # block 4: the centre
    np.testing.assert_array_equal(train.images[0], nest.images[0][:500, :500])
    n_val = sum(int(i.max()) for i in val.instances)  # ids made consecutive in each block
    assert n_val == sum(len(np.unique(i)) - 1 for i in val.instances) == 422
    assert "held-out blocks [2, 4, 6]" in val.source
    small = resample_tiles(val, 0.5)
    assert small.mpp == 0.5 and small.images[0].shape == (440, 440, 3) and small.types[0].shape == (440, 440)
    assert 400 <= sum(int(i.max()) for i in small.instances) <= 422


def test_grid_split_refuses_bad_blocks():
    tiles = synthetic_tiles(1, size=64, seed=2)
    with pytest.raises(ValueError, match="outside the 2 x 2 grid"):
        grid_split(tiles, 2, (4,))
    with pytest.raises(ValueError, match="some but not all"):
        grid_split(tiles, 2, (0, 1, 2, 3))
    with pytest.raises(ValueError, match="resolution unknown"):
        resample_tiles(NucleiTiles(tiles.images, tiles.instances), 0.5)


def test_mix_keeps_real_types_of_the_same_classes():
    synth = synthetic_tiles(4, size=64, seed=1)
    real = NucleiTiles(synth.images[:1], synth.instances[:1], [np.where(synth.instances[0] > 0, 2, 0).astype(np.uint8)],
                       mpp=0.5, classes=PANNUKE)  # fmt: skip
    mixed = mix_tiles(synth, real, share=0.5)
    assert len(mixed) == 8 and mixed.types[4] is real.types[0]  # 4 + 4 x the real tile (by reference)
    foreign = NucleiTiles(real.images, real.instances, real.types, mpp=0.5, classes=("background", "x", "y"))
    nuc = real.instances[0] > 0
    assert (mix_tiles(synth, foreign, share=0.5).types[4][nuc] == UNKNOWN_TYPE).all()


def _real_folder(path: Path, mpp: float | None = 0.5, classes=PANNUKE) -> Path:
    tiles = synthetic_tiles(1, size=128, seed=11)
    for name in ("images", "masks", "types"):
        (path / name).mkdir(parents=True)
    Image.fromarray(tiles.images[0]).save(path / "images" / "a.png")
    Image.fromarray(tiles.instances[0].astype(np.uint16)).save(path / "masks" / "a.png")
    Image.fromarray(np.where(tiles.instances[0] > 0, 1, 0).astype(np.uint8)).save(path / "types" / "a.png")
    meta = {"classes": list(classes)} | ({"mpp": mpp} if mpp else {})
    (path / "dataset.json").write_text(json.dumps(meta))
    return path


def test_folder_types_need_class_names(tmp_path):
    folder = _real_folder(tmp_path / "r")
    (folder / "dataset.json").write_text(json.dumps({"mpp": 0.5}))
    with pytest.raises(DatasetError, match="class names"):
        load_dataset(folder)
    (folder / "dataset.json").write_text(json.dumps({"mpp": -1}))
    with pytest.raises(DatasetError, match="'mpp' must be a positive number"):
        load_dataset(folder)


def test_cli_train_mixes_a_real_folder_and_validates_on_its_blocks(tmp_path, capsys):
    real = _real_folder(tmp_path / "real", mpp=0.4)
    common = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "9", "--n-val", "1", "--epochs", "1",
              "--steps-per-epoch", "2", "--batch-size", "2", "--crop", "64", "--workers", "0", "--device", "cpu",
              "--decoder-channels", "8", "8", "8", "8", "-q"]  # fmt: skip
    out = tmp_path / "m"
    rc = main([*common, "--real", str(real), "--real-share", "0.25", "--real-grid", "2", "--real-val-blocks", "3",
               "-o", str(out)])  # fmt: skip
    assert rc == 0
    printed = capsys.readouterr().out
    assert (
        "3 training tiles" in printed and "1 validation tiles" in printed and "25% of the samples" in printed
    )
    history = json.loads((out / "history.json").read_text())
    assert {"val_real_pq", "val_real_aji", "val_real_f1", "val_synthetic_pq"} <= set(history[0])
    prov = nuclei.load_model(out).provenance
    assert prov["selected_by"] == "val_real_pq" and prov["real"]["split"] == {"grid": 2, "val_blocks": [3]}
    assert (
        prov["real"]["mpp"] == 0.4 and prov["real"]["resampled_to"] == 0.5 and prov["real"]["share"] == 0.25
    )
    # 9 synthetic tiles + the 3 real training blocks once (0.25 / 0.75 x 9 / 3 = 1 repeat): 3 of 12 draws are real
    assert prov["n_train_tiles"] == 12 and "3 training tiles" in printed and "folder:" in prov["train_source"]
    with pytest.raises(SystemExit, match="outside the 2 x 2 grid"):
        main(
            [
                *common,
                "--real",
                str(real),
                "--real-grid",
                "2",
                "--real-val-blocks",
                "4",
                "-o",
                str(tmp_path / "b"),
            ]
        )


def test_cli_train_refuses_a_real_folder_in_no_known_layout(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    common = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "1", "--n-val", "1", "-q"]
    with pytest.raises(SystemExit, match="--real: .* in none of the known nuclei dataset layouts"):
        main([*common, "--real", str(tmp_path / "notes"), "-o", str(tmp_path / "m")])
    real = _real_folder(tmp_path / "r", mpp=None)
    with pytest.raises(SystemExit, match="give --real-mpp"):
        main([*common, "--real", str(real), "-o", str(tmp_path / "m2")])

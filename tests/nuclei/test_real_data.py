"""The vendored real training crop (data/nuclei/hgsc_nest), grid splits, resampling, and `nuclei train --real`."""

import argparse
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
    real_split,
    resample_tiles,
    synthetic_tiles,
)
from nuclei.datasets.base import UNKNOWN_TYPE
from nuclei.selftrain import mix_tiles, mixed_share
from slidestream.cli import main
from slidestream.commands.nuclei import _load_real

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


def _real_folder(path: Path, mpp: float | None = 0.5, classes=PANNUKE, size: int = 128, n: int = 1) -> Path:
    tiles = synthetic_tiles(n, size=size, seed=11)
    for name in ("images", "masks", "types"):
        (path / name).mkdir(parents=True)
    for k in range(n):
        Image.fromarray(tiles.images[k]).save(path / "images" / f"a{k}.png")
        Image.fromarray(tiles.instances[k].astype(np.uint16)).save(path / "masks" / f"a{k}.png")
        Image.fromarray(np.where(tiles.instances[k] > 0, 1, 0).astype(np.uint8)).save(
            path / "types" / f"a{k}.png"
        )
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
    real = _real_folder(tmp_path / "real", mpp=0.4, size=256)  # 2 x 2 blocks of 102 px at 0.5 um/px >= --crop
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
    small = _real_folder(tmp_path / "small", mpp=0.4)  # 128 px: blocks of 51 px at 0.5 um/px
    with pytest.raises(SystemExit, match="--real-grid too fine: blocks of 51 px at 0.5 um/px < --crop 64"):
        main(
            [
                *common,
                "--real",
                str(small),
                "--real-grid",
                "2",
                "--real-val-blocks",
                "3",
                "-o",
                str(tmp_path / "s"),
            ]
        )
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


def test_cli_train_real_val_blocks_none_trains_on_every_block(tmp_path, capsys):
    # A final refit: the whole --real folder is trained on; the --data validation picks the best epoch.
    real = _real_folder(tmp_path / "real", mpp=0.4, size=256)
    common = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "3", "--n-val", "1", "--epochs", "1",
              "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "64", "--workers", "0", "--device", "cpu",
              "--decoder-channels", "8", "8", "8", "8", "--real", str(real), "-q"]  # fmt: skip
    out = tmp_path / "m"
    assert main([*common, "--real-val-blocks", "none", "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "1 training tiles" in printed and "0 validation tiles" in printed
    prov = nuclei.load_model(out).provenance
    assert prov["real"]["split"] == {"held_out": "none"} and prov["real"]["val_tiles"] == 0
    assert prov["real"]["train_tiles"] == 1 and "none held out" in prov["train_source"]
    assert prov["selected_by"] == "val_synthetic_pq" and (out / "last" / "model.safetensors").is_file()
    history = json.loads((out / "history.json").read_text())
    assert "val_synthetic_pq" in history[0] and not any(k.startswith("val_real") for k in history[0])
    with pytest.raises(SystemExit, match="'none' holds out nothing and takes no block numbers"):
        main([*common, "--real-val-blocks", "none", "3", "-o", str(tmp_path / "b")])
    with pytest.raises(SystemExit):  # argparse: neither a block number nor 'none'
        main([*common, "--real-val-blocks", "some", "-o", str(tmp_path / "c")])
    # Options that split a --real folder which 'none' does not split are refused, not silently ignored.
    with pytest.raises(SystemExit, match="--real-grid 2 with --real-val-blocks none: .* drop --real-grid"):
        main([*common, "--real-val-blocks", "none", "--real-grid", "2", "-o", str(tmp_path / "d")])
    with pytest.raises(
        SystemExit, match="--val-fraction 0.2 with --data synthetic and --real-val-blocks none"
    ):
        main([*common, "--real-val-blocks", "none", "--val-fraction", "0.2", "-o", str(tmp_path / "e")])
    with pytest.raises(ValueError, match="block numbers or 'none', got 'some'"):
        real_split(real, val_blocks="some")
    with pytest.raises(ValueError, match=r"a val_fraction \(0.1\) cannot apply"):
        real_split(real, val_blocks="none", val_fraction=0.1)


def test_cli_train_refuses_a_real_folder_in_no_known_layout(tmp_path):
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("no images here")
    common = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "1", "--n-val", "1", "-q"]
    with pytest.raises(SystemExit, match="--real: .* in none of the known nuclei dataset layouts"):
        main([*common, "--real", str(tmp_path / "notes"), "-o", str(tmp_path / "m")])
    real = _real_folder(tmp_path / "r", mpp=None)
    with pytest.raises(SystemExit, match="give --real-mpp"):
        main([*common, "--real", str(real), "-o", str(tmp_path / "m2")])


def _real_args(folder: Path, **kw) -> argparse.Namespace:
    defaults = {"real": folder, "real_mpp": None, "real_grid": 3, "real_val_blocks": None, "val_fraction": 0.1,
                "seed": 0}  # fmt: skip
    return argparse.Namespace(**(defaults | kw))


def test_real_split_of_a_small_folder_falls_back_to_blocks(tmp_path, capsys):
    # --val-fraction 0.1 of one image is none: the anti-diagonal blocks are held out, not nothing
    folder = _real_folder(tmp_path / "r", size=96)
    train, val, summary = _load_real(_real_args(folder))
    assert len(train) == 6 and len(val) == 3 and summary["split"] == {"grid": 3, "val_blocks": [2, 4, 6]}
    assert "holding out blocks [2, 4, 6]" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="give --real-val-blocks with a --real-grid of 2 or more"):
        _load_real(_real_args(folder, real_grid=1))
    five = _real_folder(tmp_path / "five", size=64, n=5)
    train, val, summary = _load_real(_real_args(five, real_grid=2))
    assert len(train) == 10 and len(val) == 10 and summary["split"]["val_blocks"] == [1, 2]
    train, val, summary = _load_real(_real_args(five, val_fraction=0.4))  # 2 of 5 images held out
    assert len(train) == 3 and len(val) == 2 and len(summary["split"]["val_images"]) == 2


def test_real_split_refuses_to_hold_out_every_image(tmp_path):
    two = _real_folder(tmp_path / "two", size=64, n=2)
    for fraction in (1.0, 0.8):
        with pytest.raises(SystemExit, match="holds out all 2 image.* nothing left to train on"):
            _load_real(_real_args(two, val_fraction=fraction))


def test_real_mpp_is_a_fallback_for_folders_without_one(tmp_path):
    recorded = _real_folder(tmp_path / "r", mpp=0.4, size=64)
    assert _load_real(_real_args(recorded, real_mpp=0.25))[2]["mpp"] == 0.4  # the folder's dataset.json wins
    bare = _real_folder(tmp_path / "b", mpp=None, size=64)
    train, val, summary = _load_real(_real_args(bare, real_mpp=0.25))
    assert summary["mpp"] == 0.25 and train.mpp == val.mpp == 0.25


def test_grid_split_ignores_the_training_part_of_nuclei_cut_by_a_held_out_block(nest):
    train, val = grid_split(nest, 3, (2, 4, 6))
    inst = nest.instances[0]
    edges = [0, 500, 1000, 1500]
    cells = [
        (r * 3 + c, slice(edges[r], edges[r + 1]), slice(edges[c], edges[c + 1]))
        for r in range(3)
        for c in range(3)
    ]
    held_out = np.zeros(inst.shape, bool)
    for b, ys, xs in cells:
        held_out[ys, xs] = b in (2, 4, 6)
    val_ids = np.unique(inst[held_out])
    leaked = set()
    for k, (_, ys, xs) in enumerate(c for c in cells if c[0] not in (2, 4, 6)):
        original = inst[ys, xs]
        cut = np.isin(original, val_ids[val_ids > 0])
        # no pixel of a validation nucleus trains; every other pixel does (the crop has no ignore of its own)
        np.testing.assert_array_equal(train.ignore[k], cut)
        leaked |= set(np.unique(original[cut]).tolist())
    assert len(leaked) == 42  # of the 422 validation nuclei, cut by the edge of a held-out block
    assert not any(ig.any() for ig in val.ignore)


def test_mix_holds_the_share_when_the_second_set_is_larger():
    synth = synthetic_tiles(4, size=32, seed=1)
    real = NucleiTiles(synth.images * 5, synth.instances * 5, None, mpp=0.5)  # 20 tiles beside 4
    mixed = mix_tiles(synth, real, share=0.5, seed=3)
    assert len(mixed) == 40 and mixed_share(synth, real, 0.5) == 0.5  # the 4 labelled tiles 5 times each
    assert sum(im is synth.images[0] for im in mixed.images[:20]) == 5
    odd = mix_tiles(
        synth, real, share=0.6, seed=3
    )  # 20 real beside round(20 x 0.4 / 0.6) = 13 labelled draws
    assert len(odd) == 33 and mixed_share(synth, real, 0.6) == pytest.approx(20 / 33)
    assert [id(i) for i in mix_tiles(synth, real, 0.6, seed=3).images] == [
        id(i) for i in odd.images
    ]  # seeded
    # and a larger labelled part: 6 + round(6) draws of 4 tiles, every tile once and 2 drawn again
    six = synthetic_tiles(6, size=32, seed=2)
    small = NucleiTiles(synth.images, synth.instances, None, mpp=0.5)
    assert len(mix_tiles(six, small, share=0.5)) == 12 and mixed_share(six, small, 0.5) == 0.5
    with pytest.raises(ValueError, match="second .* tile set is empty"):
        mix_tiles(six, small.subset([]), share=0.5)
    with pytest.raises(ValueError, match="labelled tile set is empty"):
        mix_tiles(six.subset([]), small, share=0.5)


def test_mix_keeps_real_types_of_the_model_classes_beside_typeless_data():
    plain = synthetic_tiles(2, size=32, seed=1)
    plain = NucleiTiles(plain.images, plain.instances, None, mpp=0.5)  # a typeless --data folder
    typ = [np.where(i > 0, 3, 0).astype(np.uint8) for i in plain.instances]
    real = NucleiTiles(plain.images, plain.instances, typ, mpp=0.5, classes=PANNUKE)
    mixed = mix_tiles(plain, real, share=0.5, classes=PANNUKE)
    assert mixed.classes == PANNUKE and mixed.types[2] is real.types[0]
    assert (mixed.types[0][plain.instances[0] > 0] == UNKNOWN_TYPE).all()
    other = mix_tiles(plain, real, share=0.5, classes=("background", "tumour"))
    assert (other.types[2][plain.instances[0] > 0] == UNKNOWN_TYPE).all()


def _write(folder: Path, name: str, array: np.ndarray) -> None:
    Image.fromarray(array).save(folder / name)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: (f / "dataset.json").write_text("{not json"), "not valid JSON"),
        (lambda f: (f / "dataset.json").write_text("[0.5]"), "expected a JSON object"),
        (lambda f: (f / "dataset.json").write_text('{"classes": "background"}'), "'classes' must be a list"),
        (
            lambda f: (f / "dataset.json").write_text('{"classes": ["background", 1]}'),
            "'classes' must be a list",
        ),
        (lambda f: (f / "types" / "a0.png").unlink(), "no type map for a0.png"),
        (
            lambda f: _write(f / "types", "a0.png", np.zeros((10, 10), np.uint8)),
            r"types \(10, 10\) do not match",
        ),
        (
            lambda f: _write(f / "types", "a0.png", np.full((64, 64), 6, np.uint8)),
            "type 6 but dataset.json names 6",
        ),
    ],
)
def test_folder_loader_errors_name_the_problem(tmp_path, change, message):
    folder = _real_folder(tmp_path / "r", size=64)
    change(folder)
    with pytest.raises(DatasetError, match=message):
        load_dataset(folder)

"""`slidestream export --format clam`: files read back the way CLAM's and TRIDENT's dataset classes read them."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from slidestream.cli import main
from tiling import PatchStore


@pytest.fixture(scope="module")
def run_folder(synthetic_slide, tmp_path_factory):
    """A tile + features run over the synthetic slide: 64 px tiles at 1.0 mpp from a 0.25 mpp slide."""
    out = tmp_path_factory.mktemp("export") / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "1.0", "--size", "64", "-q"]) == 0
    )
    assert main(["features", str(out), "--encoder", "stain_stats", "--workers", "0", "-q"]) == 0
    return out


def test_clam_layout_reads_back_as_clam_does(run_folder, synthetic_slide, tmp_path, capsys):
    import h5py
    import openslide
    import torch

    out = tmp_path / "clam"
    assert main(["export", str(run_folder), "--format", "clam", "-o", str(out)]) == 0
    assert "synthetic: " in capsys.readouterr().out
    store = PatchStore.open(run_folder / "slides" / "synthetic" / "patches.zarr")
    features = store.features("stain_stats")[:].astype(np.float32)

    # CLAM's extract_features_fp: Dataset_All_Bags reads slide_id (with the extension) from the process list.
    process = pd.read_csv(out / "process_list_autogen.csv")
    assert process["slide_id"].tolist() == ["synthetic.svs"]
    bag_name = process["slide_id"][0].split(".svs")[0] + ".h5"
    assert process["n_patches"][0] == len(store)

    # CLAM's Whole_Slide_Bag_FP: coords with patch_level / patch_size, then read_region at that level.
    with h5py.File(out / "patches" / bag_name, "r") as f:
        coords = f["coords"][:]
        patch_level = int(f["coords"].attrs["patch_level"])
        patch_size = int(f["coords"].attrs["patch_size"])
        trident = dict(f["coords"].attrs)
    np.testing.assert_array_equal(coords, store.coords)
    assert patch_level > 0  # the synthetic slide has a level nearer 1.0 mpp than level 0: CLAM must use it
    assert trident["patch_size_level0"] == 256 and trident["target_magnification"] == pytest.approx(10.0)
    assert trident["overlap"] == 0
    with openslide.OpenSlide(str(synthetic_slide.path)) as wsi:
        assert wsi.level_downsamples[patch_level] * patch_size == pytest.approx(256, rel=0.01)
        for i in np.linspace(0, len(coords) - 1, 5).astype(int):
            img = wsi.read_region(tuple(int(v) for v in coords[i]), patch_level, (patch_size, patch_size))
            img = np.asarray(img.convert("RGB").resize((64, 64), Image.Resampling.BILINEAR), dtype=np.float32)
            assert np.abs(img - store.patches[i]).mean() < 0.5, f"tile {i}: CLAM would read other pixels"

    # CLAM's Generic_MIL_Dataset: torch.load(pt_files/<id>.pt), or h5_files/<id>.h5 features + coords.
    bag = torch.load(out / "features" / "pt_files" / "synthetic.pt")
    assert bag.dtype == torch.float32 and bag.shape == features.shape
    np.testing.assert_array_equal(bag.numpy(), features)
    with h5py.File(out / "features" / "h5_files" / "synthetic.h5", "r") as f:
        np.testing.assert_array_equal(f["features"][:], features)
        np.testing.assert_array_equal(f["coords"][:], store.coords)


def test_existing_files_are_refused_and_bad_input_named(run_folder, tmp_path, capsys):
    out = tmp_path / "clam"
    (out / "patches").mkdir(parents=True)
    theirs = out / "patches" / "synthetic.h5"
    theirs.write_bytes(b"not ours")
    assert main(["export", str(run_folder), "-o", str(out)]) == 2
    assert "synthetic.h5 exists" in capsys.readouterr().err and theirs.read_bytes() == b"not ours"
    assert not (out / "features").exists()  # refused before anything was written
    assert main(["export", str(run_folder), "-o", str(out), "--overwrite"]) == 0
    assert theirs.read_bytes() != b"not ours"
    assert main(["export", str(run_folder), "-o", str(tmp_path / "b"), "--features", "nope"]) == 1
    assert "no features named 'nope'" in capsys.readouterr().err
    assert main(["export", str(tmp_path / "missing"), "-o", str(tmp_path / "c")]) == 2
    assert "no such folder" in capsys.readouterr().err


def test_patch_size_is_the_box_clam_reads_at_patch_level(synthetic_slide, tmp_path, capsys):
    """At 0.8 mpp no level matches: CLAM must read a 205 px box at level 0 and resize it, as our tiler did."""
    import h5py
    import openslide

    run = tmp_path / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(run), "--mpp", "0.8", "--size", "64", "-q"]) == 0
    )
    assert main(["export", str(run), "-o", str(tmp_path / "clam")]) == 0
    assert "no features" in capsys.readouterr().out
    assert not (tmp_path / "clam" / "features").exists()
    store = PatchStore.open(run / "slides" / "synthetic" / "patches.zarr")
    with h5py.File(tmp_path / "clam" / "patches" / "synthetic.h5", "r") as f:
        coords, attrs = f["coords"][:], dict(f["coords"].attrs)
    assert (attrs["patch_level"], attrs["patch_size"]) == (0, round(64 * 0.8 / 0.25))
    with openslide.OpenSlide(str(synthetic_slide.path)) as wsi:
        for i in (0, len(coords) // 2, len(coords) - 1):
            box = (int(attrs["patch_size"]),) * 2
            img = wsi.read_region(tuple(int(v) for v in coords[i]), int(attrs["patch_level"]), box).convert(
                "RGB"
            )
            img = np.asarray(img.resize((64, 64), Image.Resampling.BOX), dtype=np.float32)
            assert np.abs(img - store.patches[i]).mean() < 4, f"tile {i}"


def test_partial_store_is_skipped_and_the_rest_exported(run_folder, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(run_folder, run)
    coords = np.array([[0, 0], [64, 0]])
    PatchStore.create(run / "slides" / "halfway" / "patches.zarr", coords, np.ones(2), np.zeros(2, bool),
                      {"tiling": {"size": 64}}, tile_size=64)  # fmt: skip
    out = tmp_path / "clam"
    assert main(["export", str(run), "-o", str(out)]) == 1
    captured = capsys.readouterr()
    assert "skipped: halfway: partial patch store" in captured.err
    assert (out / "patches" / "synthetic.h5").exists() and not (out / "patches" / "halfway.h5").exists()
    assert pd.read_csv(out / "process_list_autogen.csv")["slide_id"].tolist() == ["synthetic.svs"]

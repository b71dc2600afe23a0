import json

import numpy as np
import pytest

import nuclei
from nuclei.augment import AugmentConfig, augment, hed_jitter
from nuclei.datasets import cached_synthetic_tiles, synthetic_tiles
from nuclei.train import TrainConfig, losses, touching_pixels, train
from slidestream.cli import main

TINY = {"decoder_channels": (8, 8, 8, 8)}


def test_augment_keeps_image_and_labels_aligned():
    tiles = synthetic_tiles(1, size=128, seed=2)
    rng = np.random.default_rng(0)
    for _ in range(5):
        img, inst, typ = augment(tiles.images[0], tiles.instances[0], tiles.types[0], rng, AugmentConfig(crop=64,
                                 p_elastic=0.5))  # fmt: skip
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and inst.shape == typ.shape == (64, 64)
        assert ((inst > 0) == (typ > 0)).all()
        if (inst > 0).any() and (inst == 0).any():  # nuclei stay darker than their surroundings
            assert img.mean(-1)[inst > 0].mean() < img.mean(-1)[inst == 0].mean()


def _od_direction(pixels: np.ndarray) -> np.ndarray:
    od = -np.log((pixels.reshape(-1, 3).astype(np.float64) + 1) / 256).mean(0)
    return od / np.linalg.norm(od)


def test_stain_hue_jitter_turns_each_stain_and_keeps_its_amount():
    from skimage.color import combine_stains, rgb_from_hed

    hed = np.zeros((32, 64, 3))
    hed[:, :32, 0], hed[:, 32:, 1] = 0.08, 0.06  # hematoxylin left, eosin right
    image = (np.clip(combine_stains(hed, rgb_from_hed), 0, 1) * 255 + 0.5).astype(np.uint8)
    same = hed_jitter(image, np.random.default_rng(0), sigma=0, bias=0, hue=0)
    assert np.abs(same.astype(int) - image).max() <= 2  # no jitter asked: the image comes back
    turns = []
    for seed in range(8):
        out = hed_jitter(image, np.random.default_rng(seed), sigma=0, bias=0, hue=0.08)
        for half in (slice(0, 32), slice(32, 64)):
            a, b = _od_direction(image[:, half]), _od_direction(out[:, half])
            turns.append(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))
            amount = (
                np.log((out[:, half].astype(float) + 1) / 256).sum()
                / np.log((image[:, half] + 1.0) / 256).sum()
            )
            assert 0.6 < amount < 1.6  # the stain's amount is kept, only its hue changes
    assert np.median(turns) > 2 and len(set(np.round(turns, 3))) == len(turns)  # each draw its own hue
    assert AugmentConfig().hed_hue > 0  # and training uses it by default


def test_touching_pixels_are_the_borders_between_nuclei():
    inst = np.zeros((10, 16), np.int32)
    inst[2:8, 2:7], inst[2:8, 7:12] = 1, 2  # two nuclei sharing the edge between columns 6 and 7
    inst[2:8, 14:16] = 3  # one alone, 2 px of background from nucleus 2
    touching = touching_pixels(inst)
    assert touching[2:8, 5:9].all() and not touching[:, :5].any() and not touching[:, 10:].any()
    assert not touching[inst == 0].any() and not touching[inst == 3].any()
    nucleus_three = inst.copy()
    nucleus_three[2:8, 13] = 3  # now 1 px from nucleus 2: the facing columns of both touch
    assert touching_pixels(nucleus_three)[2:8, 11].all() and touching_pixels(nucleus_three)[2:8, 13].all()


def test_hv_weight_scales_only_the_hv_terms():
    import torch

    from nuclei.model import NucleiOutput

    g = torch.Generator().manual_seed(0)
    fg = (torch.rand(1, 1, 32, 32, generator=g) > 0.5).float()
    hv, types = torch.rand(1, 2, 32, 32, generator=g) * 2 - 1, torch.zeros(1, 32, 32, dtype=torch.long)
    out = NucleiOutput(logits=torch.randn(1, 1, 32, 32, generator=g), hv=torch.rand(1, 2, 32, 32, generator=g) * 2 - 1,
                       types=None)  # fmt: skip
    plain = losses(out, fg, hv, types, 0.5)
    ones = losses(out, fg, hv, types, 0.5, hv_weight=torch.ones_like(fg))
    heavy = losses(out, fg, hv, types, 0.5, hv_weight=torch.full_like(fg, 3.0))
    for k in ("bce", "dice", "mse", "msge"):
        assert torch.isclose(plain[k], ones[k]), k
    assert torch.isclose(heavy["mse"], 3 * plain["mse"]) and torch.isclose(heavy["msge"], 3 * plain["msge"])
    assert torch.isclose(heavy["bce"], plain["bce"]) and torch.isclose(heavy["dice"], plain["dice"])


def test_train_writes_best_model_and_history(tmp_path):
    tiles = synthetic_tiles(4, size=64, seed=3)
    val = synthetic_tiles(1, size=64, seed=4)
    cfg = TrainConfig(epochs=2, batch_size=2, steps_per_epoch=1, augment=AugmentConfig(crop=64), loader_workers=0,
                      device="cpu", boundary_weight=2.0)  # fmt: skip
    history = train(
        tiles, cfg, tmp_path / "m", val=val, model_config=nuclei.ModelConfig(**TINY), progress=False
    )
    assert [h["epoch"] for h in history] == [1, 2]
    assert {"loss_total", "loss_msge", "val_pq", "val_f1", "val_aji"} <= set(history[0])
    model = nuclei.load_model(tmp_path / "m")
    prov = model.provenance
    assert prov["n_train_tiles"] == 4 and prov["train_source"] == "synthetic(seed=3)" and "val" in prov
    assert json.loads((tmp_path / "m" / "history.json").read_text()) == history
    assert (tmp_path / "m" / "last" / "model.safetensors").is_file()


def test_tile_cache_reused(tmp_path):
    a = cached_synthetic_tiles(tmp_path / "c.npz", 2, size=64, seed=1)
    mtime = (tmp_path / "c.npz").stat().st_mtime_ns
    b = cached_synthetic_tiles(tmp_path / "c.npz", 2, size=64, seed=1)
    assert (tmp_path / "c.npz").stat().st_mtime_ns == mtime
    np.testing.assert_array_equal(a.instances[1], b.instances[1])


def test_cli_train_and_segment(tmp_path, capsys):
    out = tmp_path / "model"
    rc = main(["nuclei", "train", "--data", "synthetic", "--n-synthetic", "2", "--n-val", "1", "--epochs", "1",
               "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "64", "--workers", "0", "--device", "cpu",
               "-q", "-o", str(out)])  # fmt: skip
    assert rc == 0 and (out / "config.json").is_file()
    assert "val_pq" in capsys.readouterr().out
    from PIL import Image

    Image.fromarray(synthetic_tiles(1, size=96, seed=9).images[0]).save(tmp_path / "tile.png")
    rc = main(["nuclei", "segment", str(tmp_path / "tile.png"), "--mpp", "0.5", "--model", str(out),
               "--device", "cpu", "-o", str(tmp_path / "labels.tif")])  # fmt: skip
    assert rc == 0
    import tifffile

    labels = tifffile.imread(tmp_path / "labels.tif")
    assert labels.shape == (96, 96) and labels.dtype == np.int32


def test_cli_train_bad_crop(tmp_path):
    with pytest.raises(SystemExit, match="multiple of 32"):
        main(["nuclei", "train", "--data", "synthetic", "--crop", "50", "-o", str(tmp_path / "m")])


def test_foreign_type_classes_do_not_train_the_type_head(tmp_path):
    """CoNSeP types (1-7) are not PanNuke's: the model trains on the instances and leaves types alone."""
    from nuclei.datasets import NucleiTiles
    from nuclei.datasets.consep import CONSEP_CLASSES

    base = synthetic_tiles(2, size=64, seed=6)
    types = [np.where(i > 0, 7, 0).astype(np.uint8) for i in base.instances]
    tiles = NucleiTiles(base.images, base.instances, types, mpp=0.5, classes=CONSEP_CLASSES)
    cfg = TrainConfig(epochs=1, batch_size=2, steps_per_epoch=1, augment=AugmentConfig(crop=64), loader_workers=0,
                      device="cpu")  # fmt: skip
    history = train(tiles, cfg, tmp_path / "m", model_config=nuclei.ModelConfig(**TINY), progress=False)
    assert "loss_type_ce" not in history[0]


def test_synthetic_tiles_are_the_same_rendered_in_parallel():
    one = synthetic_tiles(5, size=64, seed=3)
    two = synthetic_tiles(5, size=64, seed=3, workers=2)
    for a, b in zip(
        one.images + one.instances + one.types, two.images + two.instances + two.types, strict=True
    ):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="workers"):
        synthetic_tiles(1, size=64, workers=0)


def test_transfer_weights_into_a_full_resolution_model():
    import torch

    torch.manual_seed(0)
    source = nuclei.create_model(**TINY)
    target = nuclei.create_model(decoder_channels=(8, 8, 8, 8, 8), full_resolution=True)
    fresh = nuclei.model.transfer_weights(target, source)
    assert {k.split(".")[0] + "." + k.split(".")[1] for k in fresh} == {"stem.0", "stem.1", "decoder.4"}
    mine, theirs = target.state_dict(), source.state_dict()
    for k in theirs:  # everything else came across: encoder, the four decoder stages, the heads (same width)
        assert torch.equal(mine[k], theirs[k]), k


def test_cli_train_full_resolution_from_a_stride_2_init(tmp_path, capsys):
    tiles = synthetic_tiles(2, size=64, seed=3)
    cfg = TrainConfig(epochs=1, batch_size=1, steps_per_epoch=1, augment=AugmentConfig(crop=64), loader_workers=0,
                      device="cpu")  # fmt: skip
    train(tiles, cfg, tmp_path / "init", model_config=nuclei.ModelConfig(**TINY), progress=False)
    common = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "2", "--n-val", "1", "--epochs", "1",
              "--steps-per-epoch", "1", "--batch-size", "1", "--crop", "64", "--workers", "0", "--device", "cpu",
              "--init", str(tmp_path / "init"), "--render-workers", "2", "-q"]  # fmt: skip
    assert main([*common, "--full-resolution", "--amp", "-o", str(tmp_path / "full")]) == 0
    assert "tensors start fresh (decoder.4, stem)" in capsys.readouterr().out
    config = nuclei.load_model(tmp_path / "full").config
    assert config.full_resolution and config.decoder_channels == (
        8,
        8,
        8,
        8,
        8,
    )  # the init's widths, extended
    with pytest.raises(SystemExit, match="decoder_channels needs 5 entries"):
        main([*common, "--full-resolution", "--decoder-channels", "8", "8", "8", "8", "8", "8", "-o",
              str(tmp_path / "bad")])  # fmt: skip


def test_fine_tuning_into_a_changed_architecture_keeps_the_thresholds(tmp_path, monkeypatch, capsys):
    from dataclasses import replace

    import nuclei.train
    from nuclei.model import read_postprocess, thresholds, write_postprocess
    from nuclei.postprocess import PostprocessConfig

    tiles, val = synthetic_tiles(2, size=64, seed=3), synthetic_tiles(1, size=64, seed=4)
    cfg = TrainConfig(epochs=1, batch_size=1, steps_per_epoch=1, augment=AugmentConfig(crop=64), loader_workers=0,
                      device="cpu")  # fmt: skip
    start = nuclei.ModelConfig(**TINY)
    train(tiles, cfg, tmp_path / "init", model_config=start, progress=False)
    chosen = PostprocessConfig(foreground=0.6, centre=0.3, min_size=7, min_marker=3)
    write_postprocess(tmp_path / "init", chosen)
    used = []
    real_predict = nuclei.train.predict_instances
    monkeypatch.setattr(nuclei.train, "predict_instances",
                        lambda model, *a, **k: used.append(thresholds(model)) or real_predict(model, *a, **k))  # fmt: skip
    wider = replace(start, full_resolution=True, decoder_channels=(*start.decoder_channels, 8))
    train(tiles, replace(cfg, init=str(tmp_path / "init")), tmp_path / "full", val=val, model_config=wider,
          progress=False)  # fmt: skip
    assert read_postprocess(tmp_path / "full") == chosen
    assert used and set(used) == {chosen}  # validation scored the epochs with them
    used.clear()
    train(tiles, replace(cfg, init=str(tmp_path / "init")), tmp_path / "mpp", val=val,
          model_config=replace(start, mpp=start.mpp * 2), progress=False)  # fmt: skip
    assert "thresholds of the starting model dropped" in capsys.readouterr().out
    assert read_postprocess(tmp_path / "mpp") is None and set(used) == {PostprocessConfig()}

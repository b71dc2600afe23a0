import json
from pathlib import Path

import numpy as np
import pytest
import torch

import nuclei
from nuclei.augment import AugmentConfig
from nuclei.datasets import NucleiTiles, synthetic_tiles
from nuclei.datasets.base import UNKNOWN_TYPE
from nuclei.model import NucleiOutput
from nuclei.selftrain import PseudoLabelConfig, mix_tiles, pseudo_label, pseudo_labels_from_maps
from nuclei.targets import hv_maps
from nuclei.train import _TrainSet, losses
from slidestream.cli import main

CMU = Path(__file__).parents[1] / "data" / "CMU-1-Small-Region.svs"
TINY = {"decoder_channels": (8, 8, 8, 8)}


def _disc(shape, cy, cx, r):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def test_pseudo_labels_keep_confident_nuclei_and_ignore_the_rest():
    shape = (64, 96)
    sure, faint, split = _disc(shape, 16, 16, 6), _disc(shape, 16, 60, 6), _disc(shape, 46, 40, 6)
    truth = sure * 1 + faint * 2 + split * 3
    probs = np.full((8, *shape), 0.02)
    probs[:, sure] = 0.95
    probs[:, faint] = 0.6  # found (>= 0.5) but not confident
    probs[:4, split] = 0.95  # the views disagree
    probs[4:, split] = 0.55
    labels, ignore = pseudo_labels_from_maps(probs, hv_maps(truth.astype(np.int32)))
    assert labels.max() == 1 and (labels[sure] == 1).mean() > 0.9
    assert not ignore[sure].any() and ignore[faint].all() and ignore[split].all()
    assert ignore[_disc(shape, 16, 60, 7)].all()  # the dropped nucleus' margin too
    far = np.ones(shape, bool)
    far[:, 30:] = False  # the split nucleus starts at x = 34
    far[sure | _disc(shape, 16, 16, 9)] = False
    assert not ignore[far].any() and (labels[far] == 0).all()  # confident background stays background


def test_pseudo_labels_drop_dark_masses_cut_into_pieces():
    # a confident 40 x 40 mass that the watershed cuts into four squares (keratin, a fold), and one nucleus
    truth = np.zeros((64, 96), np.int32)
    truth[4:24, 4:24], truth[4:24, 24:44], truth[24:44, 4:24], truth[24:44, 24:44] = 1, 2, 3, 4
    nucleus = _disc(truth.shape, 30, 75, 6)
    truth[nucleus] = 5
    probs = np.where(truth > 0, 0.95, 0.02)[None].repeat(8, 0)
    config = PseudoLabelConfig(max_blob=1000)
    labels, ignore = pseudo_labels_from_maps(probs, hv_maps(truth), config)
    assert labels.max() == 1 and (labels[nucleus] == 1).mean() > 0.9
    assert ignore[4:44, 4:44].all()
    # the same mass, smaller than max_blob: its pieces are kept (they are convex and confident)
    labels, _ = pseudo_labels_from_maps(probs, hv_maps(truth), PseudoLabelConfig(max_blob=2000))
    assert labels.max() == 5


def test_pseudo_labels_check_shapes():
    with pytest.raises(ValueError, match=r"\(V, H, W\)"):
        pseudo_labels_from_maps(np.zeros((8, 8)), np.zeros((2, 8, 8)))
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        pseudo_label(None, np.zeros((32, 32), np.uint8))  # checked before the model is used


def test_losses_skip_ignored_pixels():
    torch.manual_seed(0)
    fg = (torch.rand(1, 1, 32, 32) > 0.7).float()
    hv = torch.rand(1, 2, 32, 32) * 2 - 1
    types = torch.zeros(1, 32, 32, dtype=torch.long)
    valid = torch.ones(1, 1, 32, 32)
    valid[..., :, 16:] = 0
    types[..., :, 16:] = UNKNOWN_TYPE

    def out(noise_right: float) -> NucleiOutput:
        g = torch.Generator().manual_seed(1)
        logits, hvp = torch.randn(1, 1, 32, 32, generator=g), torch.rand(1, 2, 32, 32, generator=g) * 2 - 1
        logits[..., 16:] += noise_right
        hvp[..., 16:] = hvp[..., 16:] * 0 + noise_right / 10  # stays inside [-1, 1]
        return NucleiOutput(logits=logits, hv=hvp, types=torch.randn(1, 6, 32, 32, generator=g))

    fg_r, hv_r = fg.clone(), hv.clone()
    fg_r[..., 16:] = 0  # what a pseudo-labelled tile holds in ignored pixels: no nucleus, no HV
    hv_r[..., 16:] = 0
    a = losses(out(0.0), fg_r, hv_r, types, 0.5, valid)
    b = losses(out(5.0), fg_r, hv_r, types, 0.5, valid)
    for k in ("bce", "dice", "mse", "msge", "total"):
        assert torch.isclose(a[k], b[k], atol=1e-6), k
    # the same change where pixels are labelled does change the loss
    c = losses(out(5.0), fg_r, hv_r, types, 0.5, None)
    assert not torch.isclose(a["bce"], c["bce"])
    # all valid: the same as before masks existed (plain means)
    d = losses(out(0.0), fg, hv, torch.zeros_like(types), 0.5, torch.ones_like(valid))
    e = losses(out(0.0), fg, hv, torch.zeros_like(types), 0.5, None)
    assert torch.isclose(d["total"], e["total"])
    o = out(0.0)
    assert torch.isclose(e["mse"], torch.nn.functional.mse_loss(o.hv, hv))


def test_train_set_carries_ignore_through_augmentation():
    tiles = synthetic_tiles(1, size=96, seed=2)
    ignore = np.zeros((96, 96), bool)
    ignore[:, :48] = True
    masked = NucleiTiles(tiles.images, tiles.instances, tiles.types, mpp=0.5, classes=tiles.classes,
                         ignore=[ignore])  # fmt: skip
    ds = _TrainSet(masked, AugmentConfig(crop=96, p_scale=0, p_elastic=0), seed=0, length=4, use_types=True)
    for i in range(4):
        img, fg, hv, typ, valid, _ = ds[i]
        assert valid.shape == fg.shape == (1, 96, 96)
        assert 0.45 < float(valid.mean()) < 0.55  # half the tile, whichever way it was turned
        assert (fg[valid == 0] == 0).all() and (hv[:, valid[0] == 0] == 0).all()
        assert (typ[valid[0] == 0] == UNKNOWN_TYPE).all()
    with pytest.raises(ValueError, match="ignore 0"):
        NucleiTiles(tiles.images, tiles.instances, ignore=[ignore[:10]])


def test_mix_tiles_draws_the_asked_share():
    synth = synthetic_tiles(6, size=64, seed=1)
    pseudo = NucleiTiles(
        synth.images[:2], synth.instances[:2], None, mpp=0.5, ignore=[np.ones((64, 64), bool)] * 2
    )
    mixed = mix_tiles(synth, pseudo, share=0.5)
    assert len(mixed) == 6 + 6 and len(mixed.ignore) == 12
    assert not any(m.any() for m in mixed.ignore[:6]) and all(m.all() for m in mixed.ignore[6:])
    pseudo_nuclei = mixed.instances[6] > 0  # pseudo nuclei have no known type (not background, not a class)
    assert pseudo_nuclei.any() and (mixed.types[6][pseudo_nuclei] == UNKNOWN_TYPE).all()
    with pytest.raises(ValueError, match="share"):
        mix_tiles(synth, pseudo, share=1.0)


def test_cli_self_train_on_a_real_slide(tmp_path, monkeypatch, capsys):
    import nuclei.train

    teacher = tmp_path / "teacher"
    nuclei.save_model(nuclei.create_model(**TINY), teacher)
    loads = []
    real = nuclei.load_model

    def counted(path, *args, **kwargs):
        loads.append(str(path))
        return real(path, *args, **kwargs)

    monkeypatch.setattr(nuclei, "load_model", counted)
    monkeypatch.setattr(nuclei.train, "load_model", counted)
    out = tmp_path / "student"
    rc = main(["nuclei", "train", "--data", "synthetic", "--n-synthetic", "2", "--n-val", "1", "--epochs", "1",
               "--steps-per-epoch", "1", "--batch-size", "2", "--crop", "64", "--workers", "0", "--device", "cpu",
               "--init", str(teacher), "--self-train", str(CMU), "--self-train-tiles", "1", "-q", "-o", str(out)])  # fmt: skip
    assert rc == 0
    assert loads == [str(teacher)]  # the teacher is the starting point too: loaded once
    assert "self-training: 1 tiles" in capsys.readouterr().out
    prov = json.loads((out / "config.json").read_text())["provenance"]
    assert prov["train_config"]["init"] == str(teacher)
    st = prov["self_train"]
    assert st["tiles"] == 1 and st["slides"] == [str(CMU)] and 0 <= st["ignored_pixel_share"] <= 1
    assert "pseudo-labels(CMU-1-Small-Region.svs)" in prov["train_source"]


def test_untyped_tiles_give_unknown_type_on_nuclei():
    synth = synthetic_tiles(1, size=64, seed=1)
    untyped = NucleiTiles(synth.images, synth.instances, None, mpp=0.5)
    types = untyped.type_map(0)
    assert (synth.instances[0] > 0).any() and types.dtype == np.uint8
    assert (types[synth.instances[0] > 0] == UNKNOWN_TYPE).all() and (
        types[synth.instances[0] == 0] == 0
    ).all()


def test_pseudo_labels_take_eight_forward_passes(tiny_model, monkeypatch):
    calls = []
    forward = type(tiny_model).forward
    monkeypatch.setattr(type(tiny_model), "forward", lambda self, x: calls.append(len(x)) or forward(self, x))
    image = synthetic_tiles(1, size=64, seed=1).images[0]
    pseudo_label(tiny_model, image)
    assert sum(calls) == 8  # the eight dihedral views; the HV maps come from the four flips among them


def test_pseudo_labels_use_the_teachers_own_thresholds(tiny_model, monkeypatch):
    import nuclei.selftrain as selftrain

    seen = []
    real = selftrain.pseudo_labels_from_maps
    monkeypatch.setattr(selftrain, "pseudo_labels_from_maps",
                        lambda probs, hv, config, post=None: seen.append(post) or real(probs, hv, config, post))  # fmt: skip
    monkeypatch.setattr(tiny_model, "postprocess", nuclei.PostprocessConfig(min_size=123), raising=False)
    pseudo_label(tiny_model, synthetic_tiles(1, size=64, seed=1).images[0])
    assert seen == [nuclei.PostprocessConfig(min_size=123)]  # the folder's thresholds, not the defaults


@pytest.mark.parametrize("slide", ["missing.svs", "not_a_slide.txt"])
def test_self_train_slide_that_cannot_be_read_fails_first(tmp_path, capsys, slide):
    (tmp_path / "not_a_slide.txt").write_text("hello")
    args = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "2", "--n-val", "1", "--epochs", "1",
            "--workers", "0", "--self-train", str(CMU), str(tmp_path / slide), "-q", "-o", str(tmp_path / "m")]  # fmt: skip
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "--self-train" in err and slide in err
    assert not (tmp_path / "m" / "config.json").exists()


def test_self_train_teacher_at_another_mpp_is_refused(tmp_path):
    teacher = tmp_path / "teacher"
    nuclei.save_model(nuclei.create_model(**TINY, mpp=0.25), teacher)
    args = ["nuclei", "train", "--data", "synthetic", "--n-synthetic", "2", "--n-val", "1", "--epochs", "1",
            "--workers", "0", "--init", str(teacher), "--self-train", str(CMU), "-q", "-o", str(tmp_path / "m")]  # fmt: skip
    with pytest.raises(SystemExit, match=r"teacher works at 0\.25 um/px, the training data is at 0\.5"):
        main(args)


def test_pseudo_label_slides_and_mix_tiles_refuse_bad_input(tiny_model):
    from nuclei.selftrain import pseudo_label_slides

    with pytest.raises(ValueError, match="no tiles to pseudo-label"):
        pseudo_label_slides(tiny_model, [])
    synth = synthetic_tiles(2, size=64, seed=1)
    other = NucleiTiles(synth.images, synth.instances, None, mpp=0.25)
    with pytest.raises(ValueError, match=r"labelled tiles are at 0\.5 um/px, the second set at 0\.25"):
        mix_tiles(synth, other, share=0.3)
    with pytest.raises(ValueError, match="share must be between 0 and 1"):
        mix_tiles(synth, synth, share=0.0)

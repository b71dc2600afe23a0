import json

import numpy as np
import pytest
import torch

import nuclei
from nuclei.inference import predict_maps
from nuclei.model import ModelConfig
from nuclei.selftrain import _views


def test_forward_shapes(tiny_model):
    out = tiny_model(torch.zeros(2, 3, 64, 96))
    assert out.logits.shape == (2, 1, 64, 96)
    assert out.hv.shape == (2, 2, 64, 96) and out.hv.abs().max() <= 1
    assert out.types.shape == (2, 6, 64, 96)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\) with H, W multiples of 32"):
        tiny_model(torch.zeros(1, 3, 50, 64))
    no_types = nuclei.create_model(decoder_channels=(16, 16, 8, 8), n_types=0, classes=()).eval()
    assert no_types(torch.zeros(1, 3, 32, 32)).types is None
    full = nuclei.create_model(decoder_channels=(16, 16, 8, 8, 8), full_resolution=True).eval()
    assert full(torch.zeros(1, 3, 64, 32)).hv.shape == (1, 2, 64, 32)


def test_predict_maps_tiles_agree_with_one_pass(tiny_model):
    img = np.random.default_rng(0).integers(0, 255, (150, 200, 3), dtype=np.uint8)
    p1, hv1 = predict_maps(tiny_model, img, tile=512)
    p2, hv2 = predict_maps(tiny_model, img, tile=96, margin=16)
    assert p1.shape == (150, 200) and hv1.shape == (2, 150, 200)
    # Tiled inference differs only near tile borders (limited receptive field, padding): mostly equal.
    assert np.mean(np.abs(p1 - p2) < 0.05) > 0.6


def test_save_load_roundtrip(tmp_path, tiny_model):
    nuclei.save_model(tiny_model, tmp_path / "m", provenance={"note": "test"})
    loaded = nuclei.load_model(tmp_path / "m")
    assert loaded.config == tiny_model.config and loaded.provenance == {"note": "test"}
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(loaded(x).logits, tiny_model(x).logits)
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["format"] == "slidestream.nuclei/1" and meta["config"]["mpp"] == 0.5
    assert not list((tmp_path / "m").glob("*.tmp"))


def test_weights_for_another_architecture_refused(tmp_path, tiny_model):
    nuclei.save_model(tiny_model, tmp_path / "m")
    cfg_path = tmp_path / "m" / "config.json"
    meta = json.loads(cfg_path.read_text())
    meta["config"]["decoder_channels"] = [32, 16, 8, 8]
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(nuclei.ModelError, match=r"wrong shapes \['decoder.0"):
        nuclei.load_model(tmp_path / "m")
    meta["config"]["encoder"] = "resnet10t"
    cfg_path.write_text(json.dumps(meta))
    with pytest.raises(
        nuclei.ModelError, match=r"does not fit architecture 'resnet10t': missing keys \['encoder"
    ):
        nuclei.load_model(tmp_path / "m")


def test_bad_config_and_missing_files(tmp_path):
    with pytest.raises(nuclei.ModelError, match="unknown ModelConfig fields"):
        nuclei.create_model(widht=3)
    with pytest.raises(ValueError, match="decoder_channels needs 4"):
        ModelConfig(decoder_channels=(8, 8))
    with pytest.raises(nuclei.ModelError, match="cannot build timm encoder"):
        nuclei.create_model(encoder="no_such_net")
    with pytest.raises(nuclei.ModelError, match="config.json is missing"):
        nuclei.load_model(tmp_path)


def test_tta_maps_are_flip_equivariant(tiny_model):
    img = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    p, hv = predict_maps(tiny_model, img, tta=True)
    pf, hvf = predict_maps(tiny_model, np.ascontiguousarray(img[:, ::-1]), tta=True)
    np.testing.assert_allclose(pf[:, ::-1], p, atol=1e-5)
    np.testing.assert_allclose(-hvf[0][:, ::-1], hv[0], atol=1e-5)  # x offsets change sign
    np.testing.assert_allclose(hvf[1][:, ::-1], hv[1], atol=1e-5)
    pu, hvu = predict_maps(tiny_model, np.ascontiguousarray(img[::-1]), tta=True)
    np.testing.assert_allclose(pu[::-1], p, atol=1e-5)
    np.testing.assert_allclose(hvu[0][::-1], hv[0], atol=1e-5)
    np.testing.assert_allclose(-hvu[1][::-1], hv[1], atol=1e-5)  # y offsets change sign
    # Against self-training's independent flip code: its four flip views (0 and 180 degrees, each with and
    # without a left-right flip) are the same four images.
    probs, hv_views = _views(tiny_model, img, "cpu")
    np.testing.assert_allclose(probs[[0, 1, 4, 5]].mean(0), p, atol=1e-5)
    np.testing.assert_allclose(hv_views, hv, atol=1e-5)

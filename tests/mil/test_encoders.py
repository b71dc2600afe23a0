"""Encoders: the registry, timm models with local weights, clear errors, and the weight-free stain encoder."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import mil
from mil.encoders import EncoderError

pytestmark = pytest.mark.filterwarnings("ignore:encoder .* RANDOM WEIGHTS")


def test_registry_lists_builtins():
    assert "stain_stats" in mil.list_encoders()


@pytest.mark.parametrize("name", ["stain_stats", "test_vit", "test_convnext", "test_efficientnet"])
def test_encoders_map_uint8_batches_to_features(name):
    encoder = mil.create_encoder(name, random_weights=name != "stain_stats")
    images = torch.randint(0, 256, (3, 3, 96, 96), dtype=torch.uint8)
    with torch.inference_mode():
        out = encoder(images)
    assert out.shape == (3, encoder.dim) and torch.isfinite(out).all()
    described = encoder.describe()
    assert described["encoder"] == name and described["dim"] == encoder.dim


def test_timm_preprocessing_comes_from_the_pretrained_config():
    encoder = mil.create_encoder("test_efficientnet", random_weights=True)
    assert encoder.input_size == 160
    np.testing.assert_allclose(encoder.mean.flatten().numpy(), [0.485, 0.456, 0.406], rtol=1e-6)
    x = encoder.preprocess(torch.full((1, 3, 64, 64), 255, dtype=torch.uint8))
    assert x.shape == (1, 3, 160, 160)
    np.testing.assert_allclose(
        x[0, :, 0, 0].numpy(), (1 - encoder.mean.flatten()) / encoder.std.flatten(), rtol=1e-5
    )


def test_timm_encoders_need_weights():
    with pytest.raises(EncoderError, match=r"^resnet50 needs --weights FILE \(a random initialisation gives "
                       r"meaningless features\); pass --random-weights to use one anyway, for testing"):  # fmt: skip
        mil.create_encoder("resnet50")


def test_random_init_is_reproducible_and_warns():
    with pytest.warns(UserWarning, match="random initialisation"):
        a = mil.create_encoder("test_vit", random_weights=True)
    b = mil.create_encoder("test_vit", random_weights=True)
    assert a.random_weights and a.weights_hash == "random-init-seed-0"
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_timm_keyword_arguments_shape_the_model():
    plain = mil.create_encoder("test_vit", random_weights=True)
    scaled = mil.create_encoder("test_vit", random_weights=True, init_values=1e-5)
    assert (
        "blocks.0.ls1.gamma" in scaled.model.state_dict()
        and "blocks.0.ls1.gamma" not in plain.model.state_dict()
    )
    assert scaled.describe()["arguments"] == {"init_values": 1e-5} != plain.describe()["arguments"]


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_local_weights_load(tmp_path, suffix):
    source = mil.create_encoder("test_convnext", random_weights=True)
    state = {k: v.clone() + 0.01 for k, v in source.model.state_dict().items()}
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)  # wrapped + prefixed
    loaded = mil.create_encoder("test_convnext", weights=path)
    for key, value in loaded.model.state_dict().items():
        torch.testing.assert_close(value, state[key])
    assert loaded.weights_hash != source.weights_hash and len(loaded.weights_hash) == 16


def test_mismatched_weights_name_the_keys(tmp_path):
    state = mil.create_encoder("test_convnext", random_weights=True).model.state_dict()
    state.pop("stem.0.weight")
    state["extra.layer"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(
        EncoderError, match=r"missing keys \[stem\.0\.weight\].*unexpected keys \[extra\.layer\]"
    ):
        mil.create_encoder("test_convnext", weights=tmp_path / "bad.pth")


def test_bad_names_and_files(tmp_path):
    with pytest.raises(EncoderError, match="unknown encoder 'no_such_net'"):
        mil.create_encoder("no_such_net")
    with pytest.raises(EncoderError, match="no such weights file"):
        mil.create_encoder("test_vit", weights=tmp_path / "missing.safetensors")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(EncoderError, match="cannot read weights"):
        mil.create_encoder("test_vit", weights=tmp_path / "junk.pth")


def test_hub_names_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE.*weights=FILE"):
        mil.create_encoder("hf-hub:MahmoodLab/UNI")
    with pytest.raises(EncoderError, match="HF_HUB_OFFLINE"):
        mil.create_encoder("resnet18", pretrained=True)
    assert time.perf_counter() - start < 2


def test_stain_stats_separates_glass_stroma_and_nuclei():
    from wsi.synthetic import SyntheticSpec, render_region

    spec = SyntheticSpec(8000, 8000, seed=1, tumor=True)
    glass = render_region(spec, (0, 0), (128, 128))[0]  # the slide border is glass
    encoder = mil.create_encoder("stain_stats")
    from wsi.synthetic import nuclei_in_box

    nuc = nuclei_in_box(spec, (0, 0, 8000, 8000))
    tumor_xy = (int(nuc.cx[nuc.tumor][0]) - 64, int(nuc.cy[nuc.tumor][0]) - 64)
    stroma_xy = (int(nuc.cx[~nuc.tumor][0]) - 64, int(nuc.cy[~nuc.tumor][0]) - 64)
    tiles = [
        glass,
        render_region(spec, stroma_xy, (128, 128))[0],
        render_region(spec, tumor_xy, (128, 128))[0],
    ]
    batch = torch.from_numpy(np.stack(tiles)).permute(0, 3, 1, 2)
    with torch.inference_mode():
        f = encoder(batch)
    h_mean, tissue = f[:, 0], f[:, 15]
    assert tissue[0] < 0.05 < 0.5 < tissue[1]
    assert h_mean[2] > h_mean[1] > h_mean[0]

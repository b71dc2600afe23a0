"""Weights for the wrong architecture: the missing and unexpected keys named (a few of each, with counts), and
the timm architecture the file fits when it is another size of the one asked for."""

from __future__ import annotations

import pytest
import torch

import mil
from mil._timm_import import import_timm
from mil.encoders import EncoderError
from mil.encoders.loading import _near_names
from mil.encoders.weights import KeyCheck


@pytest.fixture(scope="module")
def resnet10t_weights(tmp_path_factory):
    """A state dict of timm's resnet10t (random init) saved as a .pth file."""
    path = tmp_path_factory.mktemp("weights") / "resnet10t.pth"
    torch.save(import_timm().create_model("resnet10t", num_classes=0).state_dict(), path)
    return path


def test_weights_of_another_size_name_the_architecture_they_fit(resnet10t_weights):
    path = resnet10t_weights
    with pytest.raises(EncoderError) as exc:
        mil.create_encoder("resnet14t", weights=path)
    message = str(exc.value)
    assert message.startswith(f"{path}: weights do not fit timm 'resnet14t'")
    assert "missing keys [layer" in message and "in all)" in message  # a few keys and their count
    assert "unexpected keys" not in message  # no empty lists
    assert message.endswith("the file fits timm architecture resnet10t: use --encoder resnet10t")


def test_weights_of_another_family_get_no_guess(resnet10t_weights):
    path = resnet10t_weights
    with pytest.raises(EncoderError) as exc:
        mil.create_encoder("vit_tiny_patch16_224", weights=path)
    message = str(exc.value)
    assert "missing keys [cls_token" in message and "unexpected keys [conv1.0.weight" in message
    assert "fits timm architecture" not in message


def test_near_names_put_other_sizes_first():
    names = ["resnet18", "resnet34d", "resnet50", "resnetblur18", "vit_tiny_patch16_224", "vit_small_patch16_384",
             "vit_small_patch16_224_dino"]  # fmt: skip
    assert _near_names("resnet34", names, 3) == ["resnet18", "resnet50", "resnet34d"]
    assert sorted(_near_names("vit_small_patch16_224", names, 6)) == [
        "vit_small_patch16_384",
        "vit_tiny_patch16_224",
    ]


def test_key_check_message_counts():
    check = KeyCheck([f"m{i}" for i in range(10)], [], ["w (file (1,), model (2,))"])
    assert (
        check.message()
        == "missing keys [m0, m1, m2, m3, m4, m5 ... (10 in all)]; keys with other shapes [w (file (1,), model (2,))]"
    )

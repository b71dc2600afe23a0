"""CLAM's baseline: an ImageNet ResNet-50 cut after its third stage, average-pooled to 1024 features."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from mil.encoders.recipe import Recipe, timm_model
from mil.encoders.registry import register_recipe

__all__ = ["resnet50_trunc", "truncated_resnet"]


def truncated_resnet(architecture: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """A timm ResNet without its last stage (layer4): pooled features are the third stage's width."""
    model = timm_model(architecture, kwargs)
    model.layer4 = nn.Identity()
    model.num_features = model.layer3[-1].conv3.out_channels if hasattr(model.layer3[-1], "conv3") else None
    return model


def _drop_last_stage(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """torchvision / timm ResNet keys are the same; the last stage and the classifier are not used."""
    return {k: v for k, v in state.items() if not k.startswith(("layer4.", "fc."))}


@register_recipe
def resnet50_trunc() -> Recipe:
    """ResNet-50 (ImageNet, torchvision) truncated after stage 3, as CLAM extracts features; average pool."""
    return Recipe(
        "resnet50", 1024, licence="BSD-3-Clause (torchvision weights)",
        source="download.pytorch.org/models/resnet50-19c8e357.pth (as CLAM; or timm resnet50.tv_in1k)",
        checkpoint="torchvision ResNet state dict", key_map=_drop_last_stage, build=truncated_resnet,
    )  # fmt: skip

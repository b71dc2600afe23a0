"""`Recipe`: everything needed to rebuild a published encoder and read its published checkpoint."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from mil._timm_import import import_timm

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "POOLINGS", "ClassAndPatchMean", "Recipe", "timm_model"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def timm_model(architecture: str, kwargs: Mapping[str, Any]) -> nn.Module:
    """The default builder: `timm.create_model(architecture, **kwargs)`, never downloading."""
    return import_timm().create_model(architecture, pretrained=False, **kwargs)


def _same_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return state


class ClassAndPatchMean(nn.Module):
    """A timm ViT's class token concatenated with the mean of its patch tokens (register tokens left out):
    Virchow's published embedding, twice the width of the model."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.num_prefix_tokens = int(model.num_prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.model.forward_features(x)  # (B, prefix + patches, C), after the final norm
        return torch.cat([tokens[:, 0], tokens[:, self.num_prefix_tokens :].mean(1)], dim=1)


POOLINGS: dict[str, Callable[[nn.Module], nn.Module]] = {
    "model": lambda model: model,  # the model's own pooled output (class token or average, as timm pools it)
    "class+mean patch": ClassAndPatchMean,
}


@dataclass(frozen=True)
class Recipe:
    """A published encoder: architecture and keyword arguments, the pooling that gives the published
    embedding, preprocessing, the resolution it was trained at, and how to read the published checkpoint.

    `key_map` turns the published state dict into the model's (renames, drops heads and unused buffers);
    `build(architecture, kwargs)` makes the model (timm by default). `name` and `title` are filled in by
    `register_recipe` from the function's name and docstring.
    """

    architecture: str
    dim: int
    kwargs: Mapping[str, Any] = field(default_factory=dict)
    input_size: int = 224
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    mpp: float = 0.5
    licence: str = ""
    source: str = ""  # where the checkpoint is published
    checkpoint: str = "timm state dict"  # the published file's layout, in words
    pooling: str = "model"
    key_map: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] = _same_keys
    build: Callable[[str, Mapping[str, Any]], nn.Module] = timm_model
    name: str = ""
    title: str = ""

    def __post_init__(self):
        if self.pooling not in POOLINGS:
            raise ValueError(f"recipe {self.name or self.architecture}: pooling {self.pooling!r} is not one of "
                             f"{sorted(POOLINGS)}")  # fmt: skip

    def arguments(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The builder's keyword arguments: the recipe's, then `overrides`; always headless."""
        return {**self.kwargs, **(overrides or {}), "num_classes": 0}

    def model(self, overrides: Mapping[str, Any] | None = None) -> nn.Module:
        """The bare architecture (no pooling wrapper): the module the mapped checkpoint loads into."""
        return self.build(self.architecture, self.arguments(overrides))

    def pooled(self, model: nn.Module) -> nn.Module:
        """`model` with the recipe's pooling: (B, 3, S, S) -> (B, dim)."""
        return POOLINGS[self.pooling](model)

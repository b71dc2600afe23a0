"""`create_encoder`: one entry point for built-ins, published recipes and any timm architecture."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from mil.encoders.base import Encoder, EncoderError
from mil.encoders.loading import recipe_encoder, timm_encoder, wants_hub
from mil.encoders.registry import get_factory, get_recipe

__all__ = ["check_name", "create_encoder", "needs_weights", "require_weights"]


def needs_weights(name: str, pretrained: bool = False) -> bool:
    """Whether encoder `name` is meaningless without trained weights (everything but the weight-free
    built-ins and hub downloads)."""
    return get_factory(name) is None and not (get_recipe(name) is None and wants_hub(name, pretrained))


def check_name(name: str, pretrained: bool = False) -> None:
    """Refuse a name that is not built in, not a recipe and not a timm architecture (hub names pass)."""
    if get_factory(name) or get_recipe(name) or wants_hub(name, pretrained):
        return
    from mil._timm_import import import_timm
    from mil.encoders.registry import list_encoders

    if not import_timm().is_model(name):
        raise EncoderError(f"unknown encoder {name!r}: not built in or a published recipe "
                           f"({', '.join(list_encoders())}) and not a timm architecture (see timm.list_models())")  # fmt: skip


def require_weights(name: str, weights: str | Path | None, random_weights: bool = False,
                    pretrained: bool = False) -> None:  # fmt: skip
    """Refuse, before any work, an unknown encoder, or one that needs weights and has none, unless
    `random_weights`."""
    check_name(name, pretrained)
    if weights is None and not random_weights and needs_weights(name, pretrained):
        raise EncoderError(f"{name} needs --weights FILE (a random initialisation gives meaningless features); "
                           "pass --random-weights to use one anyway, for testing (in Python: weights=FILE or "
                           "random_weights=True)")  # fmt: skip


def create_encoder(name: str, weights: str | Path | None = None, pretrained: bool = False,
                   random_weights: bool = False, **kwargs: Any) -> Encoder:  # fmt: skip
    """A built-in encoder, a published recipe (`list_encoders()`), or timm architecture `name`, with `weights`
    from a local file.

    Recipes read their published checkpoint as released (timm, `transformers` ViT or original Swin layouts);
    a checkpoint of another architecture is refused with the closest recipe named. Extra keyword arguments go
    to the architecture (`timm.create_model`), on top of a recipe's own (e.g. `init_values=1e-5`,
    `dynamic_img_size=True` for a plain timm name). Without weights, an encoder that needs them is refused
    unless `random_weights=True` (a seeded, reproducible, meaningless initialisation, marked as such).
    `pretrained=True` or an "hf-hub:" name downloads from the Hugging Face hub where it is reachable; offline
    (HF_HUB_OFFLINE=1, or no network) it fails at once with advice to pass a local file.
    """
    factory = get_factory(name)
    if factory is not None:
        return factory(weights=weights, **kwargs)
    if weights is not None and random_weights:
        raise EncoderError(f"{name}: both weights and random_weights given; choose one")
    require_weights(name, weights, random_weights, pretrained)
    recipe = get_recipe(name)
    if recipe is not None:
        if pretrained:
            raise EncoderError(f"{name}: recipes load local files only; download the checkpoint from "
                               f"{recipe.source} and pass weights=FILE (--weights FILE)")  # fmt: skip
        encoder = recipe_encoder(recipe, weights, kwargs)
    else:
        encoder = timm_encoder(name, weights, pretrained, kwargs)
    if encoder.random_weights:
        warnings.warn(f"encoder {name}: RANDOM WEIGHTS (a seeded random initialisation, as asked): the features "
                      "are reproducible but meaningless for a study", stacklevel=2)  # fmt: skip
    return encoder

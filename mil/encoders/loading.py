"""Building encoders: a recipe with its published checkpoint, any timm architecture, and the closest recipe
when a checkpoint does not fit the one asked for."""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from mil._timm_import import import_timm
from mil.encoders.base import RANDOM_WEIGHTS, Encoder, EncoderError
from mil.encoders.recipe import Recipe
from mil.encoders.registry import list_recipes
from mil.encoders.weights import KeyCheck, check_keys, file_hash, key_pattern, load_state_dict

__all__ = [
    "closest_recipes",
    "closest_timm_architectures",
    "empty_from_meta",
    "fit_checkpoint",
    "recipe_encoder",
    "recipe_layout",
    "timm_encoder",
]

_SIZES = ("atto", "femto", "pico", "nano", "micro", "tiny", "small", "medium", "base", "large", "huge", "giant",
          "gigantic")  # fmt: skip
_HEAD_PREFIXES = ("head.", "fc.", "classifier.", "head_dist.", "last_linear.")


@contextlib.contextmanager
def _seeded(seed: int = 0):
    """A reproducible random initialisation that leaves the caller's random state as it was."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)


def _build(recipe: Recipe, overrides: Mapping[str, Any] | None, device: str) -> nn.Module:
    try:
        with torch.device(device):
            return recipe.model(overrides)
    except Exception as exc:
        raise EncoderError(f"recipe {recipe.name!r}: could not build {recipe.architecture} "
                           f"with {dict(overrides or {})} ({exc})") from exc  # fmt: skip


def recipe_layout(recipe: Recipe, overrides: Mapping[str, Any] | None = None) -> dict[str, tuple[int, ...]]:
    """The key -> shape a checkpoint must have once mapped (built on the meta device: no memory, no time)."""
    model = _build(recipe, overrides, "meta")
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@functools.cache
def _patterns(name: str) -> frozenset[tuple[str, tuple[int, ...]]]:
    recipe = next(r for r in list_recipes() if r.name == name)
    return frozenset((key_pattern(k), s) for k, s in recipe_layout(recipe).items())


def closest_recipes(state: dict[str, torch.Tensor], exclude: str | None = None, threshold: float = 0.9
                    ) -> list[str]:  # fmt: skip
    """The recipes whose layout (keys with block numbers ignored, and shapes) best matches the published-format
    `state`, when the overlap is at least `threshold` (Jaccard); several when their layouts are the same."""
    scores: dict[str, float] = {}
    for recipe in list_recipes():
        if recipe.name == exclude:
            continue
        try:
            mapped = recipe.key_map(state)
        except Exception:  # a key map that cannot read this layout: not this recipe
            continue
        have = {(key_pattern(k), tuple(v.shape)) for k, v in mapped.items()}
        want = _patterns(recipe.name)
        scores[recipe.name] = len(have & want) / max(1, len(have | want))
    best = max(scores.values(), default=0.0)
    return sorted(n for n, s in scores.items() if s == best) if best >= threshold else []


def _suggestion(state: dict[str, torch.Tensor], exclude: str) -> str:
    names = closest_recipes(state, exclude=exclude)
    if not names:
        return ""
    return f"; its keys match recipe {' or '.join(repr(n) for n in names)}: use --encoder {names[0]}"


def _near_names(asked: str, names: list[str], limit: int) -> list[str]:
    """Architectures named like `asked` but for one '_'-separated part (vit_small_patch16_224 ->
    vit_base_patch16_224; resnet34 -> resnet18): the family a checkpoint for the wrong size comes from."""
    parts = asked.split("_")
    family = re.match(r"[a-z]+", parts[0])
    if family is None:
        return []
    ranked = []
    for name in names:
        other = name.split("_")
        if name == asked or len(other) != len(parts) or not name.startswith(family.group(0)):
            continue
        differ = [(a, b) for a, b in zip(parts, other, strict=True) if a != b]
        if len(differ) == 1:
            # Another size of the same model first (resnet18 for resnet34, vit_tiny_... for vit_small_...).
            a, b = differ[0]
            size = b in _SIZES or re.sub(r"\d+", "", a) == re.sub(r"\d+", "", b)
            ranked.append((not size, -difflib.SequenceMatcher(None, asked, name).ratio(), name))
    return [name for *_, name in sorted(ranked)[:limit]]


def closest_timm_architectures(state: dict[str, torch.Tensor], asked: str, expected: dict[str, tuple[int, ...]],
                               limit: int = 6) -> list[str]:  # fmt: skip
    """The first of the timm architectures near `asked` (see `_near_names`; `limit` of them, the most similar
    names first) whose keys and shapes `state` fits exactly, classifier heads aside; [] at once when `state` is
    not of the same family as `asked`'s `expected` layout (under half of the key patterns shared)."""
    timm = import_timm()
    have = {(k, tuple(v.shape)) for k, v in state.items() if not k.startswith(_HEAD_PREFIXES)}
    have = {(k, s) for k, s in have if not k.endswith("num_batches_tracked")}
    mine, theirs = {key_pattern(k) for k, _ in have}, {key_pattern(k) for k in expected}
    if len(mine & theirs) < 0.5 * len(mine | theirs):
        return []
    for name in _near_names(asked, timm.list_models(), limit):
        try:
            with torch.device("meta"):
                model = timm.create_model(name, num_classes=0)
        except Exception:  # an architecture that needs arguments to build: not a suggestion
            continue
        want = {
            (k, tuple(v.shape))
            for k, v in model.state_dict().items()
            if not k.endswith("num_batches_tracked")
        }
        if want == have:
            return [name]  # the most similar name that fits: enough for a suggestion
    return []


def fit_checkpoint(recipe: Recipe, published: dict[str, torch.Tensor], model: nn.Module
                   ) -> tuple[dict[str, torch.Tensor], KeyCheck]:  # fmt: skip
    """The published state dict under the model's names, and how it fits `model` (built on any device)."""
    state = recipe.key_map(published)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    for key in expected:  # checkpoints saved before BatchNorm counted its batches lack the counter
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    return state, check_keys(state, expected)


def empty_from_meta(model: nn.Module) -> nn.Module | None:
    """`model` (built on the meta device) on the CPU with uninitialised parameters for a state dict to fill,
    and its unsaved buffers (e.g. Swin's attention masks) computed again; None where a module holding such
    buffers cannot recompute them (timm's `init_non_persistent_buffers`)."""
    computed = [m for m in model.modules()
                if any(name in m._non_persistent_buffers_set for name, _ in m.named_buffers(recurse=False))]  # fmt: skip
    if not all(hasattr(m, "init_non_persistent_buffers") for m in computed):
        return None
    model = model.to_empty(device="cpu")
    for module in computed:
        module.init_non_persistent_buffers()
    return model


def recipe_encoder(
    recipe: Recipe, weights: str | Path | None, overrides: Mapping[str, Any] | None = None
) -> Encoder:
    """`recipe` with its published checkpoint `weights` (None: a seeded random initialisation).

    The mapped checkpoint must fit the architecture exactly. The model is built on the meta device and the
    checkpoint's tensors fill it (buffers that are not saved are recomputed), so a ViT-g loads without first
    spending time and memory on a random initialisation.
    """
    if weights is None:
        with _seeded():
            model = _build(recipe, overrides, "cpu")
        weights_hash = RANDOM_WEIGHTS
    else:
        published = load_state_dict(weights)
        model = _build(recipe, overrides, "meta")
        try:
            state, check = fit_checkpoint(recipe, published, model)
        except Exception as exc:
            raise EncoderError(f"{weights}: cannot read as a {recipe.checkpoint} for recipe {recipe.name!r} "
                               f"({exc}){_suggestion(published, recipe.name)}") from exc  # fmt: skip
        if not check.ok:
            raise EncoderError(f"{weights}: not a checkpoint of recipe {recipe.name!r} ({recipe.title}; "
                               f"{recipe.architecture}, {recipe.checkpoint}): {check.message()}"
                               f"{_suggestion(published, recipe.name)}")  # fmt: skip
        empty = empty_from_meta(model)
        if (
            empty is None
        ):  # buffers computed at build time that cannot be recomputed: build the model for real
            with _seeded():
                empty = _build(recipe, overrides, "cpu")
        model = empty
        model.load_state_dict(state, strict=True)
        weights_hash = file_hash(weights)
    return Encoder(recipe.name, recipe.pooled(model), recipe.dim, recipe.input_size, recipe.mean, recipe.std,
                   weights_hash, recipe.architecture, random_weights=weights is None,
                   arguments=recipe.arguments(overrides), mpp=recipe.mpp)  # fmt: skip


def _hub_name(name: str) -> bool:
    return name.startswith(("hf-hub:", "hf_hub:", "timm/"))


def wants_hub(name: str, pretrained: bool) -> bool:
    return pretrained or _hub_name(name)


def timm_encoder(
    name: str, weights: str | Path | None, pretrained: bool, kwargs: Mapping[str, Any]
) -> Encoder:
    """timm architecture `name` with `weights` from a local file, hub weights, or (weights None) a seeded
    random initialisation. Unexpected classifier-head keys in the file are ignored."""
    timm = import_timm()
    hub = wants_hub(name, pretrained)
    if hub and os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        raise EncoderError(f"{name}: downloading pretrained weights needs the Hugging Face hub, and HF_HUB_OFFLINE "
                           "is set; download the checkpoint elsewhere and pass weights=FILE (--weights FILE) with "
                           "the timm architecture name or a recipe name")  # fmt: skip
    try:
        with _seeded():  # a random initialisation is at least reproducible
            model = timm.create_model(name, pretrained=hub, **{**kwargs, "num_classes": 0})
    except Exception as exc:
        if hub:
            raise EncoderError(
                f"{name}: could not fetch pretrained weights ({exc}); pass weights=FILE"
            ) from exc
        raise EncoderError(f"{name}: timm could not build it with {dict(kwargs)} ({exc})") from exc
    if weights is not None:
        state = load_state_dict(weights)
        expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        fitting = {k: v for k, v in state.items() if k in expected or not k.startswith(_HEAD_PREFIXES)}
        check = check_keys(fitting, expected)
        if not check.ok:
            suggestion = _suggestion(state, name)
            if not suggestion and not kwargs:
                fits = closest_timm_architectures(state, name, expected)
                suggestion = (
                    f"; the file fits timm architecture {fits[0]}: use --encoder {fits[0]}" if fits else ""
                )
            raise EncoderError(f"{weights}: weights do not fit timm {name!r} with {dict(kwargs)}: "
                               f"{check.message()}{suggestion}")  # fmt: skip
        model.load_state_dict(fitting, strict=True)
        weights_hash = file_hash(weights)
    elif hub:
        weights_hash = f"hub:{name}"
    else:
        weights_hash = RANDOM_WEIGHTS
    config = timm.data.resolve_data_config({}, model=model)
    size = config["input_size"][-1]
    return Encoder(name, model, model.num_features, size, config["mean"], config["std"], weights_hash, name,
                   random_weights=weights is None and not hub, arguments=kwargs)  # fmt: skip

"""The encoder registry: weight-free built-ins (factories) and published encoders (recipes), by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace

from mil.encoders.base import Encoder
from mil.encoders.recipe import Recipe

__all__ = [
    "EncoderInfo",
    "encoder_table",
    "get_recipe",
    "list_encoders",
    "list_recipes",
    "register_encoder",
    "register_recipe",
]

_FACTORIES: dict[str, Callable[..., Encoder]] = {}
_RECIPES: dict[str, Recipe] = {}
_INFO: dict[str, EncoderInfo] = {}


@dataclass(frozen=True)
class EncoderInfo:
    """One row of the encoder table. `input_size` and `mpp` None: any tile size and resolution."""

    name: str
    dim: int | None
    input_size: int | None
    mpp: float | None
    licence: str
    source: str
    architecture: str
    title: str


def _first_line(fn) -> str:
    return (inspect.getdoc(fn) or "").split("\n")[0]


def register_encoder(fn: Callable[..., Encoder] | None = None, *, dim: int | None = None, licence: str = "",
                     source: str = "built in"):  # fmt: skip
    """Register a built-in encoder factory `fn(weights=None, **kwargs) -> Encoder` under its function name.

    Use bare (`@register_encoder`) or with the table's details (`@register_encoder(dim=53, ...)`). Factories
    build weight-free encoders or load their own weights; recipes (`register_recipe`) describe published ones.
    """

    def add(fn: Callable[..., Encoder]) -> Callable[..., Encoder]:
        _FACTORIES[fn.__name__] = fn
        _INFO[fn.__name__] = EncoderInfo(fn.__name__, dim, None, None, licence, source, fn.__name__,
                                         _first_line(fn))  # fmt: skip
        return fn

    return add(fn) if fn is not None else add


def register_recipe(fn: Callable[[], Recipe]) -> Callable[[], Recipe]:
    """Register the recipe `fn()` returns under the function's name (its docstring's first line is the title)."""
    recipe = replace(fn(), name=fn.__name__, title=_first_line(fn))
    _RECIPES[recipe.name] = recipe
    _INFO[recipe.name] = EncoderInfo(recipe.name, recipe.dim, recipe.input_size, recipe.mpp, recipe.licence,
                                     recipe.source, recipe.architecture, recipe.title)  # fmt: skip
    return fn


def get_recipe(name: str) -> Recipe | None:
    return _RECIPES.get(name)


def get_factory(name: str) -> Callable[..., Encoder] | None:
    return _FACTORIES.get(name)


def list_recipes() -> list[Recipe]:
    return [_RECIPES[name] for name in sorted(_RECIPES)]


def list_encoders(details: bool = False) -> list[str] | list[EncoderInfo]:
    """Encoders known by name (built-ins and published recipes); any timm architecture also works with
    `create_encoder`. `details=True` gives rows with output dimension, input size, recommended mpp, licence
    and where the checkpoint is published."""
    names = sorted(_INFO)
    return [_INFO[n] for n in names] if details else names


def encoder_table() -> str:
    """The encoder list as a plain-text table (for the CLI)."""
    rows = [("name", "dim", "input", "mpp", "licence", "architecture", "checkpoint published at")]
    for info in list_encoders(details=True):
        rows.append((info.name, str(info.dim or "-"), str(info.input_size or "any"), str(info.mpp or "any"),
                     info.licence, info.architecture, info.source))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1]
                     for r in rows)  # fmt: skip

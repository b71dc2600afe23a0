"""The MIL model registry: `@register_model` on a factory, `create_model(name, in_dim, n_outputs, **kwargs)`."""

from __future__ import annotations

from collections.abc import Callable

from mil.models._base import MILModel, ModelSpec

__all__ = ["create_model", "list_models", "register_model"]

_MODELS: dict[str, Callable[..., MILModel]] = {}


def register_model(fn: Callable[..., MILModel]) -> Callable[..., MILModel]:
    """Register a model factory `fn(in_dim, n_outputs, **kwargs)` under its function name."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"MIL model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models() -> list[str]:
    """Names of the registered MIL models, sorted."""
    return sorted(_MODELS)


def create_model(name: str, in_dim: int, n_outputs: int, **kwargs) -> MILModel:
    """Build a registered MIL model for `in_dim` features per tile and `n_outputs` logits per bag.

    The name and keyword arguments are kept on `model.spec`, so a checkpoint can build the same model again.
    """
    if name not in _MODELS:
        raise ValueError(f"unknown MIL model {name!r}; registered: {list_models()}")
    if int(in_dim) < 1 or int(n_outputs) < 1:
        raise ValueError(f"in_dim and n_outputs must be positive, got {in_dim} and {n_outputs}")
    model = _MODELS[name](int(in_dim), int(n_outputs), **kwargs)
    model.spec = ModelSpec(name, int(in_dim), int(n_outputs), dict(sorted(kwargs.items())))
    return model

"""The reader protocol and the backend registry."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np

__all__ = ["BackendReader", "backend_order", "get_backend", "list_backends", "register_backend"]


class BackendReader(Protocol):
    """What a backend gives `wsi.Slide`. Locations are level-0 (x, y); sizes are (w, h) at the level read."""

    name: str
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    properties: Mapping[str, str]
    vendor: str | None
    raw_mpp: float | None
    objective_power: float | None
    channels: int  # colour samples (3 for RGB) or fluorescence channel planes
    channel_names: tuple[str, ...]  # where the file names its channels, else ()
    modality: str  # "brightfield" or "fluorescence"
    intensity: str | None  # how samples that are not 8-bit map to 0..255 (None when they are 8-bit)

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """(h, w, 4) RGBA or (h, w, 3) RGB uint8; the caller composites transparency."""

    def close(self) -> None: ...


Opener = Callable[[Path], BackendReader]

_REGISTRY: dict[str, tuple[int, Opener]] = {}


def register_backend(name: str, priority: int) -> Callable[[Opener], Opener]:
    """Register an opener; in auto mode backends are tried by ascending `priority`.

    An opener raises `wsi.UnsupportedSlideError` when it cannot handle the file, so the next one is tried.
    """

    def decorate(opener: Opener) -> Opener:
        _REGISTRY[name] = (priority, opener)
        return opener

    return decorate


def get_backend(name: str) -> Opener:
    try:
        return _REGISTRY[name][1]
    except KeyError:
        raise ValueError(f"unknown slide backend {name!r}; choose one of {list_backends()}") from None


def list_backends() -> list[str]:
    return sorted(_REGISTRY)


def backend_order() -> list[str]:
    """Names in the order auto mode tries them."""
    return [name for name, _ in sorted(_REGISTRY.items(), key=lambda item: item[1][0])]

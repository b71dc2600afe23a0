"""Dataset layouts: each loader registers a `detect(path)` test and a `load(path, mpp)` reader."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from nuclei.datasets.base import DatasetError, NucleiTiles

__all__ = ["Layout", "list_layouts", "load_dataset", "register_layout"]


@dataclass(frozen=True)
class Layout:
    """A dataset layout: how to recognise a folder, what it must hold (for error messages), how to read it."""

    name: str
    expects: str
    priority: int
    detect: Callable[[Path], bool]
    load: Callable[[Path, float | None], NucleiTiles]


_LAYOUTS: dict[str, Layout] = {}


def register_layout(name: str, expects: str, detect: Callable[[Path], bool], priority: int = 50):
    """Decorator registering `load(path, mpp) -> NucleiTiles` as layout `name`; detection tries layouts by
    increasing `priority` (specific layouts first, generic image + mask folders last)."""

    def wrap(load):
        _LAYOUTS[name] = Layout(name, expects, priority, detect, load)
        return load

    return wrap


def list_layouts() -> list[str]:
    return sorted(_LAYOUTS)


def load_dataset(path: str | os.PathLike, layout: str | None = None, mpp: float | None = None) -> NucleiTiles:
    """Read a labelled nuclei dataset folder; `layout` None picks the first layout whose files are there.

    `mpp` overrides the layout's known resolution (needed for image + mask folders, which carry none).
    """
    path = Path(path)
    if not path.is_dir():
        raise DatasetError(f"{path} is not a folder")
    if layout is not None:
        if layout not in _LAYOUTS:
            raise DatasetError(f"unknown dataset layout {layout!r}; known: {list_layouts()}")
        return _LAYOUTS[layout].load(path, mpp)
    for lay in sorted(_LAYOUTS.values(), key=lambda lay: lay.priority):
        if lay.detect(path):
            return lay.load(path, mpp)
    expected = "\n".join(f"  {lay.name}: {lay.expects}" for lay in _LAYOUTS.values())
    raise DatasetError(f"{path} is in none of the known nuclei dataset layouts; expected one of:\n{expected}")

"""Slide metadata and resolution sanity rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

__all__ = ["MPP_RANGE", "SlideMeta", "magnification_to_mpp", "plausible_mpp"]

# Microscope scans lie between about 0.05 (very high NA) and 20 um/px (a macro photo). TIFF writers default to
# 72 dpi (352.8 um/px) or 96 / 300 dpi; those say nothing about the specimen and are treated as missing.
MPP_RANGE = (0.02, 40.0)

# Nominal conversions: 40x ~ 0.25 um/px, 20x ~ 0.5, 10x ~ 1.0.
_MPP_AT_1X = 10.0


def plausible_mpp(value: Any) -> float | None:
    """Return `value` as a float when it is a believable scan resolution, else None."""
    try:
        mpp = float(value)
    except (TypeError, ValueError):
        return None
    if not math.isfinite(mpp) or not (MPP_RANGE[0] <= mpp <= MPP_RANGE[1]):
        return None
    return mpp


def magnification_to_mpp(magnification: float) -> float:
    """Nominal mpp of an objective power (40 -> 0.25). A convenience alias, not a measurement."""
    if magnification <= 0:
        raise ValueError(f"magnification must be positive, got {magnification}")
    return _MPP_AT_1X / magnification


@dataclass(frozen=True)
class SlideMeta:
    """What is known about a slide. Sizes are (w, h) in pixels; `mpp` is level-0 microns per pixel or None
    (the file's own, or the `slide_mpp` override it was opened with)."""

    path: Path
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    vendor: str | None
    backend: str
    properties: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), repr=False)

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel at `level`, or None without a level-0 mpp."""
        return None if self.mpp is None else self.mpp * self.level_downsamples[level]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready summary (no raw properties)."""
        return {
            "path": str(self.path),
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "levels": len(self.level_dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": [round(d, 6) for d in self.level_downsamples],
            "mpp": self.mpp,
            "objective_power": self.objective_power,
        }

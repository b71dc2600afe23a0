"""Slide metadata and resolution sanity rules."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from wsi.errors import ModalityError

__all__ = ["MPP_RANGE", "SlideMeta", "magnification_to_mpp", "plausible_mpp", "require_brightfield"]

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
    (the file's own, or the `slide_mpp` override it was opened with).

    `channels` counts colour samples (3 for RGB, 1 for grey) or, for multiplex fluorescence, channel planes;
    `channel_names` are the file's names for them where it has any. `modality` is "brightfield" or
    "fluorescence". `intensity` says how samples that are not 8-bit were mapped to 0..255 (None when they are 8-bit;
    see `wsi.samples`).
    """

    path: Path
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: float | None
    objective_power: float | None
    vendor: str | None
    backend: str
    properties: MappingProxyType = field(default_factory=lambda: MappingProxyType({}), repr=False)
    channels: int = 3
    channel_names: tuple[str, ...] = ()
    modality: str = "brightfield"
    intensity: str | None = None

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
            "channels": self.channels,
            "channel_names": list(self.channel_names),
            "modality": self.modality,
            "intensity": self.intensity,
        }


def require_brightfield(meta: SlideMeta, what: str) -> None:
    """Raise `ModalityError` naming the slide, its channels and `what` needs brightfield, unless it is one."""
    if meta.modality == "brightfield":
        return
    names = f": {', '.join(meta.channel_names)}" if meta.channel_names else ""
    raise ModalityError(
        meta.path,
        f"a {meta.modality} slide ({meta.channels} channels{names}); {what} works on brightfield (RGB, H&E) slides "
        "only. To tile it anyway give the tissue as a ROI (--roi FILE --roi-mode replace): tiles then show "
        "channels 0, 1, 2 as red, green, blue",
    )

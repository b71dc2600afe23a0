"""`TilingConfig`: the one place tiling options live, each value checked once, where the config is built."""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, get_args

import numpy as np

import wsi
from wsi.deprecation import warn_renamed

__all__ = ["CODEC_CHOICES", "MAX_TARGET_MPP", "QC_CHECKS", "ROI_MODES", "SCHEDULERS", "TilingConfig",
           "check_target_mpp", "resolve_config"]  # fmt: skip

RoiMode = Literal["restrict", "replace"]
Scheduler = Literal["threads", "processes", "synchronous"]
Codec = Literal["auto", "jpeg", "lz4", "zstd", "zstd3", "none"]
ROI_MODES: tuple[str, ...] = get_args(RoiMode)
SCHEDULERS: tuple[str, ...] = get_args(Scheduler)
CODEC_CHOICES: tuple[str, ...] = get_args(Codec)
QC_CHECKS: tuple[str, ...] = ("blur", "pen")  # tile quality checks of tiling.qc

# Tiles coarser than this (2.5x) are not what tiling is for; such a value is a magnification typed as an mpp.
MAX_TARGET_MPP = 4.0

# Fields that say how the work runs, not what the store holds: changing them never rewrites a store.
_EXECUTION = ("backend", "shard_workers", "scheduler")
# Fields added after stores were first made, with their defaults (left out of `content()` at the default).
_LATER_FIELDS = {"exact": False, "magnification": None, "min_fragment_um2": None, "qc": ()}
# Keywords of the old 19-parameter tile_slide, renamed here.
_RENAMED = {"workers": "shard_workers"}


@dataclass(frozen=True)
class TilingConfig:
    """Options of `tiling.tile_slide`. Sizes are output pixels at the target resolution `mpp` (um/px).

    What the store holds follows from every field except `backend`, `shard_workers` and `scheduler`, and from
    the slide and the ROI geometry given to `tile_slide`; a complete store made with other values is replaced
    only with `overwrite` (else `tiling.inputs.OptionsChanged` names the differences).

    - `stride`: step between tiles (default: `size`, no overlap); `min_tissue`: fraction of a kept tile in
      the tissue (0 keeps every tile); `roi_mode`: a ROI "restrict"s the detected tissue or "replace"s it.
    - `slide_mpp`: the slide's own level-0 resolution, used only when its metadata has none.
    - `codec`: "auto" keeps the slide's own JPEG tiles when the grid lines up with them ("jpeg", exact and
      fastest) and uses "lz4" otherwise; "zstd" (blosc zstd level 1), "zstd3" (plain zstd level 3) and
      "none" are the others. `coords_only` stores no pixels (they are read from the slide later).
    - `exact`: resampled tiles (e.g. 0.5 um/px from a 0.25 um/px slide) equal read_region + `wsi.resize_rgb`;
      by default, from JPEG-tiled slides they are decoded with libjpeg-turbo's DCT scaling, close to an area
      average and faster (1.3 - 2.8x end to end in benchmarks/RESULTS.md; see tiling.resample). Tiles at the
      slide's own resolution are exact either way. It also makes tissue detection read its work image with
      read_region (`tiling.tissue.read_downsampled`) instead of DCT-scaled native tiles.
    - `magnification`: the target resolution as an objective magnification (20 for 20x) instead of `mpp`
      (which it then replaces): per slide, the slide's mpp x its objective power / magnification, or
      10 um / magnification (the usual convention, 20x ~ 0.5 um/px) when the slide has no objective power.
    - `min_fragment_um2`: detected tissue pieces smaller than this (um^2, holes not counted) are dropped from
      the tissue outline and the grid; None: 3 tiles' area at `size` and `mpp`. Below tissue detection's own
      minimum (`TissueParams.min_area_um2`, 20,000 um^2) detection keeps pieces down to it too. A ROI used
      with `roi_mode="replace"` is kept as drawn.
    - `qc`: tile quality checks whose flagged tiles are dropped ("blur", "pen"; see tiling.qc); each tile's
      measures are kept in the store (`qc/<check>`) and the counts dropped in its attrs["qc"].
    - `shard_tiles`: tiles per shard file (the unit of writing and of resume).
    - `backend`: slide reader ("openslide", "tiffslide"; None: auto); `shard_workers`: shards tiled at once
      (default: all cores) by the dask `scheduler` ("threads", "processes" or "synchronous").
    """

    size: int = 256
    mpp: float = 0.5
    stride: int | None = None
    min_tissue: float = 0.5
    roi_mode: RoiMode = "restrict"
    slide_mpp: float | None = None
    coords_only: bool = False
    codec: Codec = "auto"
    shard_tiles: int = 64
    backend: str | None = None
    shard_workers: int | None = None
    scheduler: Scheduler = "threads"
    # From here on: added later, so positional uses of the fields before them keep working.
    exact: bool = False
    magnification: float | None = None
    min_fragment_um2: float | None = None
    qc: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        def positive_int(name: str, optional: bool = False) -> None:
            value = getattr(self, name)
            if optional and value is None:
                return
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value <= 0:
                raise ValueError(f"TilingConfig.{name} must be a positive integer, got {value!r}")
            object.__setattr__(self, name, int(value))

        positive_int("size")
        positive_int("stride", optional=True)
        positive_int("shard_tiles")
        positive_int("shard_workers", optional=True)
        if not _is_number(self.mpp) or self.mpp <= 0:
            raise ValueError(
                f"TilingConfig.mpp (target microns per pixel) must be positive, got {self.mpp!r}"
            )
        if not _is_number(self.min_tissue) or not 0 <= self.min_tissue <= 1:
            raise ValueError(f"TilingConfig.min_tissue must be in [0, 1], got {self.min_tissue!r}")
        if self.slide_mpp is not None and wsi.plausible_mpp(self.slide_mpp) is None:
            raise ValueError(
                f"TilingConfig.slide_mpp={self.slide_mpp!r} is not a plausible resolution in microns per pixel"
            )
        if self.magnification is not None and (not _is_number(self.magnification) or self.magnification <= 0):
            raise ValueError(
                f"TilingConfig.magnification must be a positive number (20 for 20x), got {self.magnification!r}"
            )
        if not isinstance(self.exact, bool | np.bool_):
            raise ValueError(f"TilingConfig.exact must be True or False, got {self.exact!r}")
        object.__setattr__(self, "exact", bool(self.exact))
        if self.min_fragment_um2 is not None:
            if not _is_number(self.min_fragment_um2) or self.min_fragment_um2 < 0:
                raise ValueError(
                    f"TilingConfig.min_fragment_um2 must be >= 0 (um^2) or None, got {self.min_fragment_um2!r}"
                )
            object.__setattr__(self, "min_fragment_um2", float(self.min_fragment_um2))
        qc = (self.qc,) if isinstance(self.qc, str) else self.qc
        if not isinstance(qc, tuple | list) or any(c not in QC_CHECKS for c in qc):
            raise ValueError(f"TilingConfig.qc must name checks among {list(QC_CHECKS)}, got {self.qc!r}")
        object.__setattr__(self, "qc", tuple(c for c in QC_CHECKS if c in qc))  # one order, no repeats
        _check_choice("roi_mode", self.roi_mode, ROI_MODES)
        _check_choice("codec", self.codec, CODEC_CHOICES)
        _check_choice("scheduler", self.scheduler, SCHEDULERS)
        if self.backend is not None:
            _check_choice("backend", self.backend, tuple(wsi.backends.list_backends()))
        # One spelling of each number, so that equal configs give equal store fingerprints (1 and 1.0).
        object.__setattr__(self, "mpp", float(self.mpp))
        object.__setattr__(self, "min_tissue", float(self.min_tissue))
        if self.slide_mpp is not None:
            object.__setattr__(self, "slide_mpp", float(self.slide_mpp))
        if self.magnification is not None:
            object.__setattr__(self, "magnification", float(self.magnification))

    def target_mpp(self, meta: wsi.SlideMeta) -> float:
        """The tiles' resolution (um/px) on a slide: `mpp`, or what `magnification` means on that slide."""
        if self.magnification is None:
            return self.mpp
        if meta.objective_power and meta.mpp:
            return float(meta.mpp * meta.objective_power / self.magnification)
        return wsi.magnification_to_mpp(self.magnification)

    @classmethod
    def field_names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def with_overrides(self, **overrides: Any) -> TilingConfig:
        """A copy with `overrides` applied; an unknown name is a TypeError that lists the known ones.

        Only TilingConfig's own fields are accepted (a subclass such as the pipeline's `TileOptions` keeps its
        extra fields unchanged). Old names (`workers`) are accepted with a DeprecationWarning.
        """
        return resolve_config(self, overrides, stacklevel=4)

    def content(self) -> dict[str, Any]:
        """The fields that decide what a store holds (all but backend, shard_workers and scheduler).

        Fields added later (`exact`) appear only when they differ from their default, so that stores made
        before them keep their fingerprints.
        """
        own = TilingConfig.field_names()
        content = {k: v for k, v in asdict(self).items() if k in own and k not in _EXECUTION}
        for name, default in _LATER_FIELDS.items():
            if content[name] == default:
                del content[name]
        if "qc" in content:
            content["qc"] = list(content["qc"])  # as it reads back from the store's JSON attributes
        return content


def resolve_config(
    config: TilingConfig | None, overrides: dict[str, Any], stacklevel: int = 4
) -> TilingConfig:
    """`config` (default `TilingConfig()`) with `overrides` applied, as `TilingConfig.with_overrides` says.

    `stacklevel` points a deprecation warning at the caller's caller (the user of a function taking overrides).
    """
    if config is not None and not isinstance(config, TilingConfig):
        raise TypeError(
            f"config must be a TilingConfig, got {type(config).__name__}; pass options by keyword"
        )
    overrides = dict(overrides)
    for old, new in _RENAMED.items():
        if old in overrides:
            if new in overrides:
                raise TypeError(f"got both {old!r} (deprecated) and {new!r}")
            warn_renamed(old, new, "tiling option", stacklevel=stacklevel)
            overrides[new] = overrides.pop(old)
    unknown = sorted(set(overrides) - set(TilingConfig.field_names()))
    if unknown:
        raise TypeError(f"unknown tiling option(s) {unknown}; known: {list(TilingConfig.field_names())}")
    config = config or TilingConfig()
    return replace(config, **overrides) if overrides else config


def check_target_mpp(value: float) -> str | None:
    """Why `value` is not a target resolution in um/px for tiles (None when it is one).

    TilingConfig itself takes any positive mpp; the command line and the run config refuse values above
    `MAX_TARGET_MPP`, which are magnifications typed as mpp (--mpp 20 for 20x).
    """
    if not _is_number(value) or not value > 0:
        return f"must be a positive resolution in microns per pixel, got {value!r}"
    if value > MAX_TARGET_MPP:
        return (f"{value:g} um/px is coarser than {MAX_TARGET_MPP:g} um/px (2.5x) and looks like a magnification: "
                f"for {value:g}x ask for magnification {value:g} (--magnification {value:g}, about "
                f"{wsi.magnification_to_mpp(value):g} um/px)")  # fmt: skip
    return None


def _is_number(value: Any) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"TilingConfig.{name} must be one of {list(choices)}, got {value!r}")

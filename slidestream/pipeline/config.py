"""Run configuration: TOML file plus command-line overrides, frozen once built."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tiling import TilingConfig
from wsi.deprecation import renamed_keywords, warn_renamed

__all__ = ["FeatureOptions", "RunConfig", "TileOptions", "load_config"]


@dataclass(frozen=True)
class TileOptions(TilingConfig):
    """Tiling options of a run: `tiling.TilingConfig` (passed to `tile_slide` as it is) plus where the ROI is.

    `roi` is a QuPath GeoJSON file, or a folder holding <slide_id>.geojson per slide (a slide without one is
    tiled without ROI).
    """

    roi: str | None = None


@dataclass(frozen=True)
class FeatureOptions:
    """What the features step runs. `encoder` is a built-in or recipe name (mil.list_encoders()) or a timm
    architecture; `encoder_args` its keyword arguments ([features.encoder_args]); `random_weights` lets an encoder
    that needs weights run without them (for testing; marked in the summary and the store); `loader_workers` are
    DataLoader processes (0: read in the step's process)."""

    encoder: str = "stain_stats"
    weights: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False
    batch_size: int = 64
    device: str = "auto"
    loader_workers: int = 0


# Old names of RunConfig fields (and [run] keys), accepted with a DeprecationWarning.
_RUN_RENAMED = {"workers": "slide_workers", "scheduler": "scheduler_address"}


@dataclass(frozen=True)
class RunConfig:
    """What `slidestream run` does. `steps` are run in the pipeline's order.

    `slide_workers` dask worker processes of the local cluster each process one slide at a time (default: one
    per core), with `threads_per_worker` threads (tiling shards, torch); `scheduler_address` (tcp://host:port)
    sends the work to an existing dask.distributed cluster instead. `dashboard` serves the local cluster's dask
    dashboard (on port 8787, or the next free one) and prints its address.
    """

    out: Path = Path("out")
    steps: tuple[str, ...] = ("tile", "features")
    slide_workers: int | None = None
    threads_per_worker: int = 1
    scheduler_address: str | None = None
    overwrite: bool = False
    progress: bool = True
    tiling: TileOptions = field(default_factory=TileOptions)
    features: FeatureOptions = field(default_factory=FeatureOptions)
    dashboard: bool = False

    @property
    def workers(self) -> int | None:
        """Deprecated name of `slide_workers`."""
        warn_renamed("workers", "slide_workers", "RunConfig")
        return self.slide_workers

    @property
    def scheduler(self) -> str | None:
        """Deprecated name of `scheduler_address`."""
        warn_renamed("scheduler", "scheduler_address", "RunConfig")
        return self.scheduler_address

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out"] = str(self.out)
        return data


RunConfig.__init__ = renamed_keywords(**_RUN_RENAMED)(RunConfig.__init__)


def _section(cls, values: dict[str, Any], where: str, renamed: dict[str, str] | None = None):
    values = dict(values)
    for old, new in (renamed or {}).items():
        if old in values:
            if new in values:
                raise ValueError(f"{where}: both {old!r} (deprecated) and {new!r} are set; keep {new!r}")
            warn_renamed(old, new, where, stacklevel=4)
            values[new] = values.pop(old)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults, then the TOML file ([run], [tiling], [features] tables), then `overrides` that are not None.

    Overrides use dotted names for sections: {"tiling.mpp": 0.25, "features.encoder": "resnet50"}. Bad values
    are errors here, where the config is built (TilingConfig checks its own). Old names (`workers`,
    `scheduler` in [run]) are accepted with a DeprecationWarning.
    """
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    unknown = sorted(set(data) - {"run", "tiling", "features"})
    if unknown:
        raise ValueError(f"{path}: unknown table(s) {unknown}; use [run], [tiling] and [features]")
    run = dict(data.get("run", {}))
    tiling = dict(data.get("tiling", {}))
    feats = dict(data.get("features", {}))
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = {"": run, "tiling": tiling, "features": feats}[section]
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            value = {**target[name], **value}  # e.g. --encoder-arg on top of [features.encoder_args]
        target[name] = value
    if "steps" in run:
        run["steps"] = tuple(run["steps"])
    if "out" in run:
        run["out"] = Path(run["out"])
    config = _section(RunConfig, run, "[run]", _RUN_RENAMED)
    return replace(config, tiling=_section(TileOptions, tiling, "[tiling]"),
                   features=_section(FeatureOptions, feats, "[features]"))  # fmt: skip

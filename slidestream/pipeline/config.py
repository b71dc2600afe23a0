"""Run configuration: TOML file plus command-line overrides, frozen once built."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tiling.engine import TilingConfig

__all__ = ["FeatureOptions", "RunConfig", "TileOptions", "load_config"]


@dataclass(frozen=True)
class TileOptions(TilingConfig):
    """Tiling options of a run: what decides the store (TilingConfig) plus where the slide mpp and ROI come from."""

    slide_mpp: float | None = None  # for slides whose metadata has none
    roi: str | None = None  # QuPath GeoJSON file, or a folder of <slide_id>.geojson


@dataclass(frozen=True)
class FeatureOptions:
    """`encoder` is a built-in or recipe name (mil.list_encoders()) or a timm architecture; `encoder_args` its
    keyword arguments ([features.encoder_args]); `random_weights` lets an encoder that needs weights run
    without them (for testing; marked in the summary and the store)."""

    encoder: str = "stain_stats"
    weights: str | None = None
    encoder_args: dict[str, Any] = field(default_factory=dict)
    random_weights: bool = False
    batch_size: int = 64
    device: str = "auto"
    loader_workers: int = 0


@dataclass(frozen=True)
class RunConfig:
    """What `slidestream run` does. `steps` are run in the pipeline's order; `workers` is slides in parallel."""

    out: Path = Path("out")
    steps: tuple[str, ...] = ("tile", "features")
    workers: int | None = None
    threads_per_worker: int = 1
    scheduler: str | None = None  # tcp://host:port of an existing dask.distributed scheduler
    overwrite: bool = False
    progress: bool = True
    tiling: TileOptions = field(default_factory=TileOptions)
    features: FeatureOptions = field(default_factory=FeatureOptions)

    def to_dict(self) -> dict[str, Any]:
        from dataclasses import asdict

        data = asdict(self)
        data["out"] = str(self.out)
        return data


def _section(cls, values: dict[str, Any], where: str):
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")
    return cls(**values)


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults, then the TOML file ([run], [tiling], [features] tables), then `overrides` that are not None.

    Overrides use dotted names for sections: {"tiling.mpp": 0.25, "features.encoder": "resnet50"}.
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
    config = _section(RunConfig, run, "[run]")
    return replace(config, tiling=_section(TileOptions, tiling, "[tiling]"),
                   features=_section(FeatureOptions, feats, "[features]"))  # fmt: skip

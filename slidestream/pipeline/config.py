"""Run configuration: TOML file plus command-line overrides, frozen once built."""

from __future__ import annotations

import difflib
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from types import UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

from tiling import TilingConfig, load_roi
from tiling.config import check_target_mpp
from wsi.deprecation import renamed_keywords, warn_renamed
from wsi.meta import MPP_RANGE, plausible_mpp

__all__ = [
    "FeatureOptions",
    "NucleiOptions",
    "PredictOptions",
    "RunConfig",
    "TileOptions",
    "load_config",
    "tile_options",
]


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


@dataclass(frozen=True)
class NucleiOptions:
    """What the nuclei step runs: the CNN (`model` folder, default the shipped weights) or the `classical`
    baseline, on `device`; `object_type` "cell" or "detection" in nuclei.geojson.gz; `batch_size` tiles per
    forward pass; `workers` post-processing workers per slide; `tile` / `halo` in pixels at the model's mpp
    (`nuclei.SlideNucleiConfig`); `tta` averages the CNN's maps over the four flips (4 forward passes per tile;
    a slide segmented with it is redone by a run without it, and the reverse)."""

    classical: bool = False
    model: str | None = None
    device: str = "auto"
    object_type: str = "cell"
    batch_size: int = 8
    workers: int = 1
    tile: int = 256
    halo: int = 32
    tta: bool = False

    def __post_init__(self):
        if self.object_type not in ("cell", "detection"):
            raise ValueError(f"[nuclei] object_type must be 'cell' or 'detection', got {self.object_type!r}")
        if self.classical and self.model:
            raise ValueError("[nuclei]: classical and model exclude each other (the baseline has no model)")
        if self.classical and self.tta:
            raise ValueError("[nuclei]: tta applies to the CNN, not to the classical baseline")


@dataclass(frozen=True)
class PredictOptions:
    """What the predict step runs: a MIL model folder written by `slidestream mil train` (`model`), the fraction
    of each slide's tiles classified "High attention", and whether heatmaps show raw attention (not its rank)."""

    model: str | None = None
    high_fraction: float = 0.1
    raw_attention: bool = False

    def __post_init__(self):
        if not 0 < self.high_fraction < 1:
            raise ValueError(f"[predict] high_fraction must be between 0 and 1, got {self.high_fraction}")


# Old names of RunConfig fields (and [run] keys), accepted with a DeprecationWarning.
_RUN_RENAMED = {"workers": "slide_workers", "scheduler": "scheduler_address"}


@dataclass(frozen=True)
class RunConfig:
    """What `slidestream run` does. `steps` are run in the pipeline's order.

    `slide_workers` slides are worked on at once (default: one per core), each with `threads_per_worker` threads
    (tiling shards, torch). `executor` says where: "threads" of this process (nothing to start, import or close;
    a crash in a native codec ends the whole run, which a re-run resumes), "forks", worker processes forked from
    this one (nothing imported again, no GIL shared between slides; a crash ends the slides its worker was
    running) or "processes", the worker processes of a local dask cluster (each slide isolated from the others'
    crashes, at about 2 s of start and close per run and a few tenths of a second per slide; benchmarks/RESULTS.md).
    None (the default) is "threads" for a library caller (`run_executor`); `slidestream run` takes
    `steps.default_executor(steps)` instead (forks on Linux for tile-only runs).
    `scheduler_address` (tcp://host:port) sends the work to an existing dask.distributed cluster instead, which
    must answer within `scheduler_timeout` seconds. `dashboard` serves the local cluster's dask dashboard (on
    port 8787, or the next free one) and prints its address (it runs the slides on that cluster's processes).
    """

    out: Path = Path("out")
    steps: tuple[str, ...] = ("tile", "features")
    slide_workers: int | None = None
    threads_per_worker: int = 1
    executor: Literal["threads", "forks", "processes"] | None = None
    scheduler_address: str | None = None
    scheduler_timeout: float = 20.0
    overwrite: bool = False
    progress: bool = True
    tiling: TileOptions = field(default_factory=TileOptions)
    features: FeatureOptions = field(default_factory=FeatureOptions)
    nuclei: NucleiOptions = field(default_factory=NucleiOptions)
    predict: PredictOptions = field(default_factory=PredictOptions)
    dashboard: bool = False

    def __post_init__(self):
        import multiprocessing

        if self.executor == "forks" and "fork" not in multiprocessing.get_all_start_methods():
            raise ValueError("executor 'forks' needs a platform that forks processes (Linux); use "
                             "'threads' or 'processes'")  # fmt: skip

    @property
    def run_executor(self) -> str:
        """Where the slides run without a scheduler address: "processes" with a dashboard (it is the local dask
        cluster's), else `executor`, "threads" when None."""
        return "processes" if self.dashboard else self.executor or "threads"

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


def _section(
    cls, values: dict[str, Any], where: str, renamed: dict[str, str] | None = None, source: str = ""
):
    """`cls(**values)`; errors start with `source` (the file) and `where` (the table)."""
    values = dict(values)
    table, where = where, f"{source}: {where}" if source else where
    for old, new in (renamed or {}).items():
        if old in values:
            if new in values:
                raise ValueError(f"{where}: both {old!r} (deprecated) and {new!r} are set; keep {new!r}")
            warn_renamed(old, new, table, stacklevel=4)
            values[new] = values.pop(old)
    known = set(_keys(cls))
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{where}: {exc}") from None


def _keys(cls) -> dict[str, Any]:
    """The keys a table of `cls` takes and their types (the nested tables of RunConfig are tables of their own)."""
    hints = get_type_hints(cls)
    return {f.name: hints[f.name] for f in fields(cls) if f.name not in ("tiling", "features")}


def _allowed(kind: Any) -> tuple[str, tuple | None]:
    """(what a value of type `kind` is, in words; its allowed values or None) for the types config fields use."""
    if get_origin(kind) in (Union, UnionType):
        members = [k for k in get_args(kind) if k is not type(None)]
        return _allowed(members[0]) if len(members) == 1 else ("a value", None)
    if get_origin(kind) is Literal:
        return "one of " + ", ".join(repr(c) for c in get_args(kind)), get_args(kind)
    if get_origin(kind) is tuple:
        return "a list of strings", None
    if get_origin(kind) is dict:
        return "a table (key = value pairs)", None
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string",
            Path: "a path (a string)"}.get(kind, "a value"), None  # fmt: skip


def _has_type(value: Any, kind: Any) -> bool:
    if get_origin(kind) in (Union, UnionType):
        return any(_has_type(value, k) for k in get_args(kind) if k is not type(None))
    if get_origin(kind) is Literal:
        return isinstance(value, str)  # the choice itself is checked with the allowed values
    if get_origin(kind) is tuple:
        return isinstance(value, list | tuple) and all(isinstance(v, str) for v in value)
    if get_origin(kind) is dict:
        return isinstance(value, dict)
    if kind is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind is Path:
        return isinstance(value, str | Path)
    return isinstance(value, kind)


def _closest(word: str, candidates) -> str:
    """' (did you mean ...?)' naming the candidate closest to `word` (a misspelling, or a longer name holding it)."""
    match = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    match = match or sorted((c for c in candidates if len(c) > 2 and c in word), key=len)[-1:]
    return f" (did you mean {match[0]!r}?)" if match else ""


def _check_table(values: dict[str, Any], table: str, cls, renamed: dict[str, str], source: str) -> None:
    """Refuse a key `cls` does not take and a value of the wrong type or outside the allowed values, naming
    `source` (the file), the table, the key, the value given and what is allowed."""
    keys = _keys(cls) | ({"overlap": int} if table == "tiling" else {})  # overlap: turned into a stride
    for key, value in values.items():
        where = f"{source}: [{table}] {key}"
        if key not in keys and key not in renamed:
            raise ValueError(
                f"{where}: unknown key{_closest(key, keys)}; known keys: {', '.join(sorted(keys))}"
            )
        kind = keys[renamed.get(key, key)]
        what, choices = _allowed(kind)
        if not _has_type(value, kind):
            raise ValueError(f"{where} = {value!r}: must be {what}")
        if choices is not None and value not in choices:
            raise ValueError(f"{where} = {value!r} is not allowed{_closest(value, choices)}; allowed: "
                             f"{', '.join(repr(c) for c in choices)}")  # fmt: skip
        problem = _ranges.get(key, lambda v: None)(value)
        if problem:
            raise ValueError(f"{where} = {value!r}: {problem}")


def _positive(value) -> str | None:
    return None if value > 0 else "must be more than 0"


def _not_negative(value) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _device(value: str) -> str | None:
    kind, _, index = value.partition(":")
    if kind in ("auto", "cpu", "mps") and not index or kind == "cuda" and (not index or index.isdigit()):
        return None
    return "must be auto, cpu, cuda or cuda:N"


def _fraction(value) -> str | None:
    return None if 0 <= value <= 1 else "must be a fraction between 0 and 1"


def _scan_mpp(value) -> str | None:
    return (
        None
        if plausible_mpp(value)
        else f"must be a scan resolution between {MPP_RANGE[0]} and {MPP_RANGE[1]} um/px"
    )


# Allowed ranges of values (types and choices come from the dataclasses' annotations); TilingConfig checks them
# again, in its own words, for values from elsewhere.
_ranges = {"slide_workers": _positive, "workers": _positive, "threads_per_worker": _positive, "size": _positive,
           "stride": _positive, "shard_tiles": _positive, "shard_workers": _positive, "magnification": _positive,
           "min_tissue": _fraction, "slide_mpp": _scan_mpp,
           "scheduler_timeout": _positive, "batch_size": _positive, "loader_workers": _not_negative,
           "overlap": _not_negative, "device": _device, "mpp": check_target_mpp}  # fmt: skip


def _apply_overlap(tiling: dict[str, Any], where: str) -> None:
    """`overlap` (pixels shared by neighbours) becomes the stride it means: size - overlap."""
    if tiling.get("overlap") is None:
        tiling.pop("overlap", None)
        return
    overlap = tiling.pop("overlap")
    if tiling.get("stride") is not None:
        raise ValueError(f"{where}: give a stride or an overlap, not both (stride = size - overlap)")
    size = tiling.get("size", TileOptions.size)
    if not isinstance(size, int) or overlap >= size:
        raise ValueError(
            f"{where}: the overlap ({overlap} px) must be smaller than the tile size ({size} px)"
        )
    tiling["stride"] = size - overlap


def tile_options(where: str = "tiling options", **values: Any) -> TileOptions:
    """TileOptions from the options as given (None: not given, the default), with `overlap` (px shared by
    neighbouring tiles) turned into `stride`; a bad value (or roi_mode "replace" without a roi) is a ValueError
    that starts with `where`."""
    values = {k: v for k, v in values.items() if v is not None}
    _apply_overlap(values, where)
    mpp = values.get("mpp")
    if mpp is not None and check_target_mpp(mpp):
        raise ValueError(f"{where}: mpp {check_target_mpp(mpp)}")
    options = _section(TileOptions, values, where)
    if options.roi is None and options.roi_mode == "replace":  # it would be silently ignored
        raise ValueError(f"{where}: roi_mode 'replace' tiles a ROI instead of the tissue, but no roi is given "
                         "(--roi FILE_OR_FOLDER)")  # fmt: skip
    if options.roi is not None:  # a bad ROI is refused once, before any slide, not once per slide
        roi = Path(options.roi)
        if not roi.exists():
            raise ValueError(f"{where}: roi {options.roi}: no such file or folder")
        if roi.is_file():
            load_roi(roi)
    return options


def load_config(path: str | Path | None = None, **overrides: Any) -> RunConfig:
    """Defaults, then the TOML file ([run], [tiling], [features], [nuclei], [predict] tables), then `overrides` that are not None.

    Overrides use dotted names for sections: {"tiling.mpp": 0.25, "features.encoder": "resnet50"}. Every key
    of the file is checked here, where the config is built: its type, its allowed values (the message names
    the file, the table, the key, the value and what is allowed) and unknown keys (with the closest known
    one). [tiling] may give `overlap` (px shared by neighbouring tiles) instead of `stride`, and
    `magnification` instead of `mpp`. Old names (`workers`, `scheduler` in [run]) are accepted with a
    DeprecationWarning.
    """
    data: dict[str, Any] = {}
    source = "command line"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ValueError(f"{path}: no such config file")
        with open(path, "rb") as f:
            try:
                data = tomllib.load(f)
            except tomllib.TOMLDecodeError as exc:
                raise ValueError(f"{path}: not valid TOML ({exc})") from exc
    tables = {
        "run": (RunConfig, _RUN_RENAMED),
        "tiling": (TileOptions, {}),
        "features": (FeatureOptions, {}),
        "nuclei": (NucleiOptions, {}),
        "predict": (PredictOptions, {}),
    }
    for name, value in data.items():
        if name not in tables:
            raise ValueError(f"{path}: unknown table [{name}]{_closest(name, tables)}; use [run], [tiling], "
                             "[features], [nuclei] and [predict]")  # fmt: skip
        if not isinstance(value, dict):
            raise ValueError(
                f"{path}: {name} = {value!r} must be a table ([{name}] followed by key = value lines)"
            )
        _check_table(value, name, *tables[name], source=source)
    if "magnification" in data.get("tiling", {}) and "mpp" in data.get("tiling", {}):
        raise ValueError(f"{path}: [tiling] gives both mpp and magnification; keep one")
    run = dict(data.get("run", {}))
    tiling = dict(data.get("tiling", {}))
    feats = dict(data.get("features", {}))
    nuclei = dict(data.get("nuclei", {}))
    predict = dict(data.get("predict", {}))
    for key, value in overrides.items():
        if value is None:
            continue
        section, _, name = key.rpartition(".")
        target = {"": run, "tiling": tiling, "features": feats, "nuclei": nuclei, "predict": predict}[section]
        if isinstance(value, dict) and isinstance(target.get(name), dict):
            value = {**target[name], **value}  # e.g. --encoder-arg on top of [features.encoder_args]
        if section == "tiling" and name in ("mpp", "magnification"):
            target.pop("magnification" if name == "mpp" else "mpp", None)  # the command line's choice wins
        if section == "tiling" and name in ("stride", "overlap"):
            target.pop("overlap" if name == "stride" else "stride", None)
        target[name] = value
    if "steps" in run:
        run["steps"] = tuple(run["steps"])
    if "out" in run:
        run["out"] = Path(run["out"])
    where = f"{source}: " if path is not None else ""
    config = _section(RunConfig, run, "[run]", _RUN_RENAMED, source=where[:-2])
    return replace(config, tiling=tile_options(f"{where}[tiling]", **tiling),
                   features=_section(FeatureOptions, feats, "[features]", source=where[:-2]),
                   nuclei=_section(NucleiOptions, nuclei, "[nuclei]", source=where[:-2]),
                   predict=_section(PredictOptions, predict, "[predict]", source=where[:-2]))  # fmt: skip

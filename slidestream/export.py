"""Export a run folder's patch stores in the layouts other toolkits read, so their MIL code runs on our tiles.

`clam` (CLAM and TRIDENT):

    DIR/patches/<slide_id>.h5              coords (N, 2) int64, level-0 x, y of each tile's top-left corner;
                                           attrs patch_level, patch_size (CLAM: read patch_size x patch_size at
                                           patch_level), patch_size_level0, target_magnification,
                                           level0_magnification, overlap (TRIDENT), mpp, slide_mpp, name
    DIR/features/h5_files/<slide_id>.h5    features (N, D) float32 and the same coords
    DIR/features/pt_files/<slide_id>.pt    torch.save of the (N, D) float32 features tensor
    DIR/process_list_autogen.csv           one row per exported slide (slide_id with the file's extension, as
                                           CLAM's feature extraction reads it), with counts and the tiling

Stores are read only through `tiling.PatchStore`. Magnifications follow the 10 um / mpp convention
(0.25 mpp = 40x). Every file is written to a temporary name and renamed; files already in DIR are refused
unless `overwrite`.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wsi.atomic import atomic_file

__all__ = [
    "ExportConfig",
    "ExportResult",
    "SlideExport",
    "export",
    "exporter",
    "list_export_formats",
    "tile_attrs",
]

_EXPORTERS: dict[str, Callable] = {}


def exporter(fn: Callable) -> Callable:
    """Register an export format under the function's name."""
    _EXPORTERS[fn.__name__] = fn
    return fn


def list_export_formats() -> list[str]:
    return sorted(_EXPORTERS)


@dataclass(frozen=True)
class ExportConfig:
    results: Path  # a run folder: RESULTS/slides/<slide_id>/patches.zarr
    out: Path
    format: str = "clam"
    features: str | None = None  # feature name in the stores; None: the only one each store has
    overwrite: bool = False

    def __post_init__(self):
        if self.format not in _EXPORTERS:
            raise ValueError(f"unknown export format {self.format!r}; known: {list_export_formats()}")


@dataclass(frozen=True)
class SlideExport:
    slide_id: str
    tiles: int
    files: tuple[Path, ...]
    features: str | None  # feature name exported, or None when the store has none
    feature_dim: int | None


@dataclass(frozen=True)
class ExportResult:
    slides: tuple[SlideExport, ...]
    skipped: tuple[tuple[str, str], ...] = field(default_factory=tuple)  # (slide_id, reason)
    process_list: Path | None = None


def export(config: ExportConfig) -> ExportResult:
    """Export every complete patch store under `config.results` in `config.format`.

    A partial store, or one without the asked features, is skipped with its reason; the others go on.
    """
    stores = sorted(Path(config.results).glob("slides/*/patches.zarr"))
    if not Path(config.results).is_dir():
        raise ValueError(f"{config.results}: no such folder")
    if not stores:
        raise ValueError(
            f"no patch stores under {config.results}/slides/*/patches.zarr; run `slidestream tile`"
        )
    return _EXPORTERS[config.format](config, stores)


@exporter
def clam(config: ExportConfig, stores: list[Path]) -> ExportResult:
    """CLAM / TRIDENT layout (module docstring)."""
    from tiling import PatchStore, StoreError

    out = Path(config.out)
    if not config.overwrite:  # refuse before writing anything, so a refused export leaves no half of itself
        for target in [out / "process_list_autogen.csv"] + [
            out / sub / f"{path.parent.name}{suffix}"
            for path in stores
            for sub, suffix in (
                ("patches", ".h5"),
                ("features/h5_files", ".h5"),
                ("features/pt_files", ".pt"),
            )
        ]:
            _refuse_existing(target, overwrite=False)
    exported, skipped, rows = [], [], []
    for path in stores:
        slide_id = path.parent.name
        try:
            store = PatchStore.open(path)
        except StoreError as exc:
            skipped.append((slide_id, str(exc)))
            continue
        if not store.is_complete:
            skipped.append(
                (slide_id, "partial patch store (tiling did not finish); re-run `slidestream tile`")
            )
            continue
        try:
            feature_name = _feature_name(store, config.features)
        except ValueError as exc:
            skipped.append((slide_id, str(exc)))
            continue
        done = _export_clam_slide(store, slide_id, out, feature_name, config.overwrite)
        exported.append(done)
        rows.append(_process_row(store, done))
    process_list = None
    if rows:
        process_list = out / "process_list_autogen.csv"
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        _write_atomic(process_list, buffer.getvalue().encode(), config.overwrite)
    return ExportResult(tuple(exported), tuple(skipped), process_list)


def _feature_name(store, wanted: str | None) -> str | None:
    names = store.feature_names()
    if wanted is not None:
        if wanted not in names:
            raise ValueError(
                f"no features named {wanted!r} (has {names or 'none'}); run `slidestream features`"
            )
        return wanted
    if len(names) > 1:
        raise ValueError(f"several feature sets {names}: choose one with --features")
    return names[0] if names else None


def tile_attrs(store, slide_id: str) -> dict:
    """CLAM's and TRIDENT's coords attributes from the store's tiling (see the module docstring)."""
    from tiling import TileSpec

    spec = TileSpec.from_dict(store.attrs["tiling"])
    return {
        "patch_level": int(spec.level),
        "patch_size": int(spec.read_size),  # CLAM: the box read at patch_level
        "downsample": np.array([spec.downsample, spec.downsample], dtype=np.float64),
        "patch_size_level0": int(round(spec.extent)),
        "target_magnification": 10.0 / spec.mpp,
        "level0_magnification": 10.0 / spec.slide_mpp,
        "overlap": int(spec.size - spec.stride),
        "mpp": float(spec.mpp),
        "slide_mpp": float(spec.slide_mpp),
        "tile_size": int(spec.size),
        "name": slide_id,
    }


def _export_clam_slide(
    store, slide_id: str, out: Path, feature_name: str | None, overwrite: bool
) -> SlideExport:
    import h5py
    import torch

    coords = np.asarray(store.coords, dtype=np.int64)
    attrs = tile_attrs(store, slide_id)
    files = [_write_h5(out / "patches" / f"{slide_id}.h5", {"coords": coords}, attrs, overwrite, h5py)]
    dim = None
    if feature_name is not None:
        features = np.asarray(store.features(feature_name)[:], dtype=np.float32)
        dim = int(features.shape[1])
        files.append(_write_h5(out / "features" / "h5_files" / f"{slide_id}.h5",
                               {"features": features, "coords": coords}, attrs, overwrite, h5py))  # fmt: skip
        buffer = io.BytesIO()
        torch.save(torch.from_numpy(features), buffer)
        pt = out / "features" / "pt_files" / f"{slide_id}.pt"
        files.append(_write_atomic(pt, buffer.getvalue(), overwrite))
    return SlideExport(slide_id, len(coords), tuple(files), feature_name, dim)


def _process_row(store, done: SlideExport) -> dict:
    attrs = tile_attrs(store, done.slide_id)
    slide_path = Path(store.attrs.get("slide", {}).get("path", done.slide_id))
    return {
        "slide_id": done.slide_id + slide_path.suffix,
        "status": "processed",
        "process": 0,
        "n_patches": done.tiles,
        "patch_level": attrs["patch_level"],
        "patch_size": attrs["patch_size"],
        "mpp": attrs["mpp"],
        "tile_size": attrs["tile_size"],
        "features": done.features or "",
        "feature_dim": done.feature_dim or "",
        "slide_path": str(slide_path),
    }


def _write_h5(path: Path, datasets: dict, coords_attrs: dict, overwrite: bool, h5py) -> Path:
    _refuse_existing(path, overwrite)
    with atomic_file(path) as tmp, h5py.File(tmp, "w") as f:
        for name, data in datasets.items():
            f.create_dataset(name, data=data)
        f["coords"].attrs.update(coords_attrs)
    return path


def _write_atomic(path: Path, data: bytes, overwrite: bool) -> Path:
    _refuse_existing(path, overwrite)
    with atomic_file(path) as tmp:
        tmp.write_bytes(data)
    return path


def _refuse_existing(path: Path, overwrite: bool) -> None:
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; choose another folder or pass --overwrite to replace it")

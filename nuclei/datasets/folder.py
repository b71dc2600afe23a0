"""Folders of image + instance-mask pairs: `images/` with `masks/` (or `labels/`) of the same names, or
`NAME.png` beside `NAME_mask.png` / `NAME_label.tif` / `NAME_labels.tif` in one folder.

Masks are integer instance ids (0 background) in PNG/TIFF (16/32-bit) or .npy. Optional, with `images/`:
`types/` of the same names (per-pixel class indices, 0 background, 255 unknown) and a `dataset.json` giving
`{"mpp": um/px, "classes": ["background", ...]}` (the names of the type indices). Without an mpp there (or
given to `load_dataset`) the resolution is unknown.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from nuclei.datasets._io import IMAGE_SUFFIXES, images_by_stem, read_labels, read_rgb
from nuclei.datasets.base import UNKNOWN_TYPE, DatasetError, NucleiTiles
from nuclei.datasets.registry import register_layout

__all__ = ["load_folder"]

_MASK_DIRS = ("masks", "labels", "instances")
_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_inst", "_instances")


_LABEL_SUFFIXES = (*IMAGE_SUFFIXES, ".npy")


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    images_dir = path / "images"
    if images_dir.is_dir():
        for name in _MASK_DIRS:
            masks_dir = path / name
            if masks_dir.is_dir():
                masks = images_by_stem(masks_dir, _LABEL_SUFFIXES)
                imgs = images_by_stem(images_dir)
                return [(imgs[k], masks[k]) for k in sorted(imgs) if k in masks]
    files = images_by_stem(path)
    out = []
    for stem, img in files.items():
        if stem.endswith(_SUFFIXES):
            continue
        for suffix in _SUFFIXES:
            if stem + suffix in files:
                out.append((img, files[stem + suffix]))
                break
    return out


def _detect(path: Path) -> bool:
    return bool(_pairs(path))


def _metadata(path: Path) -> dict:
    """`dataset.json` of the folder ({} when there is none), its keys checked."""
    meta_path = path / "dataset.json"
    if not meta_path.is_file():
        return {}
    try:
        meta = json.loads(meta_path.read_text())
    except json.JSONDecodeError as exc:
        raise DatasetError(f"{meta_path}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise DatasetError(f"{meta_path}: expected a JSON object with 'mpp' and/or 'classes'")
    mpp = meta.get("mpp")
    if mpp is not None and not (isinstance(mpp, (int, float)) and mpp > 0):
        raise DatasetError(f"{meta_path}: 'mpp' must be a positive number (um/px), got {mpp!r}")
    classes = meta.get("classes")
    if classes is not None and not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):
        raise DatasetError(f"{meta_path}: 'classes' must be a list of class names, index 0 background")
    return meta


@register_layout("folder", "images/ + masks/ (or labels/) with the same file names, or NAME.png beside "
                 "NAME_mask.png (integer instance ids); optional types/ and dataset.json", _detect,
                 priority=90)  # fmt: skip
def load_folder(path: Path, mpp: float | None = None) -> NucleiTiles:
    path = Path(path)
    meta = _metadata(path)
    classes = tuple(meta["classes"]) if meta.get("classes") else None
    types_dir = path / "types"
    type_files = (
        images_by_stem(types_dir, _LABEL_SUFFIXES)
        if (path / "images").is_dir() and types_dir.is_dir()
        else None
    )
    images, instances, types = [], [], []
    for img_path, mask_path in _pairs(path):
        img, inst = read_rgb(img_path), read_labels(mask_path)
        if inst.shape != img.shape[:2]:
            raise DatasetError(f"{mask_path}: mask {inst.shape} does not match {img_path} {img.shape[:2]}")
        images.append(img)
        instances.append(inst)
        if type_files is not None:
            if img_path.stem not in type_files:
                raise DatasetError(
                    f"{types_dir}: no type map for {img_path.name} (types/ must cover every image)"
                )
            typ = read_labels(type_files[img_path.stem])
            if typ.shape != inst.shape:
                raise DatasetError(
                    f"{type_files[img_path.stem]}: types {typ.shape} do not match the mask {inst.shape}"
                )
            known = typ[typ != UNKNOWN_TYPE]
            if classes is not None and known.size and known.max() >= len(classes):
                raise DatasetError(f"{type_files[img_path.stem]}: type {known.max()} but dataset.json names "
                                   f"{len(classes)} classes ({UNKNOWN_TYPE}: unknown)")  # fmt: skip
            types.append(np.where(inst > 0, typ, 0).astype(np.uint8))
    if not images:
        raise DatasetError(f"{path}: no image + mask pairs found")
    if type_files is not None and classes is None:
        raise DatasetError(
            f"{types_dir}: type maps need the class names in {path / 'dataset.json'} ('classes')"
        )
    mpp = mpp if mpp is not None else meta.get("mpp")
    return NucleiTiles(images, instances, types if type_files is not None else None, mpp=mpp, classes=classes,
                       source=f"folder:{path}")  # fmt: skip

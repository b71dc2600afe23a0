"""Folders of image + instance-mask pairs: `images/` with `masks/` (or `labels/`) of the same names, or
`NAME.png` beside `NAME_mask.png` / `NAME_label.tif` / `NAME_labels.tif` in one folder.

Masks are integer instance ids (0 background) in PNG/TIFF (16/32-bit) or .npy; the resolution is unknown, so
`mpp` must be given.
"""

from __future__ import annotations

from pathlib import Path

from nuclei.datasets._io import IMAGE_SUFFIXES, images_by_stem, read_labels, read_rgb
from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.registry import register_layout

__all__ = ["load_folder"]

_MASK_DIRS = ("masks", "labels", "instances")
_SUFFIXES = ("_mask", "_masks", "_label", "_labels", "_inst", "_instances")


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    images_dir = path / "images"
    if images_dir.is_dir():
        for name in _MASK_DIRS:
            masks_dir = path / name
            if masks_dir.is_dir():
                masks = {
                    p.stem: p for p in masks_dir.iterdir() if p.suffix.lower() in (*IMAGE_SUFFIXES, ".npy")
                }
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


@register_layout("folder", "images/ + masks/ (or labels/) with the same file names, or NAME.png beside "
                 "NAME_mask.png (integer instance ids)", _detect, priority=90)  # fmt: skip
def load_folder(path: Path, mpp: float | None = None) -> NucleiTiles:
    images, instances = [], []
    for img_path, mask_path in _pairs(Path(path)):
        img, inst = read_rgb(img_path), read_labels(mask_path)
        if inst.shape != img.shape[:2]:
            raise DatasetError(f"{mask_path}: mask {inst.shape} does not match {img_path} {img.shape[:2]}")
        images.append(img)
        instances.append(inst)
    if not images:
        raise DatasetError(f"{path}: no image + mask pairs found")
    return NucleiTiles(images, instances, None, mpp=mpp, source=f"folder:{path}")

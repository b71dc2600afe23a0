"""CoNSeP and Lizard: images (.png) with MATLAB label files (.mat) of the same name in Images/ and Labels/.

CoNSeP .mat files hold `inst_map` and `type_map` (classes 1-7; 40x, 0.25 um/px). Lizard .mat files hold
`inst_map` with per-instance `id` and `class` vectors (classes 1-6; 20x, 0.5 um/px). Types are kept in each
dataset's own classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.io import loadmat

from nuclei.datasets._io import images_by_stem, read_rgb
from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.registry import register_layout

__all__ = ["load_consep"]

CONSEP_CLASSES = ("background", "other", "inflammatory", "healthy epithelial", "dysplastic/malignant epithelial",
                  "fibroblast", "muscle", "endothelial")  # fmt: skip
LIZARD_CLASSES = (
    "background",
    "neutrophil",
    "epithelial",
    "lymphocyte",
    "plasma",
    "eosinophil",
    "connective",
)


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    out = []
    for labels in sorted(p for p in path.rglob("*") if p.is_dir() and p.name.lower() in ("labels", "label")):
        images = labels.parent / "Images" if (labels.parent / "Images").is_dir() else labels.parent / "images"
        if not images.is_dir():
            continue
        found = images_by_stem(images)
        for mat in sorted(labels.glob("*.mat")):
            if mat.stem in found:
                out.append((found[mat.stem], mat))
    return out


def _detect(path: Path) -> bool:
    return bool(_pairs(path))


def _read_mat(path: Path) -> tuple[np.ndarray, np.ndarray, bool]:
    """(instances, types, is_lizard) from one label file."""
    try:
        m = loadmat(path)
    except Exception as exc:  # scipy raises several types for bad files
        raise DatasetError(f"{path}: not a readable .mat file ({exc})") from exc
    if "inst_map" not in m:
        raise DatasetError(f"{path}: no inst_map (keys: {sorted(k for k in m if not k.startswith('__'))})")
    inst = np.asarray(m["inst_map"]).astype(np.int32)
    if "type_map" in m:
        return inst, np.asarray(m["type_map"]).astype(np.uint8), False
    if "class" in m and "id" in m:
        ids = np.asarray(m["id"]).ravel().astype(np.int64)
        cls = np.asarray(m["class"]).ravel().astype(np.int64)
        lut = np.zeros(max(int(inst.max()), int(ids.max(initial=0))) + 1, np.uint8)
        lut[ids] = cls
        return inst, lut[inst], True
    return inst, np.zeros(inst.shape, np.uint8), False


@register_layout("consep", "Images/*.png + Labels/*.mat (inst_map with type_map, or Lizard's id/class) (CoNSeP, "
                 "Lizard)", _detect)  # fmt: skip
def load_consep(path: Path, mpp: float | None = None) -> NucleiTiles:
    images, instances, types = [], [], []
    lizard = False
    for img_path, mat in _pairs(Path(path)):
        img = read_rgb(img_path)
        inst, typ, lizard = _read_mat(mat)
        if inst.shape != img.shape[:2]:
            raise DatasetError(f"{mat}: inst_map {inst.shape} does not match {img_path} {img.shape[:2]}")
        images.append(img)
        instances.append(inst)
        types.append(typ)
    default_mpp = 0.5 if lizard else 0.25
    classes = LIZARD_CLASSES if lizard else CONSEP_CLASSES
    return NucleiTiles(images, instances, types, mpp=mpp or default_mpp, classes=classes,
                       source=f"{'lizard' if lizard else 'consep'}:{path}")  # fmt: skip

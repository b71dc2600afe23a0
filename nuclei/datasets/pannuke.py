"""PanNuke: images.npy (N, 256, 256, 3) and masks.npy (N, 256, 256, 6) per fold, at 40x (0.25 um/px).

Mask channels 0-4 hold instance ids of neoplastic, inflammatory, connective, dead and epithelial nuclei;
channel 5 is background. Folds may sit in subfolders (`images/fold1/images.npy`, `masks/fold1/masks.npy`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.registry import register_layout
from wsi.synthetic.cells import CELL_TYPES

__all__ = ["load_pannuke", "pannuke_instances"]

PANNUKE_MPP = 0.25


def _pairs(path: Path) -> list[tuple[Path, Path]]:
    images = sorted(path.rglob("images.npy"))
    masks = sorted(path.rglob("masks.npy"))
    if len(images) != len(masks):
        raise DatasetError(f"{path}: {len(images)} images.npy but {len(masks)} masks.npy files")
    return list(zip(images, masks, strict=True))


def pannuke_instances(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One (H, W, 6) PanNuke mask -> (instances int32 numbered 1..N, types uint8 in PanNuke class order)."""
    if mask.ndim != 3 or mask.shape[2] != 6:
        raise DatasetError(f"a PanNuke mask must be (H, W, 6), got {mask.shape}")
    inst = np.zeros(mask.shape[:2], np.int32)
    types = np.zeros(mask.shape[:2], np.uint8)
    n = 0
    for ch in range(5):
        layer = mask[..., ch].astype(np.int64)
        for lab in np.unique(layer[layer > 0]):
            m = layer == lab
            n += 1
            inst[m] = n
            types[m] = ch + 1
    return inst, types


def _detect(path: Path) -> bool:
    return any(path.rglob("images.npy")) and any(path.rglob("masks.npy"))


@register_layout("pannuke", "images.npy (N, H, W, 3) + masks.npy (N, H, W, 6), optionally in fold folders",
                 _detect, priority=10)  # fmt: skip
def load_pannuke(path: Path, mpp: float | None = None) -> NucleiTiles:
    """Every fold under `path`."""
    images, instances, types = [], [], []
    for img_path, mask_path in _pairs(Path(path)):
        imgs = np.load(img_path, mmap_mode="r", allow_pickle=False)
        masks = np.load(mask_path, mmap_mode="r", allow_pickle=False)
        if imgs.ndim != 4 or imgs.shape[-1] != 3 or masks.shape[:3] != imgs.shape[:3] or masks.shape[-1] != 6:
            raise DatasetError(f"{img_path} {imgs.shape} and {mask_path} {masks.shape} must be (N, H, W, 3) and "
                               "(N, H, W, 6)")  # fmt: skip
        for i in range(len(imgs)):
            images.append(np.clip(np.asarray(imgs[i]), 0, 255).astype(np.uint8))
            inst, typ = pannuke_instances(np.asarray(masks[i]))
            instances.append(inst)
            types.append(typ)
    return NucleiTiles(
        images, instances, types, mpp=mpp or PANNUKE_MPP, classes=CELL_TYPES, source=f"pannuke:{path}"
    )

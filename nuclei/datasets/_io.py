"""Reading images and label files shared by the dataset loaders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from nuclei.datasets.base import DatasetError

IMAGE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file (alpha dropped)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    else:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"))
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise DatasetError(f"{path}: expected an RGB image, got shape {arr.shape}")
    arr = arr[..., :3]
    if arr.dtype != np.uint8:
        arr = np.clip(arr, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(arr)


def read_labels(path: Path) -> np.ndarray:
    """(H, W) int32 instance labels from a PNG/TIFF (16/32-bit ids, or one channel of an RGB-encoded file)."""
    if path.suffix.lower() in (".tif", ".tiff"):
        import tifffile

        arr = tifffile.imread(path)
    elif path.suffix.lower() == ".npy":
        arr = np.load(path, allow_pickle=False)
    else:
        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim == 3:  # RGB-encoded ids: R + 256 G + 65536 B
        arr = arr[..., 0].astype(np.int64) + 256 * arr[..., 1] + 65536 * arr[..., 2]
    if arr.ndim != 2:
        raise DatasetError(f"{path}: expected an (H, W) instance label image, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(arr == np.round(arr)):
            raise DatasetError(f"{path}: instance labels must be integers")
    return arr.astype(np.int32)


def images_by_stem(folder: Path, suffixes: tuple[str, ...] = IMAGE_SUFFIXES) -> dict[str, Path]:
    """{file stem: path} of the files in `folder` whose (lower-cased) suffix is one of `suffixes`."""
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in suffixes and p.is_file()}

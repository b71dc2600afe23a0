"""The in-memory form every nuclei dataset loader returns."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["UNKNOWN_TYPE", "DatasetError", "NucleiTiles"]

UNKNOWN_TYPE = 255  # a type map value: a nucleus pixel whose class is not known (the type loss skips it)


class DatasetError(Exception):
    """A dataset folder or file cannot be read: unknown layout, missing files, mismatched shapes."""


@dataclass(frozen=True)
class NucleiTiles:
    """Images with instance (and optionally type) labels.

    `images` (N, H, W, 3) uint8 RGB; `instances` (N, H, W) int32, 0 background, ids unique per image;
    `types` (N, H, W) uint8 class index per pixel (0 background, `UNKNOWN_TYPE` unknown) or None; `mpp` None
    when unknown; `ignore` (N, H, W) bool, pixels without a label (pseudo-labels' uncertain pixels), or None.
    Images of different sizes are held as lists of arrays with the same per-item shapes.
    """

    images: list[np.ndarray]
    instances: list[np.ndarray]
    types: list[np.ndarray] | None = None
    mpp: float | None = None
    classes: tuple[str, ...] | None = None
    source: str = ""
    ignore: list[np.ndarray] | None = None

    def __post_init__(self):
        if len(self.images) != len(self.instances):
            raise ValueError(f"{len(self.images)} images but {len(self.instances)} instance maps")
        if self.types is not None and len(self.types) != len(self.images):
            raise ValueError(f"{len(self.images)} images but {len(self.types)} type maps")
        for i, (im, inst) in enumerate(zip(self.images, self.instances, strict=True)):
            if im.ndim != 3 or im.shape[2] != 3 or im.dtype != np.uint8:
                raise ValueError(f"image {i} must be (H, W, 3) uint8, got {im.dtype} {im.shape}")
            if inst.shape != im.shape[:2]:
                raise ValueError(f"instances {i} must be (H, W) = {im.shape[:2]}, got {inst.shape}")
        if self.ignore is not None:
            if len(self.ignore) != len(self.images):
                raise ValueError(f"{len(self.images)} images but {len(self.ignore)} ignore masks")
            for i, (im, ig) in enumerate(zip(self.images, self.ignore, strict=True)):
                if ig.shape != im.shape[:2] or ig.dtype != bool:
                    raise ValueError(
                        f"ignore {i} must be (H, W) = {im.shape[:2]} bool, got {ig.dtype} {ig.shape}"
                    )

    def __len__(self) -> int:
        return len(self.images)

    def type_map(self, i: int) -> np.ndarray:
        """Types of image i; where the dataset has none, `UNKNOWN_TYPE` on nuclei and 0 on background."""
        if self.types is None:
            return np.where(self.instances[i] > 0, UNKNOWN_TYPE, 0).astype(np.uint8)
        return self.types[i]

    def ignore_map(self, i: int) -> np.ndarray:
        """Unlabelled pixels of image i; all False where the dataset labels every pixel."""
        if self.ignore is None:
            return np.zeros(self.instances[i].shape, bool)
        return self.ignore[i]

    def subset(self, index) -> NucleiTiles:
        """The tiles at positions `index` (a sequence of ints)."""
        idx = list(index)
        return NucleiTiles(
            images=[self.images[i] for i in idx],
            instances=[self.instances[i] for i in idx],
            types=None if self.types is None else [self.types[i] for i in idx],
            mpp=self.mpp,
            classes=self.classes,
            source=self.source,
            ignore=None if self.ignore is None else [self.ignore[i] for i in idx],
        )

"""`PatchDataset`: a torch Dataset over a PatchStore (or over the slide, for coords-only stores)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from tiling.grid import TileSpec
from tiling.reader import TileReader
from tiling.store import PatchStore

__all__ = ["PatchDataset", "tile_reader_for"]


def tile_reader_for(store: PatchStore, slide_path: str | Path | None = None) -> TileReader:
    """A reader of the store's tiles from its slide (for coords-only stores), at the store's tiling spec."""
    attrs = store.attrs
    spec = TileSpec.from_dict(attrs["tiling"])
    path = Path(slide_path or attrs["slide"]["path"])
    if not path.exists():
        raise FileNotFoundError(f"{store.path}: coords-only store, and its slide {path} is not there")
    return TileReader(path, spec, backend=attrs["slide"].get("backend"), slide_mpp=attrs["slide"].get("mpp"))


class PatchDataset(Dataset):
    """Items are (image, index): image a float tensor (3, S, S) in [0, 1] unless `transform` says otherwise.

    `transform` receives the (S, S, 3) uint8 array. Safe with DataLoader workers: the zarr handle (or the slide
    handle of a coords-only store) is opened lazily in each worker process.
    """

    def __init__(self, store: PatchStore | str | Path, transform: Callable | None = None,
                 slide_path: str | Path | None = None):  # fmt: skip
        store = store if isinstance(store, PatchStore) else PatchStore.open(store)
        if not store.is_complete:
            raise ValueError(
                f"{store.path}: the store is partial (tiling did not finish); re-run tiling first"
            )
        self.path = store.path
        self.transform = transform
        self.slide_path = slide_path
        self._length = len(store)
        self._coords_only = store.patches is None
        self._coords = store.coords if self._coords_only else None
        self._reader = tile_reader_for(store, slide_path) if self._coords_only else None
        self._patches = None

    def __len__(self) -> int:
        return self._length

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_patches"] = None  # reopened in the worker
        return state

    def read(self, index: int) -> np.ndarray:
        """The (S, S, 3) uint8 patch `index`."""
        if self._coords_only:
            x, y = self._coords[index]
            return self._reader.read(int(x), int(y))
        return self._patch_array()[index]

    def read_rows(self, start: int, stop: int) -> np.ndarray:
        """Patches start..stop-1 as one (n, S, S, 3) uint8 array: a contiguous slice reads each shard once."""
        if self._coords_only:
            return self._reader.read_many(self._coords[start:stop])
        return self._patch_array()[start:stop]

    def _patch_array(self):
        if self._patches is None:
            self._patches = PatchStore.open(self.path).patches
        return self._patches

    def __getitem__(self, index: int):
        if not 0 <= index < self._length:
            raise IndexError(f"index {index} out of range for {self._length} patches")
        patch = self.read(index)
        if self.transform is not None:
            return self.transform(patch), index
        return torch.from_numpy(np.array(patch, copy=True)).permute(2, 0, 1).float() / 255.0, index


class PatchBatches(Dataset):
    """Item i is (uint8 (b, S, S, 3) array, first index): contiguous row slices, the fast way to read a store.

    Use with `DataLoader(batch_size=None)`. Slicing whole rows reads each shard once; reading single tiles
    costs about ten times more per tile. Coords-only stores read from the slide.
    """

    def __init__(
        self, store: PatchStore | str | Path, batch_size: int = 64, slide_path: str | Path | None = None
    ):
        self._single = PatchDataset(store, slide_path=slide_path)
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self.batch_size = batch_size

    def __len__(self) -> int:
        return -(-len(self._single) // self.batch_size)

    def __getitem__(self, index: int):
        start = index * self.batch_size
        stop = min(len(self._single), start + self.batch_size)
        if not 0 <= start < len(self._single):
            raise IndexError(f"batch {index} out of range")
        return self._single.read_rows(start, stop), start

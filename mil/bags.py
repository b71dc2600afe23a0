"""Bags for MIL: each slide's tile features, read lazily from its patch store, with slide-level labels."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mil.context import SpatialContext
from tiling import PatchStore, TileSpec

__all__ = ["Bag", "BagBatch", "BagDataset", "collate_bags", "match_slides", "read_bag", "read_labels"]


def read_labels(path: str | Path, slide_column: str = "slide_id") -> pd.DataFrame:
    """A labels table keyed by slide id (CSV or TSV). Raises when the key column is missing or repeated."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such labels file")
    table = pd.read_csv(path, sep=None, engine="python", dtype={slide_column: str})
    if slide_column not in table.columns:
        raise ValueError(f"{path}: no {slide_column!r} column (columns: {list(table.columns)})")
    repeated = table[slide_column][table[slide_column].duplicated()].tolist()
    if repeated:
        raise ValueError(f"{path}: slide ids listed more than once: {repeated[:10]}")
    return table.set_index(slide_column)


def match_slides(
    labelled: Sequence[str], stored: Sequence[str], subset: bool = False, subset_option: str = "subset=True"
) -> list[str]:
    """Check a labels table's slide ids against the stores' ids: one ValueError listing the ids labelled more
    than once, the labelled slides without a store and the stores without a label. With `subset` labelled
    slides without a store are allowed (one master table for many folders) and returned, sorted: the rows to
    leave out. `subset_option` is how the caller's user turns `subset` on (named in the error's hint)."""
    ids = pd.Series([str(i) for i in labelled], dtype=object)
    repeated = sorted(set(ids[ids.duplicated()]))
    unknown = sorted(set(ids) - set(stored))
    unlabelled = sorted(set(stored) - set(ids))
    parts = []
    if repeated:
        parts.append(f"{len(repeated)} slide id(s) listed more than once: {repeated[:20]}")
    if unknown and not subset:
        parts.append(f"{len(unknown)} labelled slide(s) have no patch store: {unknown[:20]}")
    if unlabelled:
        parts.append(f"{len(unlabelled)} slide(s) have no label: {unlabelled[:20]}")
    if parts:
        hint = (
            f" ({subset_option} uses the slides present)" if unknown and not subset and not unlabelled else ""
        )
        raise ValueError("labels and slides do not match: " + "; ".join(parts) + hint)
    return unknown if subset else []


@dataclass(frozen=True)
class Bag:
    features: torch.Tensor  # (n, D) float32
    label: torch.Tensor
    slide_id: str
    index: int


@dataclass(frozen=True)
class BagBatch:
    """Padded bags: features (B, N, D), mask (B, N) true for real tiles, labels (B, ...)."""

    features: torch.Tensor
    mask: torch.Tensor
    labels: torch.Tensor
    slide_ids: list[str]


def read_bag(store: PatchStore, feature: str, context: SpatialContext | None = None) -> np.ndarray:
    """A store's tile features (N, D) as float32; with `context`, each tile's features followed by its
    neighbourhood's (`mil.SpatialContext`, on the store's tile grid: its coordinates and stride)."""
    features = np.asarray(store.features(feature)[:], dtype=np.float32)
    if context is None:
        return features
    step = TileSpec.from_dict(store.attrs["tiling"]).stride_level0
    return context(features, np.asarray(store.coords[:]), step)


def _slide_id(store: PatchStore) -> str:
    """The id of a store given without one: its `slide_id` attribute, else its folder's name."""
    return str(store.attrs.get("slide_id") or store.path.parent.name)


def _label_table(labels) -> pd.DataFrame:
    """The labels as a table indexed by slide id (str); repeated ids, in whatever form, are refused by name."""
    if isinstance(labels, (str, Path)):
        return read_labels(labels)
    if isinstance(labels, pd.DataFrame):
        table = labels.copy()
    else:  # a mapping id -> label, or (id, label) pairs: dict() would keep only the last of repeated ids
        pairs = list(labels.items()) if hasattr(labels, "items") else [tuple(p) for p in labels]
        table = pd.DataFrame({"label": [v for _, v in pairs]}, index=[k for k, _ in pairs])
    table.index = table.index.astype(str)  # 7 and "7" are the same slide
    repeated = sorted(set(table.index[table.index.duplicated()]))
    if repeated:
        raise ValueError(
            f"labels: slide ids listed more than once: {repeated[:20]}; each slide needs one row"
        )
    return table


class BagDataset(Dataset):
    """Bags of tile features from patch stores, labelled from a table keyed by slide id.

    `stores` is a mapping slide id -> store (or path), or a sequence of stores, each then known by its
    `slide_id` attribute (else its folder's name). `labels` is a DataFrame indexed by slide id (see
    `read_labels`), a path to one, or a mapping id -> label.
    `label_columns` picks the columns (default: "label"); several columns give a vector (multilabel, or time and
    event for survival). Slides in the table without a store, or stores without a label, are listed in the
    error; with `subset=True` the table may list more slides than `stores` (one master table for many
    folders): the slides present are used and the other rows' ids are kept in `unused_labels`. `max_tiles`
    draws a random subset of tiles per bag, new each epoch (`set_epoch`); `group_column` (e.g. "patient_id")
    gives `groups` for patient-level splits. `context` (a `mil.SpatialContext`) appends each tile's
    neighbourhood summary to its features (`read_bag`), before any tile subset is drawn. A missing label
    value is an error naming the slide; with `allow_missing` (several columns, e.g. the mutation task, whose
    loss masks NaN) only a slide with no value at all is, and the others keep NaN where a value is missing.
    """

    def __init__(self, stores: Mapping[str, PatchStore | str | Path] | Sequence[PatchStore | str | Path],
                 labels, feature: str,
                 label_columns: Sequence[str] = ("label",), max_tiles: int | None = None, seed: int = 0,
                 group_column: str | None = None, subset: bool = False,
                 context: SpatialContext | None = None, allow_missing: bool = False):  # fmt: skip
        # A mapping gives the caller's ids (`slidestream mil train`: the run's folder names), a sequence none.
        given = stores.items() if isinstance(stores, Mapping) else [(None, s) for s in stores]
        opened = [(k, s if isinstance(s, PatchStore) else PatchStore.open(s)) for k, s in given]
        self.stores = {_slide_id(s) if k is None else str(k): s for k, s in opened}
        if len(self.stores) != len(opened):
            raise ValueError("two stores have the same slide id")
        table = _label_table(labels)
        missing_columns = [c for c in label_columns if c not in table.columns]
        if missing_columns:
            raise ValueError(f"labels have no column(s) {missing_columns} (columns: {list(table.columns)})")
        self.unused_labels = match_slides(table.index, list(self.stores), subset)
        for slide_id, store in self.stores.items():
            if not store.has_features(feature):
                raise ValueError(f"slide {slide_id}: no complete features/{feature} in {store.path}; "
                                 "run `slidestream features` first")  # fmt: skip
        self.slide_ids = sorted(self.stores)
        values = table.loc[self.slide_ids, list(label_columns)]
        missing = values.isna().all(axis=1) if allow_missing else values.isna().any(axis=1)
        if missing.any():
            bad = values.index[missing].tolist()
            what = "no label value at all" if allow_missing else "missing label values"
            raise ValueError(f"{what} for slide(s) {bad[:20]}")
        self.labels = values.to_numpy(dtype=np.float32)
        if len(label_columns) == 1:
            self.labels = self.labels[:, 0]
        self.groups = (table.loc[self.slide_ids, group_column].astype(str).to_numpy() if group_column
                       else np.asarray(self.slide_ids))  # fmt: skip
        self.feature = feature
        self.context = context
        self.max_tiles = max_tiles
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Change the random tile subsets (with `max_tiles`)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.slide_ids)

    @property
    def dim(self) -> int:
        dim = int(self.stores[self.slide_ids[0]].features(self.feature).shape[1])
        return dim if self.context is None else self.context.out_dim(dim)

    def __getitem__(self, index: int) -> Bag:
        slide_id = self.slide_ids[index]
        features = read_bag(self.stores[slide_id], self.feature, self.context)
        if self.max_tiles is not None and len(features) > self.max_tiles:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            features = features[np.sort(rng.choice(len(features), self.max_tiles, replace=False))]
        return Bag(torch.from_numpy(features), torch.as_tensor(self.labels[index]), slide_id, index)


def collate_bags(bags: Sequence[Bag]) -> BagBatch:
    """Pad bags to the longest with zeros; the mask marks real tiles."""
    n = max(1, max(len(b.features) for b in bags))
    dim = bags[0].features.shape[1]
    features = torch.zeros(len(bags), n, dim)
    mask = torch.zeros(len(bags), n, dtype=torch.bool)
    for i, bag in enumerate(bags):
        features[i, : len(bag.features)] = bag.features
        mask[i, : len(bag.features)] = True
    return BagBatch(features, mask, torch.stack([b.label for b in bags]), [b.slide_id for b in bags])

"""Bags: labels keyed by slide id, clear mismatch errors, padding with masks, per-epoch subsampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mil
from tiling import tile_slide


@pytest.fixture(scope="module")
def stores(synthetic_slide, tmp_path_factory):
    folder = tmp_path_factory.mktemp("bags")
    made = []
    for slide_id, size in (("a", 128), ("b", 64), ("c", 96)):
        store = tile_slide(synthetic_slide.path, folder / slide_id / "patches.zarr", size=size, mpp=1.0)
        from tiling import PatchStore

        writable = PatchStore.open(store.path, mode="r+")
        writable._group.attrs["slide_id"] = slide_id
        mil.extract_features(writable, "stain_stats")
        made.append(PatchStore.open(store.path))
    return made


def _csv(tmp_path, rows: str):
    path = tmp_path / "labels.csv"
    path.write_text("slide_id,patient_id,label,time,event\n" + rows)
    return path


def test_bags_and_labels(stores, tmp_path):
    labels = _csv(tmp_path, "a,p1,1,10,1\nb,p1,0,20,0\nc,p2,1,5,1\n")
    data = mil.BagDataset(stores, labels, "stain_stats", group_column="patient_id")
    assert data.slide_ids == ["a", "b", "c"] and data.dim == 53
    assert data.groups.tolist() == ["p1", "p1", "p2"]
    bag = data[1]
    assert bag.slide_id == "b" and bag.label.item() == 0 and bag.features.shape == (len(stores[1]), 53)
    survival = mil.BagDataset(stores, labels, "stain_stats", label_columns=("time", "event"))
    assert survival[0].label.tolist() == [10.0, 1.0]


def test_a_mapping_names_the_stores_whatever_their_attrs(stores, tmp_path):
    """Stores given as a mapping id -> store are known by the mapping's ids (the run's folder names), not by
    their slide_id attributes (the file's stem, which `run` may have normalised)."""
    labels = _csv(tmp_path, "x,p1,1,10,1\ny,p1,0,20,0\nz,p2,1,5,1\n")
    data = mil.BagDataset(dict(zip("xyz", stores, strict=True)), labels, "stain_stats")
    assert (
        data.slide_ids == ["x", "y", "z"]
        and data[1].slide_id == "y"
        and len(data[1].features) == len(stores[1])
    )
    with pytest.raises(ValueError, match="without a label|not in|no label"):
        mil.BagDataset(stores, labels, "stain_stats")  # a sequence: known by their attrs a, b, c


def test_mismatched_labels_list_the_slides(stores, tmp_path):
    labels = _csv(tmp_path, "a,p1,1,1,1\nb,p1,0,1,1\nzz,p9,1,1,1\n")
    with pytest.raises(
        ValueError, match=r"1 labelled slide\(s\) have no patch store: \['zz'\].*no label: \['c'\]"
    ):
        mil.BagDataset(stores, labels, "stain_stats")
    with pytest.raises(ValueError, match="no column"):
        mil.BagDataset(
            stores,
            _csv(tmp_path, "a,p,1,1,1\nb,p,1,1,1\nc,p,1,1,1\n"),
            "stain_stats",
            label_columns=("grade",),
        )
    with pytest.raises(ValueError, match="no complete features/other"):
        mil.BagDataset(stores, {"a": 1, "b": 0, "c": 1}, "other")


def test_missing_label_values_and_the_masking_tasks_rule(stores, tmp_path):
    labels = _csv(tmp_path, "a,p1,1,10,\nb,p1,0,20,0\nc,p2,,,\n")  # a: event missing; c: nothing
    columns = ("label", "event")
    with pytest.raises(ValueError, match=r"missing label values for slide\(s\) \['a', 'c'\]"):
        mil.BagDataset(stores, labels, "stain_stats", label_columns=columns)
    assert mil.create_task("mutation", targets=list(columns)).masks_missing  # its loss masks NaN
    assert not any(mil.create_task(t).masks_missing for t in ("binary", "multiclass", "survival"))
    with pytest.raises(ValueError, match=r"no label value at all for slide\(s\) \['c'\]"):
        mil.BagDataset(stores, labels, "stain_stats", label_columns=columns, allow_missing=True)
    kept = mil.BagDataset(stores, _csv(tmp_path, "a,p1,1,10,\nb,p1,0,20,0\nc,p2,,,1\n"), "stain_stats",
                          label_columns=columns, allow_missing=True)  # fmt: skip
    assert np.isnan(kept.labels[0, 1]) and np.isnan(kept.labels[2, 0]) and kept.labels[2, 1] == 1


def test_repeated_ids_are_refused(tmp_path):
    with pytest.raises(ValueError, match="more than once"):
        mil.read_labels(_csv(tmp_path, "a,p,1,1,1\na,p,0,1,1\n"))


def test_collate_pads_with_a_mask(stores):
    data = mil.BagDataset(stores, {"a": 1, "b": 0, "c": 1}, "stain_stats")
    batch = mil.collate_bags([data[0], data[1]])
    n0, n1 = len(stores[0]), len(stores[1])
    assert batch.features.shape == (2, max(n0, n1), 53)
    assert batch.mask.sum(1).tolist() == [n0, n1]
    assert torch.all(batch.features[0, n0:] == 0)
    assert batch.labels.tolist() == [1.0, 0.0] and batch.slide_ids == ["a", "b"]


def test_subsampling_changes_with_the_epoch(stores):
    data = mil.BagDataset(stores, {"a": 1, "b": 0, "c": 1}, "stain_stats", max_tiles=5)
    first = data[1].features
    assert first.shape[0] == 5
    assert torch.equal(first, data[1].features)  # same epoch, same subset
    data.set_epoch(1)
    assert not torch.equal(first, data[1].features)
    full = np.asarray(stores[1].features("stain_stats")[:], np.float32)
    assert all(any(np.array_equal(row, f) for f in full) for row in first.numpy())


@pytest.mark.parametrize("form", ["frame", "pairs", "mixed_types"])
def test_repeated_ids_are_refused_in_every_form(stores, form):
    """A repeated id made `table.loc[ids]` return extra rows, shifting labels against bags."""
    import pandas as pd

    if form == "frame":
        labels = pd.DataFrame({"label": [1, 0, 1, 0]}, index=["a", "b", "b", "c"])
    elif form == "pairs":
        labels = [("a", 1), ("b", 0), ("c", 1), ("b", 1)]
    else:
        labels = pd.DataFrame({"label": [1, 0, 1]}, index=pd.Index(["a", "b", "c"], dtype=object))
        labels.loc[7] = 1
        labels.loc["7"] = 0
    with pytest.raises(ValueError, match=r"more than once: \['(b|7)'\]"):
        mil.BagDataset(stores, labels, "stain_stats")


def test_subset_uses_the_slides_present_and_says_which_rows_were_left_out(stores, tmp_path):
    master = _csv(tmp_path, "a,p1,1,1,1\nb,p1,0,1,1\nc,p2,1,1,1\nzz,p9,1,1,1\nyy,p8,0,1,1\n")
    with pytest.raises(ValueError, match=r"2 labelled slide\(s\) have no patch store.*subset=True"):
        mil.BagDataset(stores, master, "stain_stats")  # the default keeps the error
    data = mil.BagDataset(stores, master, "stain_stats", subset=True)
    assert data.slide_ids == ["a", "b", "c"] and data.unused_labels == ["yy", "zz"]
    assert data.labels.tolist() == [1, 0, 1]
    # A store without a label is still an error: subset lets the table be larger, never the folder.
    with pytest.raises(ValueError, match=r"no label: \['c'\]"):
        mil.BagDataset(stores, _csv(tmp_path, "a,p1,1,1,1\nb,p1,0,1,1\nzz,p9,1,1,1\n"), "stain_stats",
                       subset=True)  # fmt: skip

"""PatchStore and whole-shard writes: byte-identical to zarr's own shards for every codec."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import zarr

from tiling.shards import ShardWriter
from tiling.store import CODECS, PatchStore, StoreError


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_shard_bytes_equal_zarr(tmp_path, codec):
    from tiling.jpeg_codec import JpegCodec

    rng = np.random.default_rng(0)
    items = rng.integers(0, 200, (10, 24, 24, 3), dtype=np.uint8)
    kwargs = dict(shape=items.shape, chunks=(1, 24, 24, 3), shards=(4, 24, 24, 3), dtype="uint8", fill_value=255,
                  compressors=CODECS[codec](), serializer=JpegCodec() if codec == "jpeg" else "auto")  # fmt: skip
    reference = zarr.create_array(tmp_path / "zarr", **kwargs)
    reference[:] = items
    ours = zarr.create_array(tmp_path / "ours", **kwargs)
    writer = ShardWriter(ours, tmp_path / "ours")
    for shard in range(3):
        writer.write(shard, items[shard * 4 : (shard + 1) * 4])
    for shard in range(3):
        key = f"c/{shard}/0/0/0"
        assert (tmp_path / "ours" / key).read_bytes() == (tmp_path / "zarr" / key).read_bytes()
    np.testing.assert_array_equal(zarr.open_array(tmp_path / "ours")[:], items)


def _store(tmp_path, n=10, tile=8, coords_only=False):
    coords = np.arange(n * 2).reshape(n, 2) * 8
    attrs = {"tiling": {"size": tile, "mpp": 0.5}, "slide": {"path": "x"}}
    return PatchStore.create(tmp_path / "s.zarr", coords, np.ones(n), np.zeros(n, bool), attrs,
                             None if coords_only else tile, shard_tiles=4, codec="lz4")  # fmt: skip


def test_create_write_complete_open(tmp_path):
    store = _store(tmp_path)
    assert not store.is_complete and store.n_shards == 3 and list(store.shard_range(2)) == [8, 9]
    patches = np.random.default_rng(1).integers(0, 255, (10, 8, 8, 3), dtype=np.uint8)
    for shard in range(3):
        rows = store.shard_range(shard)
        store.write_shard(shard, patches[rows.start : rows.stop])
    assert store.shards_done().all()
    store.mark_complete(tiles=10)
    again = PatchStore.open(tmp_path / "s.zarr")
    assert again.is_complete and len(again) == 10 and again.attrs["tiles"] == 10
    np.testing.assert_array_equal(again.patches[:], patches)
    np.testing.assert_array_equal(again.coords, np.arange(20).reshape(10, 2) * 8)
    with pytest.raises(ValueError, match="shape"):
        store.write_shard(0, patches[:3])


def test_features_are_row_blocks(tmp_path):
    store = _store(tmp_path, n=10_000, coords_only=True)
    array = store.create_rows("features", "enc", 32, "float16", {"encoder": "enc"})
    assert array.chunks == (4096, 32) and array.dtype == np.float16
    assert store.feature_names() == ["enc"] and store.features("enc").attrs["encoder"] == "enc"
    with pytest.raises(KeyError, match="no features named 'other'"):
        store.features("other")
    assert store.patches is None
    # Usable features are there and finished: an extraction cut short leaves them incomplete.
    assert not store.has_features("enc") and not store.has_features("other")
    store.finish_rows("features", "enc")
    assert store.has_features("enc")


def test_not_a_store(tmp_path):
    with pytest.raises(StoreError, match="no patch store"):
        PatchStore.open(tmp_path / "missing.zarr")
    zarr.open_group(tmp_path / "other.zarr", mode="w")
    with pytest.raises(StoreError, match="not a slidestream patch store"):
        PatchStore.open(tmp_path / "other.zarr")


def test_jpeg_store_opens_in_plain_zarr_through_the_entry_point(tmp_path):
    """A reader that never imports slidestream still decodes the JPEG chunks (zarr.codecs entry point)."""
    from tiling.jpeg_codec import JpegCodec

    items = np.random.default_rng(2).integers(0, 255, (3, 16, 16, 3), dtype=np.uint8)
    array = zarr.create_array(tmp_path / "j", shape=items.shape, chunks=(1, 16, 16, 3), shards=(3, 16, 16, 3),
                              dtype="uint8", serializer=JpegCodec(), compressors=None)  # fmt: skip
    array[:] = items
    np.save(tmp_path / "items.npy", items)
    code = (f"import zarr, numpy as np; a = zarr.open_array({str(tmp_path / 'j')!r})[:]; "
            f"assert (a == np.load({str(tmp_path / 'items.npy')!r})).all()")  # fmt: skip
    subprocess.run([sys.executable, "-c", code], check=True)


def test_each_zarr_json_is_written_once_per_step_and_the_attributes_last(tmp_path, monkeypatch):
    """Attributes go in one write each (zarr's `attrs.update` rewrites zarr.json once per key: 10 writes of
    the group's for these attributes before): the group's zarr.json at creation (empty), then with every
    attribute after the arrays; `mark_complete` writes each array's contents, then the group once."""
    import collections

    from tiling import integrity

    writes: collections.Counter = collections.Counter()
    original = integrity.CheckedStore.set

    async def counted(self, key, value, *args, **kwargs):
        if key.endswith("zarr.json"):
            writes[key] += 1
        return await original(self, key, value, *args, **kwargs)

    monkeypatch.setattr(integrity.CheckedStore, "set", counted)
    n = 10
    attrs = {"tiling": {"size": 8, "mpp": 0.5}, "slide": {"path": "x"}, "fingerprint": "f", "warnings": []}
    store = PatchStore.create(tmp_path / "s.zarr", np.arange(2 * n).reshape(n, 2), np.ones(n), np.zeros(n, bool),
                              attrs, 8, 4, "lz4", qc={"blur": np.ones(n), "pen": np.zeros(n)})  # fmt: skip
    arrays = ["coords", "tissue", "edge", "qc/blur", "qc/pen", "patches"]
    assert writes == {"zarr.json": 2, "qc/zarr.json": 1, "shards_done/zarr.json": 1,
                      **{f"{a}/zarr.json": 1 for a in arrays}}  # fmt: skip
    assert PatchStore.open(tmp_path / "s.zarr").attrs == {**attrs, "format": "slidestream.patchstore/1",
                                                          "shard_tiles": 4, "codec": "lz4", "coords_only": False,
                                                          "complete": False}  # fmt: skip
    writes.clear()
    store.mark_complete(inputs={"slide": "x"})
    assert writes == {"zarr.json": 1, **{f"{a}/zarr.json": 1 for a in arrays}}
    done = PatchStore.open(tmp_path / "s.zarr")
    assert done.is_complete and done.attrs["inputs"] == {"slide": "x"} and not done.missing_chunks()
    assert [name for name, _ in done._recorded_arrays()] == ["coords", "tissue", "edge", "patches", "qc/blur",
                                                             "qc/pen"]  # fmt: skip


def test_integrity_checks_list_the_store_once_and_look_up_no_array_by_name(tmp_path, monkeypatch):
    """`missing_chunks` (run on every resumed or skipped store) and `verify` read the arrays' contents records
    from one listing of the store; before, each array was looked up by name and the listing was made twice."""
    store = _store(tmp_path)
    for shard in range(store.n_shards):
        rows = store.shard_range(shard)
        store.write_shard(shard, np.zeros((len(rows), 8, 8, 3), np.uint8))
    store.mark_complete()
    store.create_rows("features", "enc", 4, "float16", {})
    store.finish_rows("features", "enc")
    store = PatchStore.open(tmp_path / "s.zarr")
    calls = {"members": 0, "getitem": 0}
    members, getitem = zarr.Group.members, zarr.Group.__getitem__

    def counted_members(self, *args, **kwargs):
        calls["members"] += 1
        return members(self, *args, **kwargs)

    def counted_getitem(self, key):
        calls["getitem"] += 1
        return getitem(self, key)

    monkeypatch.setattr(zarr.Group, "members", counted_members)
    monkeypatch.setattr(zarr.Group, "__getitem__", counted_getitem)
    assert store.missing_chunks() == {}
    assert calls == {"members": 1, "getitem": 0}
    assert [name for name, _ in store._recorded_arrays()] == [
        "coords",
        "tissue",
        "edge",
        "patches",
        "features/enc",
    ]


def test_the_patches_array_is_looked_up_once_per_opened_store(tmp_path, monkeypatch):
    """`tiling.engine._write_shard` asks `store.patches` (coords-only or not), then writes the shard: one lookup
    of the array (a zarr round trip), not one each."""
    _store(tmp_path)
    store = PatchStore.open(tmp_path / "s.zarr", mode="r+")
    looked_up = []
    getitem = zarr.Group.__getitem__
    monkeypatch.setattr(
        zarr.Group, "__getitem__", lambda self, key: looked_up.append(key) or getitem(self, key)
    )
    assert store.patches is not None
    store.write_shard(0, np.zeros((4, 8, 8, 3), np.uint8))
    store.write_shard(1, np.ones((4, 8, 8, 3), np.uint8))
    assert looked_up.count("patches") == 1
    np.testing.assert_array_equal(store.patches[4:8], np.ones((4, 8, 8, 3), np.uint8))
    with pytest.raises(StoreError, match="coords-only store holds no patches"):
        _store(tmp_path / "c", coords_only=True).write_shard(0, np.zeros((4, 8, 8, 3), np.uint8))

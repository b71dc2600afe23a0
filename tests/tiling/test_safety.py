"""Data safety of patch stores: never replace what is not ours, never trust a damaged store, repair exactly."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

import mil
from tiling import PatchStore, StoreError, tile_slide, tile_slide_result
from tiling.inputs import OptionsChanged
from tiling.integrity import MissingChunkError


def _tree(path: Path) -> dict[str, str]:
    """Every file under `path` with the hash of its bytes."""
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}  # fmt: skip


def _user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.docx").write_bytes(b"weeks of work")
    return path


def test_tile_slide_never_replaces_a_users_folder(synthetic_slide, tmp_path):
    precious = _user_folder(tmp_path / "precious")
    with pytest.raises(StoreError, match="precious exists and is not a slidestream patch store"):
        tile_slide(synthetic_slide.path, precious, size=128, mpp=1.0)
    with pytest.raises(StoreError, match="not a slidestream patch store"):
        tile_slide(synthetic_slide.path, precious, size=128, mpp=1.0, overwrite=True)
    assert (precious / "thesis.docx").read_bytes() == b"weeks of work"
    a_file = tmp_path / "notes.zarr"
    a_file.write_text("mine")
    with pytest.raises(StoreError, match="notes.zarr exists"):
        tile_slide(synthetic_slide.path, a_file, size=128, mpp=1.0)
    assert a_file.read_text() == "mine"


def test_create_replaces_only_a_store_and_only_when_asked(tmp_path):
    args = (np.zeros((2, 2)), np.ones(2), np.zeros(2, bool), {"tiling": {"size": 8}}, 8)
    PatchStore.create(tmp_path / "s.zarr", *args)
    with pytest.raises(StoreError, match="already there; pass overwrite=True"):
        PatchStore.create(tmp_path / "s.zarr", *args)
    assert len(PatchStore.create(tmp_path / "s.zarr", *args, overwrite=True)) == 2


def test_a_store_whose_creation_was_cut_short_is_replaced_and_a_strangers_folder_is_not(
    synthetic_slide, tmp_path
):
    """`create` stopped after the group and its first arrays (here by a bad qc array; a kill or a full disk alike)
    leaves a partial patch store: the next run replaces it, with or without overwrite (refused forever before,
    "exists and is not a slidestream patch store"); a zarr group that is not ours is still refused."""
    from tiling.inputs import prepare_store_path

    def cut_short(path):
        with pytest.raises(ValueError, match="qc"):
            PatchStore.create(
                path, np.zeros((2, 2)), np.ones(2), np.zeros(2, bool), {}, 8, qc={"blur": np.ones(3)}
            )
        assert (path / "coords" / "zarr.json").is_file() and not (path / "patches").exists()

    path = tmp_path / "cut.zarr"
    cut_short(path)
    prepare_store_path(path, {}, overwrite=True)
    assert not path.exists()
    cut_short(path)
    result = tile_slide_result(synthetic_slide.path, path, size=128, mpp=1.0)
    assert result.status == "done" and result.store.is_complete and result.tiles > 0

    import zarr

    stranger = tmp_path / "stranger.zarr"
    zarr.open_group(stranger, mode="w").create_array("coords", data=np.zeros((2, 2)))
    before = _tree(stranger)
    with pytest.raises(StoreError, match="stranger.zarr exists and is not a slidestream patch store"):
        tile_slide_result(synthetic_slide.path, stranger, size=128, mpp=1.0, overwrite=True)
    assert _tree(stranger) == before


def test_other_options_are_refused_and_named(synthetic_slide, tmp_path):
    path = tmp_path / "s.zarr"
    first = tile_slide_result(synthetic_slide.path, path, size=128, mpp=0.5)
    before = _tree(path)
    with pytest.raises(OptionsChanged, match=r"size 128 -> 64; mpp 0.5 -> 1.0\).*--overwrite.*-o"):
        tile_slide_result(synthetic_slide.path, path, size=64, mpp=1.0)
    assert _tree(path) == before
    changed = tile_slide_result(synthetic_slide.path, path, size=64, mpp=1.0, overwrite=True)
    assert changed.status == "done" and changed.store.tile_size == 64 and len(changed.store) == first.tiles


@pytest.fixture
def finished(synthetic_slide, tmp_path):
    """A complete store with features, and a pristine copy of its files."""
    path = tmp_path / "s.zarr"
    tile_slide(synthetic_slide.path, path, size=64, mpp=1.0, shard_tiles=8)
    mil.extract_features(path, "stain_stats")
    return path, _tree(path)


def test_a_deleted_shard_raises_is_found_and_is_rewritten_exactly(synthetic_slide, finished):
    path, pristine = finished
    store = PatchStore.open(path)
    assert store.n_shards >= 3 and store.verify(deep=True) == []
    (path / "patches" / "c" / "1" / "0" / "0" / "0").unlink()
    store = PatchStore.open(path)
    with pytest.raises(MissingChunkError, match="chunk missing"):
        store.patches[10]  # before: white tiles (the fill value), silently
    np.testing.assert_array_equal(store.patches[0].shape, (64, 64, 3))  # other shards still read
    assert store.missing_chunks() == {"patches": ["c/1/0/0/0"]}
    assert "patches: 1 of" in store.verify()[0]
    result = tile_slide_result(synthetic_slide.path, path, size=64, mpp=1.0, shard_tiles=8)
    assert result.status == "resumed"  # before: "skipped", white tiles kept
    assert _tree(path) == pristine  # features kept, patches byte-identical to an undamaged run


def test_a_changed_shard_is_found_by_deep_verify(finished):
    path, _ = finished
    shard = path / "patches" / "c" / "0" / "0" / "0" / "0"
    data = bytearray(shard.read_bytes())
    data[10] ^= 0xFF
    shard.write_bytes(bytes(data))
    store = PatchStore.open(path)
    assert store.verify() == []  # a listing sees nothing
    assert (
        "patches: 1 of" in store.verify(deep=True)[0] and "missing or changed" in store.verify(deep=True)[0]
    )


def test_lost_coordinates_rewrite_the_store(synthetic_slide, finished):
    path, pristine = finished
    (path / "coords" / "c" / "0" / "0").unlink()
    with pytest.raises(MissingChunkError):
        _ = PatchStore.open(path).coords  # before: every tile at (0, 0)
    assert tile_slide_result(synthetic_slide.path, path, size=64, mpp=1.0, shard_tiles=8).status == "done"
    mil.extract_features(path, "stain_stats")
    assert _tree(path) == pristine


def test_a_deleted_feature_chunk_raises_and_is_recomputed(finished):
    path, pristine = finished
    chunk = path / "features" / "stain_stats" / "c" / "0" / "0"
    chunk.unlink()
    store = PatchStore.open(path)
    with pytest.raises(MissingChunkError):
        store.features("stain_stats")[:]  # before: zeros
    encoder = mil.create_encoder("stain_stats")
    assert not mil.features_done(store, encoder)  # before: done
    mil.extract_features(path, encoder)
    assert _tree(path) == pristine


def test_extract_features_never_replaces_a_users_folder(finished):
    path, _ = finished
    user = _user_folder(path / "features" / "mine")
    with pytest.raises(StoreError, match="mine exists and was not written by slidestream"):
        mil.extract_features(path, "stain_stats", name="mine")
    assert (user / "thesis.docx").read_bytes() == b"weeks of work"


def test_only_the_lost_feature_chunks_are_recomputed(synthetic_slide, tmp_path, monkeypatch):
    import tiling.store

    monkeypatch.setattr(tiling.store, "FEATURE_ROWS_PER_CHUNK", 8)  # several row chunks in a small store
    path = tmp_path / "s.zarr"
    tile_slide(synthetic_slide.path, path, size=64, mpp=1.0, shard_tiles=8)
    mil.extract_features(path, "stain_stats", batch_size=5)  # batches straddle the chunks
    pristine = _tree(path)
    chunks = path / "features" / "stain_stats" / "c"
    assert len(list(chunks.iterdir())) >= 3
    kept = {p.name: (p / "0").stat().st_mtime_ns for p in chunks.iterdir() if p.name != "2"}
    (chunks / "2" / "0").unlink()
    assert PatchStore.open(path).missing_row_chunks("features", "stain_stats") == [2]
    mil.extract_features(path, "stain_stats", batch_size=5)
    assert _tree(path) == pristine
    assert {
        p.name: (p / "0").stat().st_mtime_ns for p in chunks.iterdir() if p.name != "2"
    } == kept  # untouched

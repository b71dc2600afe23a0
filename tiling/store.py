"""PatchStore: one zarr v3 group per slide holding tile coordinates, patches, tissue fractions, features, scores.

    <slide>.zarr/
      attrs      format, slide {...}, tiling {...}, fingerprint, complete (written last)
      coords     int64 (N, 2)          level-0 x, y of each tile's top-left corner
      tissue     float32 (N,)          tissue fraction of each tile
      edge       bool (N,)             tile reaches past the slide border (padded white)
      patches    uint8 (N, S, S, 3)    one tile per chunk, many tiles per shard (absent in coords-only stores)
      qc/<check> float32 (N,)          tile quality measures (tiling.qc), when tiled with checks
      shards_done uint8 (n_shards,)    resume bookkeeping: one chunk per shard, so writers never share a chunk
      features/<name>  float16 (N, D)  large row-block chunks
      scores/<name>    float32 (N, K)

A store without `complete` is partial: `tile_slide` resumes or rewrites it, never trusts it. A complete store's
arrays record their chunk keys and checksums (`contents`, see tiling.integrity): a recorded chunk that is gone reads
as an error, never as the fill value, and `missing_chunks` / `verify` find such damage.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr
from zarr.codecs import BloscCodec, ZstdCodec

from tiling.integrity import CheckedStore, corrupt_keys, missing_keys, record_contents
from tiling.jpeg_codec import JpegCodec
from tiling.shards import ShardWriter

__all__ = ["CODECS", "FORMAT", "PatchStore", "StoreError", "is_patch_store"]

FORMAT = "slidestream.patchstore/1"

# Measured in benchmarks/tiling.py (see RESULTS.md). "jpeg" keeps the slide's own JPEG tiles (lossless JPEG
# where a tile must be made), "lz4" is the fastest general codec, "zstd" compresses better.
CODECS = {
    "jpeg": lambda: None,
    "lz4": lambda: BloscCodec(cname="lz4", clevel=5, shuffle="bitshuffle"),
    "zstd": lambda: BloscCodec(cname="zstd", clevel=1, shuffle="bitshuffle"),
    "zstd3": lambda: ZstdCodec(level=3),
    "none": lambda: None,
}
FEATURE_ROWS_PER_CHUNK = 4096


class StoreError(Exception):
    """A path that is not a usable patch store; the message names it."""


# The arrays written by `create` and finished by `mark_complete` (features/ and scores/ finish on their own).
# shards_done is bookkeeping, not content: its absent chunks mean "to do", so it records no contents.
TILE_ARRAYS = ("coords", "tissue", "edge", "patches")


def _arrays(group: zarr.Group, tiles_only: bool = False) -> dict[str, zarr.Array]:
    """The store's arrays by path, opened with their attributes in one round trip to zarr's I/O thread (a lookup
    per name costs one each): the per-tile arrays `create` wrote (TILE_ARRAYS present, then qc/<check>), then,
    unless `tiles_only`, features/<name> and scores/<name>. Not shards_done (bookkeeping)."""
    nodes = {name: node for name, node in group.members(max_depth=None) if isinstance(node, zarr.Array)}
    names = [n for n in TILE_ARRAYS if n in nodes]
    kinds = ("qc",) if tiles_only else ("qc", "features", "scores")
    names += [n for kind in kinds for n in sorted(nodes) if n.startswith(f"{kind}/")]
    return {name: nodes[name] for name in names}


def is_patch_store(path: str | Path) -> bool:
    """Whether `path` is a slidestream patch store, recognised by its own attributes (not by its name)."""
    try:
        meta = json.loads((Path(path) / "zarr.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(meta, dict) and meta.get("attributes", {}).get("format") == FORMAT


def _open_group(path: Path, mode: str) -> zarr.Group:
    return zarr.open_group(CheckedStore(path, read_only=mode == "r"), mode=mode)


class PatchStore:
    """A patch store opened for reading (`open`) or being written (`create`)."""

    def __init__(self, group: zarr.Group, path: Path):
        self._group = group
        self.path = path
        self._coords: np.ndarray | None = None
        # The tiles never change once created: their number and their patches array are looked up once each (a
        # zarr round trip each; `_write_shard` asks for the array, then writes to it).
        self._len: int | None = None
        self._patches: zarr.Array | None = None
        self._patches_known = False

    # -- opening --------------------------------------------------------------------------------------------
    @classmethod
    def open(cls, path: str | Path, mode: str = "r") -> PatchStore:
        """Open an existing store (read-only by default)."""
        path = Path(path)
        if not path.exists():
            raise StoreError(f"{path}: no patch store here")
        if not (path / "zarr.json").is_file():
            raise StoreError(f"{path}: not a slidestream patch store (no zarr.json)")
        try:
            group = _open_group(path, mode)
        except Exception as exc:
            raise StoreError(f"{path}: not a zarr group ({exc})") from exc
        if group.attrs.get("format") != FORMAT:
            raise StoreError(f"{path}: not a slidestream patch store (format {group.attrs.get('format')!r})")
        return cls(group, path)

    @classmethod
    def create(
        cls,
        path: str | Path,
        coords: np.ndarray,
        tissue: np.ndarray,
        edge: np.ndarray,
        attrs: Mapping[str, Any],
        tile_size: int | None,
        shard_tiles: int = 64,
        codec: str = "lz4",
        jpeg_colorspace: str | None = None,
        overwrite: bool = False,
        qc: Mapping[str, np.ndarray] | None = None,
    ) -> PatchStore:
        """A new, partial store. `tile_size=None` makes a coords-only store. `qc` holds per-tile quality
        measures ({check: (N,)}, see tiling.qc), stored as qc/<check>.

        Only a patch store may be replaced, and only with `overwrite=True`; anything else at `path` (a user's
        file or folder) is a `StoreError` naming it, and is left untouched. `jpeg_colorspace` ("RGB" or None) is
        how chunks of a "jpeg" store decode (see tiling.jpeg_codec).
        """
        path = Path(path)
        if codec not in CODECS:
            raise ValueError(f"codec must be one of {sorted(CODECS)}, got {codec!r}")
        if path.exists() or path.is_symlink():
            if not is_patch_store(path) or path.is_symlink():
                raise StoreError(f"{path} exists and is not a slidestream patch store; it was left as it is "
                                 "(move it, or write the store somewhere else)")  # fmt: skip
            if not overwrite:
                raise StoreError(f"{path}: a patch store is already there; pass overwrite=True to replace it")
            shutil.rmtree(path)
        n = len(coords)
        # The marker goes in the group's first zarr.json: a store whose creation is cut short (a group and some
        # arrays) is then a partial patch store, replaced by the next run, not a stranger's folder refused forever.
        group = zarr.open_group(
            CheckedStore(path), mode="w", attributes={"format": FORMAT, "complete": False}
        )
        group.create_array(
            "coords", data=np.asarray(coords, np.int64).reshape(n, 2), chunks=(max(1, min(n, 65536)), 2)
        )
        group.create_array("tissue", data=np.asarray(tissue, np.float32), chunks=(max(1, min(n, 65536)),))
        group.create_array("edge", data=np.asarray(edge, bool), chunks=(max(1, min(n, 65536)),))
        for name, values in (qc or {}).items():
            values = np.asarray(values, np.float32)
            if values.shape != (n,):
                raise ValueError(
                    f"qc[{name!r}] must have shape ({n},) (one value per tile), got {values.shape}"
                )
            group.require_group("qc").create_array(name, data=values, chunks=(max(1, min(n, 65536)),))
        shard_tiles = max(1, min(shard_tiles, n)) if n else 1
        if tile_size is not None:
            group.create_array(
                "patches",
                shape=(n, tile_size, tile_size, 3),
                chunks=(1, tile_size, tile_size, 3),
                shards=(shard_tiles, tile_size, tile_size, 3),
                dtype="uint8",
                compressors=CODECS[codec](),
                serializer=JpegCodec(colorspace=jpeg_colorspace) if codec == "jpeg" else "auto",
                fill_value=255,
            )
        n_shards = -(-n // shard_tiles)
        group.create_array("shards_done", shape=(n_shards,), chunks=(1,), dtype="uint8", fill_value=0)
        # One write of zarr.json (`attrs.update` rewrites it once per key), after the arrays: a store whose
        # creation was cut short has no fingerprint, so it is never resumed, only replaced.
        group.update_attributes({**attrs, "format": FORMAT, "shard_tiles": shard_tiles, "codec": codec,
                                 "coords_only": tile_size is None, "complete": False})  # fmt: skip
        return cls(group, path)

    # -- what it holds -------------------------------------------------------------------------------------
    def __len__(self) -> int:
        if self._len is None:
            self._len = int(self._group["coords"].shape[0])
        return self._len

    def __repr__(self) -> str:
        state = "complete" if self.is_complete else "partial"
        return f"PatchStore({str(self.path)!r}, {len(self)} tiles, {state})"

    @property
    def attrs(self) -> dict:
        return dict(self._group.attrs)

    @property
    def is_complete(self) -> bool:
        return bool(self._group.attrs.get("complete", False))

    @property
    def coords(self) -> np.ndarray:
        """(N, 2) int64 level-0 (x, y) of each tile's top-left corner."""
        if self._coords is None:
            self._coords = self._group["coords"][:]
        return self._coords

    @property
    def tissue(self) -> np.ndarray:
        return self._group["tissue"][:]

    @property
    def edge(self) -> np.ndarray:
        return self._group["edge"][:]

    def qc(self, name: str) -> np.ndarray:
        """qc/<name>: (N,) float32 quality measure of each tile (tiling.qc); KeyError naming those stored."""
        if "qc" not in self._group or name not in self._group["qc"]:
            have = sorted(self._group["qc"].array_keys()) if "qc" in self._group else []
            raise KeyError(f"{self.path}: no tile quality measure {name!r} (has {have})")
        return self._group[f"qc/{name}"][:]

    @property
    def patches(self) -> zarr.Array | None:
        """(N, S, S, 3) uint8 zarr array, or None in a coords-only store (read tiles from the slide)."""
        if not self._patches_known:
            try:  # one lookup (a zarr round trip), not a membership test and then a lookup
                self._patches = self._group["patches"]
            except KeyError:
                self._patches = None
            self._patches_known = True
        return self._patches

    @property
    def tile_size(self) -> int:
        return int(self.attrs["tiling"]["size"])

    # -- shards (resume) -----------------------------------------------------------------------------------
    @property
    def shard_tiles(self) -> int:
        return int(self._group.attrs["shard_tiles"])

    @property
    def n_shards(self) -> int:
        return int(self._group["shards_done"].shape[0])

    def shard_range(self, shard: int) -> range:
        start = shard * self.shard_tiles
        return range(start, min(len(self), start + self.shard_tiles))

    def shards_done(self) -> np.ndarray:
        return self._group["shards_done"][:].astype(bool)

    @property
    def codec(self) -> str:
        return str(self._group.attrs.get("codec", "lz4"))

    def write_shard(self, shard: int, patches: np.ndarray | list[bytes] | None) -> None:
        """Write one whole shard, then mark it done: pixel patches, JPEG streams (codec "jpeg") or None."""
        rows = self.shard_range(shard)
        if isinstance(patches, list):
            if len(patches) != len(rows):
                raise ValueError(f"shard {shard} needs {len(rows)} JPEG streams, got {len(patches)}")
            ShardWriter(self._patches_array(), self.path / "patches").write_encoded(shard, patches)
        elif patches is not None:
            expected = (len(rows), self.tile_size, self.tile_size, 3)
            if patches.shape != expected:
                raise ValueError(f"shard {shard} needs patches of shape {expected}, got {patches.shape}")
            ShardWriter(self._patches_array(), self.path / "patches").write(shard, patches)
        self._group["shards_done"][shard] = 1

    def _patches_array(self) -> zarr.Array:
        if self.patches is None:
            raise StoreError(f"{self.path}: a coords-only store holds no patches (write_shard with None)")
        return self.patches

    def mark_complete(self, **attrs) -> None:
        """Record each array's contents, then final attributes and `complete`, last: a store without it is
        partial."""
        for name, array in _arrays(self._group, tiles_only=True).items():
            array.update_attributes({"contents": record_contents(self.path / name)})
        self._group.update_attributes({**attrs, "complete": True})  # one write (attrs.update: one per key)

    # -- integrity -----------------------------------------------------------------------------------------
    def _recorded_arrays(self, tiles_only: bool = False) -> list[tuple[str, dict]]:
        """(path inside the store, contents record) of every finished array (`tiles_only`: of `create`'s)."""
        arrays = _arrays(self._group, tiles_only)
        return [
            (name, array.attrs["contents"]) for name, array in arrays.items() if "contents" in array.attrs
        ]

    def missing_chunks(self) -> dict[str, list[str]]:
        """Recorded chunk keys of the tiling arrays (coords, tissue, edge, patches, qc/) that are gone, by array
        ({"patches": ["c/3/0/0/0"]}); empty when intact. Features and scores: `rows_intact`; all: `verify`.

        A listing, no reads: fast enough to run before trusting a store."""
        found = {
            name: missing_keys(self.path / name, c) for name, c in self._recorded_arrays(tiles_only=True)
        }
        return {name: keys for name, keys in found.items() if keys}

    def verify(self, deep: bool = False) -> list[str]:
        """Problems found (empty when intact): partial, missing chunks, and with `deep` chunks whose bytes changed."""
        problems = [] if self.is_complete else ["partial (tiling did not finish)"]
        for name, contents in self._recorded_arrays():
            bad = (corrupt_keys if deep else missing_keys)(self.path / name, contents)
            if bad:
                what = "missing or changed" if deep else "missing"
                problems.append(
                    f"{name}: {len(bad)} of {len(contents['keys'])} chunk(s) {what} ({', '.join(bad[:5])})"
                )
        for kind in ("features", "scores"):
            if kind in self._group:
                problems += [f"{kind}/{n}: partial" for n in self._group[kind].array_keys()
                             if not self._group[f"{kind}/{n}"].attrs.get("complete")]  # fmt: skip
        return problems

    def reopen_shards(self) -> bool:
        """Make a complete store whose patch shards are missing partial again, with those shards to be rewritten.

        Returns False when other arrays are damaged too (coordinates lost: only a rewrite can repair it)."""
        missing = self.missing_chunks()
        lost = {name: keys for name, keys in missing.items() if name != "patches"}
        if lost:
            return False
        shards = {int(key.split("/")[1]) for key in missing.get("patches", [])}
        self._group.attrs["complete"] = False
        for shard in sorted(shards):
            self._group["shards_done"][shard] = 0
        return True

    # -- features and scores -------------------------------------------------------------------------------
    def feature_names(self) -> list[str]:
        return sorted(self._group["features"].array_keys()) if "features" in self._group else []

    def has_features(self, name: str) -> bool:
        """Whether features/<name> is here and was finished (its `complete` attribute: an interrupted
        extraction leaves it unset)."""
        return name in self.feature_names() and bool(self.features(name).attrs.get("complete"))

    def features(self, name: str) -> zarr.Array:
        """features/<name>: (N, D) float16."""
        try:
            return self._group[f"features/{name}"]
        except KeyError:
            raise KeyError(f"{self.path}: no features named {name!r} (has {self.feature_names()})") from None

    def scores(self, name: str) -> zarr.Array:
        """scores/<name>: (N, K) float32."""
        try:
            return self._group[f"scores/{name}"]
        except KeyError:
            raise KeyError(f"{self.path}: no scores named {name!r}") from None

    def create_rows(
        self, kind: str, name: str, width: int, dtype: str, attrs: Mapping[str, Any]
    ) -> zarr.Array:
        """A new (N, width) array under `kind`/ ("features" or "scores"), replacing any old one, chunked by rows.

        Only an array this project wrote (one with a "complete" attribute) is replaced; anything else at that
        path is a `StoreError` naming it."""
        if kind not in ("features", "scores"):
            raise ValueError(f"kind must be 'features' or 'scores', got {kind!r}")
        target = self.path / kind / name
        if target.exists() or target.is_symlink():
            try:
                ours = "complete" in json.loads((target / "zarr.json").read_text()).get("attributes", {})
            except (OSError, ValueError, AttributeError):
                ours = False
            if not ours or target.is_symlink():
                raise StoreError(f"{target} exists and was not written by slidestream; it was left as it is "
                                 "(move it, or choose another name)")  # fmt: skip
        n = len(self)
        array = self._group.require_group(kind).create_array(
            name, shape=(n, width), chunks=(max(1, min(n, FEATURE_ROWS_PER_CHUNK)), width), dtype=dtype,
            overwrite=True, compressors=ZstdCodec(level=1),
        )  # fmt: skip
        array.update_attributes({**attrs, "complete": False})
        return array

    def finish_rows(self, kind: str, name: str) -> None:
        """Record the contents of `kind`/`name`, then mark it complete (last)."""
        array = self._group[f"{kind}/{name}"]
        array.update_attributes({"contents": record_contents(self.path / kind / name), "complete": True})

    def missing_row_chunks(self, kind: str, name: str) -> list[int]:
        """Indices of the recorded row chunks of `kind`/`name` that are gone (a listing)."""
        contents = self._group[f"{kind}/{name}"].attrs.get("contents")
        if contents is None:
            return []
        return sorted(int(key.split("/")[1]) for key in missing_keys(self.path / kind / name, contents))

    def rows_intact(self, kind: str, name: str) -> bool:
        """Whether `kind`/`name` is complete with every recorded chunk present (a listing)."""
        array = self._group[f"{kind}/{name}"]
        contents = array.attrs.get("contents")
        return bool(array.attrs.get("complete")) and (
            contents is None or not missing_keys(self.path / kind / name, contents)
        )

"""What a finished zarr array must contain, and a local store that refuses to read a recorded chunk that is gone.

zarr reads an absent chunk as the fill value: a deleted shard of patches reads as white tiles and a deleted chunk
of features as zeros, and nothing says so. A finished array therefore records its contents in its own attributes
(`contents`: every chunk key written, with the crc32c of its bytes). zarr writes no chunk that holds only the fill
value, so the record, not the chunk grid, says which keys must exist. `CheckedStore` raises `MissingChunkError`
when a recorded key is read and absent; `missing_keys` (a listing) and `corrupt_keys` (checksums) check an array.
"""

from __future__ import annotations

import json
from pathlib import Path

import google_crc32c
from zarr.storage import LocalStore

__all__ = ["CheckedStore", "MissingChunkError", "corrupt_keys", "missing_keys", "record_contents"]


class MissingChunkError(OSError):
    """A chunk that a finished array recorded as written is not there (the store was damaged)."""


def _chunk_files(array_dir: Path) -> list[str]:
    root = array_dir / "c"
    if not root.is_dir():
        return []
    return sorted(
        p.relative_to(array_dir).as_posix()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".")  # .tmp files of interrupted shard writes
    )


def _crc(path: Path) -> int:
    checksum = google_crc32c.Checksum()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            checksum.update(block)
    return int.from_bytes(checksum.digest(), "big")


def record_contents(array_dir: str | Path) -> dict:
    """The `contents` record of a finished array at `array_dir`: its chunk keys and the crc32c of each."""
    array_dir = Path(array_dir)
    keys = _chunk_files(array_dir)
    return {"keys": keys, "crc32c": [_crc(array_dir / key) for key in keys]}


def missing_keys(array_dir: str | Path, contents: dict) -> list[str]:
    """Recorded chunk keys of the array at `array_dir` that are not on disk (a directory listing: fast)."""
    present = set(_chunk_files(Path(array_dir)))
    return [key for key in contents.get("keys", []) if key not in present]


def corrupt_keys(array_dir: str | Path, contents: dict) -> list[str]:
    """Recorded chunk keys whose bytes no longer match their checksum (absent ones included): reads everything."""
    array_dir = Path(array_dir)
    bad = []
    for key, crc in zip(contents.get("keys", []), contents.get("crc32c", []), strict=True):
        path = array_dir / key
        if not path.is_file() or _crc(path) != crc:
            bad.append(key)
    return bad


class CheckedStore(LocalStore):
    """A zarr LocalStore whose reads of a recorded-but-absent chunk raise `MissingChunkError`, not fill values."""

    def __init__(self, root: Path | str, *, read_only: bool = False) -> None:
        super().__init__(root, read_only=read_only)
        self._expected: dict[str, set[str]] = {}

    def with_read_only(self, read_only: bool = False) -> CheckedStore:
        return type(self)(self.root, read_only=read_only)

    def _recorded(self, array: str) -> set[str]:
        if array not in self._expected:
            try:
                meta = json.loads((Path(self.root) / array / "zarr.json").read_text())
            except (OSError, ValueError):
                meta = {}
            self._expected[array] = set(meta.get("attributes", {}).get("contents", {}).get("keys", []))
        return self._expected[array]

    async def get(self, key, prototype=None, byte_range=None):
        value = await super().get(key, prototype, byte_range)
        if value is None and "/c/" in f"/{key}":
            array, _, rest = f"/{key}".rpartition("/c/")
            if f"c/{rest}" in self._recorded(array.strip("/")):
                raise MissingChunkError(
                    f"{Path(self.root) / key}: chunk missing from a finished array (the store is damaged; "
                    "`slidestream verify` lists what is missing, and re-running the same command rewrites it)"
                )
        return value

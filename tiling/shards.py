"""Whole-shard writes for zarr v3 sharded arrays, several times faster than zarr's per-chunk async path.

zarr-python writes about 1,300 tiles/s here whatever the codec (per-chunk overhead on its event loop), which
caps tiling far below JPEG decode speed (benchmarks/RESULTS.md). A shard of the sharding_indexed codec is simple:
the encoded inner chunks back to back, then an index of (offset, nbytes) uint64 little-endian pairs per chunk in
C order (2^64-1 for an absent chunk) and the crc32c of that index. We encode the chunks with the array's own
codec configuration and write the shard file atomically; reading stays with zarr, and a test checks that the
bytes equal zarr's own.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import google_crc32c
import numcodecs
import numpy as np
import zarr
from zarr.codecs import BloscCodec, BytesCodec, ShardingCodec, ZstdCodec

from tiling.jpeg_codec import JpegCodec, encode_lossless

__all__ = ["ShardWriter", "encode_shard"]

_ABSENT = np.uint64(2**64 - 1)


def encode_shard(chunks: Sequence[bytes | None]) -> list[bytes]:
    """One shard's bytes, as pieces to write in order, from its encoded inner chunks (None = absent)."""
    index = np.full((len(chunks), 2), _ABSENT, dtype="<u8")
    offset = 0
    for i, chunk in enumerate(chunks):
        if chunk is not None:
            index[i] = (offset, len(chunk))
            offset += len(chunk)
    index_bytes = index.tobytes()
    checksum = np.uint32(google_crc32c.value(index_bytes)).tobytes()
    return [c for c in chunks if c is not None] + [index_bytes, checksum]


def _chunk_encoder(codecs: Sequence) -> Callable[[np.ndarray], bytes]:
    """Encoder of one inner chunk, for the codec chains this project creates (bytes + blosc / zstd / nothing)."""
    steps: list[Callable[[bytes], bytes]] = []
    for codec in codecs:
        if isinstance(codec, BytesCodec):
            continue  # uint8: byte order does not apply
        if isinstance(codec, JpegCodec):
            steps.append(lambda item: encode_lossless(item.reshape(item.shape[-3:])))
            continue
        if isinstance(codec, BloscCodec):
            config = codec.to_dict()["configuration"]
            shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[config["shuffle"]]
            blosc = numcodecs.Blosc(cname=config["cname"], clevel=config["clevel"], shuffle=shuffle,
                                    blocksize=config["blocksize"], typesize=config["typesize"])  # fmt: skip
            steps.append(blosc.encode)
        elif isinstance(codec, ZstdCodec):
            steps.append(numcodecs.Zstd(level=codec.level, checksum=codec.checksum).encode)
        else:
            raise NotImplementedError(f"no whole-shard encoder for codec {codec!r}")

    def encode(chunk: np.ndarray) -> bytes:
        data = np.ascontiguousarray(chunk)
        for step in steps:
            data = step(data)
        return data if steps else data.tobytes()

    return encode


class ShardWriter:
    """Writes whole shards of a local zarr v3 array sharded along its first axis only (one item per chunk)."""

    def __init__(self, array: zarr.Array, path: Path):
        (sharding,) = [c for c in array.metadata.codecs if isinstance(c, ShardingCodec)]
        if array.metadata.chunk_grid.chunk_shape[1:] != array.shape[1:] or sharding.chunk_shape[0] != 1:
            raise ValueError("ShardWriter needs shards along the first axis and one item per inner chunk")
        self.shard_len = array.metadata.chunk_grid.chunk_shape[0]
        self.item_shape = array.shape[1:]
        self.path = Path(path)
        self._encode = _chunk_encoder(sharding.codecs)
        numcodecs.blosc.use_threads = False  # as zarr: one thread per call, parallelism comes from callers

    def write(self, shard: int, items: np.ndarray) -> None:
        """Write shard `shard` from `items` (n <= shard_len, *item_shape); missing trailing items are absent."""
        if items.shape[1:] != self.item_shape or len(items) > self.shard_len:
            raise ValueError(
                f"shard items must be (<= {self.shard_len}, *{self.item_shape}), got {items.shape}"
            )
        self.write_encoded(shard, [self._encode(item) for item in items])

    def write_encoded(self, shard: int, chunks: Sequence[bytes]) -> None:
        """Write shard `shard` from already encoded inner chunks (for example copied JPEG tiles)."""
        if len(chunks) > self.shard_len:
            raise ValueError(f"a shard holds at most {self.shard_len} chunks, got {len(chunks)}")
        chunks = list(chunks) + [None] * (self.shard_len - len(chunks))
        key = self.path / "c" / str(shard) / Path(*["0"] * len(self.item_shape))
        key.parent.mkdir(parents=True, exist_ok=True)
        tmp = key.with_name(f".{key.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            f.writelines(encode_shard(chunks))
        tmp.replace(key)

"""A zarr v3 codec whose chunks are complete JPEG images: the slide's own tiles, copied without re-encoding.

When a tile grid lines up with a slide's JPEG tiles, the fastest exact store keeps each tile's compressed bytes:
no decode, no re-encode, identical pixels, the slide's own size. Tiles that cannot be copied (edge tiles whose
padding must read white, resampled grids) are written as lossless JPEG, so every chunk decodes exactly.
Decoding lets libjpeg read the colour space from each stream's markers (Adobe / JFIF), which is what the copied
tiles were checked against when the store was made.

Registered as "slidestream.jpeg" (on import of `tiling` and through the `zarr.codecs` entry point).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

__all__ = ["JpegCodec", "encode_lossless"]

NAME = "slidestream.jpeg"


def encode_lossless(tile: np.ndarray) -> bytes:
    """Lossless JPEG (SOF3) of an (H, W, 3) uint8 tile, decodable by any libjpeg-turbo >= 3."""
    return imagecodecs.jpeg8_encode(np.ascontiguousarray(tile), lossless=True)


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Chunks of shape (1, H, W, 3) or (H, W, 3) uint8 stored as JPEG streams."""

    is_fixed_size = False

    @classmethod
    def from_dict(cls, data: dict) -> JpegCodec:
        return cls()

    def to_dict(self) -> dict:
        return {"name": NAME}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        image = imagecodecs.jpeg8_decode(chunk_bytes.as_numpy_array().tobytes())
        image = np.asarray(image, dtype=np.uint8).reshape(chunk_spec.shape)
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(image)

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:
        array = chunk_array.as_ndarray_like()
        encoded = encode_lossless(array.reshape(array.shape[-3:]))
        return chunk_spec.prototype.buffer.from_bytes(encoded)

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec) -> int:
        raise NotImplementedError("JPEG chunk sizes are not known in advance")


register_codec(NAME, JpegCodec)

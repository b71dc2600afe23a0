"""A zarr v3 codec whose chunks are complete JPEG images: the slide's own tiles, copied without re-encoding.

When a tile grid lines up with a slide's JPEG tiles, the fastest exact store keeps each tile's compressed bytes:
no decode, no re-encode, identical pixels, the slide's own size. Tiles that cannot be copied (edge tiles whose
padding must read white, resampled grids) are written as lossless JPEG, so every chunk decodes exactly.
Colour space: TIFF JPEG tiles often carry no marker saying whether they are RGB or YCbCr (the TIFF tag says
it). A store of tiles from a photometric-RGB TIFF records `colorspace: "RGB"`; otherwise libjpeg reads the
colour space from each stream's markers (lossless chunks carry an Adobe RGB marker). The copied tiles were
checked against the slide reader's pixels when the store was made.

Registered as "slidestream.jpeg" (on import of `tiling` and through the `zarr.codecs` entry point).
"""

from __future__ import annotations

from dataclasses import dataclass

import imagecodecs
import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer
from zarr.registry import register_codec

__all__ = ["JpegCodec", "decode_jpeg", "encode_lossless"]

NAME = "slidestream.jpeg"


def encode_lossless(tile: np.ndarray) -> bytes:
    """Lossless JPEG (SOF3) of an (H, W, 3) uint8 tile, decodable by any libjpeg-turbo >= 3."""
    return imagecodecs.jpeg8_encode(np.ascontiguousarray(tile), lossless=True)


def decode_jpeg(data: bytes, colorspace: str | None = None) -> np.ndarray:
    """Decode one chunk; `colorspace` "RGB" forces RGB for streams without colour markers."""
    if colorspace:
        return imagecodecs.jpeg8_decode(data, colorspace=colorspace, outcolorspace="RGB")
    return imagecodecs.jpeg8_decode(data)


@dataclass(frozen=True)
class JpegCodec(ArrayBytesCodec):
    """Chunks of shape (1, H, W, 3) or (H, W, 3) uint8 stored as JPEG streams."""

    is_fixed_size = False
    colorspace: str | None = None

    @classmethod
    def from_dict(cls, data: dict) -> JpegCodec:
        return cls(colorspace=(data.get("configuration") or {}).get("colorspace"))

    def to_dict(self) -> dict:
        if self.colorspace:
            return {"name": NAME, "configuration": {"colorspace": self.colorspace}}
        return {"name": NAME}

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec) -> NDBuffer:
        image = decode_jpeg(chunk_bytes.as_numpy_array().tobytes(), self.colorspace)
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

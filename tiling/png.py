"""PNG files of RGB or grey uint8 images, encoded fast: the run's pictures are a per-slide cost.

Every row is filtered with PNG's "Up" filter (the difference to the row above: one vectorised subtraction) and
the rows are deflated by libdeflate at level 1 (imagecodecs; the standard library's zlib where imagecodecs lacks
it). On the pictures of a small slide (thumbnail, tissue mask, stitch; issue 13 in benchmarks/RESULTS.md) this is
about three times faster than Pillow at compress level 1, whose per-row adaptive filter choice costs more than
the deflate, and the files are slightly smaller. The pixels are the same: any PNG reader decodes them exactly.
"""

from __future__ import annotations

import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np

__all__ = ["encode_png", "write_png"]

_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_COLOUR_TYPE = {1: 0, 3: 2}  # channels -> PNG colour type: greyscale, truecolour
_UP = 2  # PNG filter type "Up"
LEVEL = 1  # libdeflate level: 3.4x faster than Pillow's level 1 and 4% smaller (issue 13, RESULTS.md)


def _deflate(data: bytes, level: int) -> bytes:
    """A zlib stream of `data` (libdeflate where imagecodecs has it, else the standard library's zlib)."""
    try:
        import imagecodecs

        if imagecodecs.DEFLATE.available:
            return imagecodecs.deflate_encode(data, level=level)
    except (ImportError, AttributeError):
        pass
    return zlib.compress(data, level)


def _chunk(kind: bytes, data: bytes) -> tuple[bytes, ...]:
    """A PNG chunk's pieces, for one join of the whole file (`data`, the image's IDAT, is not copied here)."""
    return struct.pack(">I", len(data)), kind, data, struct.pack(">I", zlib.crc32(data, zlib.crc32(kind)))


def encode_png(image: np.ndarray, level: int = LEVEL) -> bytes:
    """The PNG file of `image`, (H, W) grey or (H, W, 3) RGB uint8, as bytes (8 bits per sample, no
    interlacing, no other chunks)."""
    image = np.asarray(image)
    channels = 1 if image.ndim == 2 else (image.shape[2] if image.ndim == 3 else 0)
    if image.dtype != np.uint8 or channels not in _COLOUR_TYPE or 0 in image.shape[:2]:
        raise ValueError(
            f"image must be a non-empty (H, W) or (H, W, 3) uint8 array, got {image.shape} {image.dtype}"
        )
    h, w = image.shape[:2]
    rows = np.ascontiguousarray(image).reshape(h, w * channels)
    filtered = np.empty((h, w * channels + 1), np.uint8)
    filtered[:, 0] = _UP
    filtered[0, 1:] = rows[0]  # the row above the first is zeros
    np.subtract(rows[1:], rows[:-1], out=filtered[1:, 1:])  # modulo 256, as the filter is defined
    header = struct.pack(">IIBBBBB", w, h, 8, _COLOUR_TYPE[channels], 0, 0, 0)
    return b"".join((_SIGNATURE, *_chunk(b"IHDR", header), *_chunk(b"IDAT", _deflate(filtered.tobytes(), level)),
                     *_chunk(b"IEND", b"")))  # fmt: skip


def write_png(target: str | Path | BinaryIO, image: np.ndarray, level: int = LEVEL) -> None:
    """`encode_png(image)` written to `target` (a path, or a binary file open for writing). A path is written
    in place: callers that need an atomic file write to a temporary path (wsi.atomic.atomic_file)."""
    data = encode_png(image, level)
    if isinstance(target, str | Path):
        Path(target).write_bytes(data)
    else:
        target.write(data)

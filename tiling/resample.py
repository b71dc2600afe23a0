"""Tiles that do not line up with a level's JPEG tiles, built from the native tiles they cover.

Resampled grids (256 px at 0.5 um/px read from a 0.25 um/px level), overlapping grids (stride < size) and
sizes that do not divide the native tiles (224 px) need pixels from several native tiles per output tile.
`ResampledTiles` decodes each covered native tile directly (no read_region), keeps the decoded tiles in a
small per-thread cache keyed by tile index (so overlapping and neighbouring output tiles decode each native
tile once), pastes the box and resizes it.

Two modes:
- exact: full-size decode, then `wsi.resize_rgb` of the level box: the same pixels as read_region + resize.
- fast (default): when the remaining factor (level pixels per output pixel) is about 2, 4 or 8, libjpeg-turbo
  decodes each native tile straight to 1/2, 1/4 or 1/8 of its size in the DCT domain (via simplejpeg), which
  replaces the full-size decode and the resize; a resize follows only when the scaled box is not exactly the
  output size. DCT scaling is close to an area (box) average, so its pixels are about a grey level on average
  from read_region + area resize, and further from read_region + `wsi.resize_rgb` (antialiased bilinear, a
  softer filter); figures in benchmarks/RESULTS.md. Other factors decode at full size, as exact mode does.
Either is checked against the slide reader on a sample by `TileReader` before it is used.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from typing import TYPE_CHECKING

import numpy as np
import simplejpeg
from PIL import Image

import wsi

if TYPE_CHECKING:
    from tiling.grid import TileSpec
    from tiling.reader import NativeTiles

__all__ = ["DCT_SCALES", "ResampledTiles", "area_resize", "dct_scale", "decode_scaled", "sample_location"]

DCT_SCALES = (8, 4, 2)
# A DCT scale may leave a box up to this much smaller than the output (then resized up by as much).
_UPSAMPLE_TOLERANCE = 0.02
# An Adobe APP14 marker with transform 0: tells libjpeg that a 3-component stream is RGB, not YCbCr.
_ADOBE_RGB = b"\xff\xee\x00\x0eAdobe\x00\x64\x00\x00\x00\x00\x00"
_CACHE_BYTES = 32 * 2**20


def dct_scale(factor: float, tile_size: int) -> int:
    """The largest DCT scale (8, 4 or 2; else 1) not above `factor` (within 2 %) that divides `tile_size`."""
    for scale in DCT_SCALES:
        if factor * (1 + _UPSAMPLE_TOLERANCE) >= scale and tile_size % scale == 0:
            return scale
    return 1


def decode_scaled(stream: bytes, scale: int, colorspace: str | None = None) -> np.ndarray:
    """Decode a JPEG stream at 1/`scale` of its size in the DCT domain (libjpeg-turbo via simplejpeg).

    `colorspace` "RGB" says the stream is RGB though it carries no marker saying so (TIFF photometric RGB).
    simplejpeg was chosen over Pillow's `draft` (the same libjpeg-turbo scaling, identical pixels) for its
    lower per-call overhead: 0.61 against 1.10 ms per 256 px tile at 1/2 (benchmarks/RESULTS.md).
    """
    if colorspace == "RGB":
        stream = stream[:2] + _ADOBE_RGB + stream[2:]
    width, height = simplejpeg.decode_jpeg_header(stream)[:2]
    return simplejpeg.decode_jpeg(
        stream, colorspace="RGB", min_width=width // scale, min_height=height // scale
    )


class ResampledTiles:
    """Output tiles of `spec` built from the native tiles of `native`; thread-safe and picklable.

    DCT scaling applies to JPEG levels only (other compressions are decoded at full size, exactly).

    `read(x, y)` takes the level-0 top-left corner of an output tile, as `TileReader.read` does. Decoded
    native tiles are cached per thread, at most `cache_bytes` each (least recently used dropped first).
    """

    def __init__(
        self, native: NativeTiles, spec: TileSpec, exact: bool = False, cache_bytes: int = _CACHE_BYTES
    ):
        self.native = native
        self.spec = spec
        self.exact = exact
        self.scale = 1 if exact or not native.jpeg else dct_scale(spec.read_size / spec.size, native.size)
        self.cache_bytes = cache_bytes
        self._local = threading.local()

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _cache(self) -> OrderedDict:
        cache = getattr(self._local, "cache", None)
        if cache is None:
            cache = self._local.cache = OrderedDict()
            self._local.nbytes = 0
        return cache

    def _tile(self, tx: int, ty: int) -> np.ndarray:
        """Native tile (tx, ty) decoded at 1/scale (cached)."""
        cache = self._cache()
        key = (tx, ty)
        tile = cache.get(key)
        if tile is not None:
            cache.move_to_end(key)
            return tile
        tile = self.native.decode_tile(tx, ty, self.scale)
        cache[key] = tile
        self._local.nbytes += tile.nbytes
        while self._local.nbytes > self.cache_bytes and len(cache) > 1:
            _, old = cache.popitem(last=False)
            self._local.nbytes -= old.nbytes
        return tile

    def read(self, x: int, y: int) -> np.ndarray:
        """(size, size, 3) uint8 tile whose top-left level-0 corner is (x, y)."""
        spec, native, scale = self.spec, self.native, self.scale
        bx, by, box = round(x / spec.downsample), round(y / spec.downsample), spec.read_size
        # The level box [bx, bx + box) in scaled pixels, widened to whole pixels.
        x0, y0 = bx // scale, by // scale
        x1, y1 = -(-(bx + box) // scale), -(-(by + box) // scale)
        step = native.size // scale
        out = np.full((y1 - y0, x1 - x0, 3), 255, np.uint8)  # white past the level's edge, as read_region
        # Scaled pixels wholly past the edge stay white (one straddling the edge keeps its decoded value).
        x_end, y_end = min(x1, -(-native.width // scale)), min(y1, -(-native.height // scale))
        for ty in range(y0 // step, -(-y_end // step)):
            for tx in range(x0 // step, -(-x_end // step)):
                left, top = tx * step, ty * step
                sx0, sy0 = max(x0, left), max(y0, top)
                sx1, sy1 = min(x_end, left + step), min(y_end, top + step)
                if sx1 <= sx0 or sy1 <= sy0:
                    continue
                tile = self._tile(tx, ty)
                out[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = tile[
                    sy0 - top : sy1 - top, sx0 - left : sx1 - left
                ]
        if scale == 1 or (bx % scale == 0 and by % scale == 0 and box % scale == 0):
            return wsi.resize_rgb(out, (spec.size, spec.size))  # whole pixels: as read_region's path
        # The level box starts or ends inside a scaled pixel: resample exactly the box's (fractional) extent.
        area = (bx / scale - x0, by / scale - y0, (bx + box) / scale - x0, (by + box) / scale - y0)
        image = Image.fromarray(out).resize((spec.size, spec.size), Image.Resampling.BILINEAR, box=area)
        return np.asarray(image)

    def diff_from_reader(self, slide: wsi.Slide, x: int, y: int, area: bool = False) -> tuple[float, int]:
        """(mean, max) absolute difference of the tile at level-0 (x, y) from read_region + resize there
        (`wsi.resize_rgb`, what exact mode reproduces; or an area resize when `area`)."""
        spec = self.spec
        region = slide.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
        expected = (area_resize if area else wsi.resize_rgb)(region, (spec.size, spec.size))
        diff = np.abs(self.read(x, y).astype(np.int16) - expected.astype(np.int16))
        return float(diff.mean()), int(diff.max())


def area_resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (w, h) by area averaging (Pillow's BOX filter)."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.Resampling.BOX))


def sample_location(native: NativeTiles, spec: TileSpec) -> tuple[int, int]:
    """A level-0 location near the middle of the level whose box straddles native tile borders."""
    box = spec.read_size
    bx = max(0, min(native.width - box, (native.width // 2 // native.size) * native.size - box // 2))
    by = max(0, min(native.height - box, (native.height // 2 // native.size) * native.size - box // 2))
    bx, by = bx - bx % 8, by - by % 8
    return math.floor(bx * spec.downsample), math.floor(by * spec.downsample)

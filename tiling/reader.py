"""Reading the tiles of a grid: native JPEG tiles decoded directly when the grid lines up, else read_region."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import tifffile

import wsi
from tiling.grid import TileSpec
from tiling.jpeg_codec import decode_jpeg, encode_lossless
from wsi.slide import resize_rgb

__all__ = ["NativeTiles", "TileReader"]


class NativeTiles:
    """Direct access to a TIFF level's tiles: one read of the stored bytes and one decode per tile.

    Pixel-identical to read_region (the same decoder as tiffslide; openslide agrees on the fixtures), and several
    times faster because nothing is copied between tiles. Usable when the grid's tiles are the file's tiles.
    """

    def __init__(self, path: Path, level: int, size: int, level_dimensions: tuple[int, int]):
        self._tif = tifffile.TiffFile(path)
        self._page = self._tif.series[0].levels[level].pages[0]
        self.size = size
        self.width, self.height = level_dimensions
        self._across = -(-self._page.imagewidth // self._page.tilewidth)
        self._lock = threading.Lock()

    @classmethod
    def try_open(cls, path: Path, spec: TileSpec, level_dimensions: tuple[int, int]) -> NativeTiles | None:
        """A reader when the level is JPEG-tiled in `spec.size` tiles and the grid steps by whole tiles."""
        if (
            spec.needs_resize
            or spec.stride != spec.size
            or abs(spec.downsample - round(spec.downsample)) > 1e-9
        ):
            return None
        try:
            tif = tifffile.TiffFile(path)
        except Exception:
            return None
        try:
            series = tif.series[0]
            if spec.level >= len(series.levels):
                return None
            page = series.levels[spec.level].pages[0]
            ok = (
                page.is_tiled
                and page.tilewidth == spec.size
                and page.tilelength == spec.size
                and page.compression == tifffile.COMPRESSION.JPEG
                and page.samplesperpixel == 3
                and (page.imagewidth, page.imagelength) == tuple(level_dimensions)
            )
        finally:
            tif.close()
        return cls(path, spec.level, spec.size, level_dimensions) if ok else None

    def _raw(self, x_level: int, y_level: int) -> tuple[int, bytes]:
        index = (y_level // self.size) * self._across + x_level // self.size
        with self._lock:
            fh = self._tif.filehandle
            fh.seek(self._page.dataoffsets[index])
            return index, fh.read(self._page.databytecounts[index])

    def is_interior(self, x_level: int, y_level: int) -> bool:
        return x_level + self.size <= self.width and y_level + self.size <= self.height

    def read_stream(self, x_level: int, y_level: int) -> bytes:
        """The tile as one self-contained JPEG stream (shared JPEGTables spliced in after SOI)."""
        _, data = self._raw(x_level, y_level)
        tables = self._page.jpegtables
        if tables:
            data = data[:2] + bytes(tables)[2:-2] + data[2:]
        return data

    @property
    def colorspace(self) -> str | None:
        """How copied streams must be decoded: "RGB" for photometric-RGB pages, else by their markers."""
        return "RGB" if self._page.photometric == tifffile.PHOTOMETRIC.RGB else None

    def stream_decodes_alike(self) -> bool:
        """Whether a stand-alone decode of a copied tile gives the pixels this reader gives."""
        x, y = 0, 0
        copied = decode_jpeg(self.read_stream(x, y), self.colorspace)
        return copied.shape[-1] == 3 and np.array_equal(copied, self.read(x, y, whiten=False))

    def read(self, x_level: int, y_level: int, whiten: bool = True) -> np.ndarray:
        """The tile whose top-left corner is (x_level, y_level) in level pixels (a multiple of the tile size)."""
        index, data = self._raw(x_level, y_level)
        tile = self._page.decode(data, index, jpegtables=self._page.jpegtables)[0]
        tile = np.asarray(tile).reshape(self.size, self.size, -1)[..., :3]
        w, h = self.width - x_level, self.height - y_level
        if whiten and (w < self.size or h < self.size):  # past the level's edge: white, as read_region gives
            tile = tile.copy()
            tile[:, max(0, w) :] = 255
            tile[max(0, h) :] = 255
        return tile

    def close(self) -> None:
        self._tif.close()


def _agrees_with_reader(native: NativeTiles, slide: wsi.Slide, spec: TileSpec) -> bool:
    """Whether a native tile decodes to what the slide's own reader returns there (level mapping, overlapping
    tiles or colour handling of some vendors would differ; then the native path is not used)."""
    size = min(spec.size, native.width, native.height)
    x0, y0 = (native.width // spec.size // 2) * spec.size, (native.height // spec.size // 2) * spec.size
    d = spec.downsample
    expected = slide.read_region((round(x0 * d), round(y0 * d)), spec.level, (size, size))
    return np.array_equal(native.read(x0, y0)[:size, :size], expected)


class TileReader:
    """Reads the tiles of a `TileSpec` from one slide; thread-safe (one slide handle per thread)."""

    def __init__(self, path: str | Path, spec: TileSpec, backend: str | None = None, mpp: float | None = None,
                 native: bool = True):  # fmt: skip
        self.path = Path(path)
        self.spec = spec
        self.backend = backend
        self.mpp = mpp
        self._local = threading.local()
        self._native_allowed = native

    def __getstate__(self) -> dict:
        """Picklable for process pools and DataLoader workers: each process opens its own handles."""
        state = self.__dict__.copy()
        del state["_local"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def _handles(self):
        handles = getattr(self._local, "handles", None)
        if handles is None:
            slide = wsi.open_slide(self.path, backend=self.backend, mpp=self.mpp)
            native = None
            if self._native_allowed:
                native = NativeTiles.try_open(
                    self.path, self.spec, slide.meta.level_dimensions[self.spec.level]
                )
            if native is not None and not _agrees_with_reader(native, slide, self.spec):
                native.close()
                native = None
            copyable = native is not None and native.stream_decodes_alike()
            handles = self._local.handles = (slide, native, copyable)
        return handles

    @property
    def uses_native_tiles(self) -> bool:
        return self._handles()[1] is not None

    def read(self, x: int, y: int) -> np.ndarray:
        """(size, size, 3) uint8 tile whose top-left level-0 corner is (x, y)."""
        slide, native, _ = self._handles()
        spec = self.spec
        if native is not None:
            d = spec.downsample
            return native.read(round(x / d), round(y / d))
        region = slide.read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
        return resize_rgb(region, (spec.size, spec.size))

    @property
    def can_copy_jpeg(self) -> bool:
        """Whether tiles can be stored as the slide's own JPEG streams (see tiling.jpeg_codec)."""
        return self._handles()[2]

    @property
    def jpeg_colorspace(self) -> str | None:
        """The colour space a store of copied streams records (see JpegCodec)."""
        native = self._handles()[1]
        return native.colorspace if native is not None else None

    def read_streams(self, coords: np.ndarray) -> list[bytes]:
        """JPEG streams of tiles: copied from the slide when possible, else lossless JPEG of the pixels."""
        _, native, copyable = self._handles()
        d = self.spec.downsample
        out = []
        for x, y in coords:
            if copyable and native.is_interior(round(x / d), round(y / d)):
                out.append(native.read_stream(round(x / d), round(y / d)))
            else:
                out.append(encode_lossless(self.read(int(x), int(y))))
        return out

    def read_many(self, coords: np.ndarray) -> np.ndarray:
        out = np.empty((len(coords), self.spec.size, self.spec.size, 3), np.uint8)
        for i, (x, y) in enumerate(coords):
            out[i] = self.read(int(x), int(y))
        return out

"""Reading the tiles of a grid: native JPEG tiles copied or decoded directly (see also tiling.resample), else
read_region."""

from __future__ import annotations

import math
import os
import threading
from pathlib import Path

import numpy as np
import tifffile

import wsi
from tiling.grid import TileSpec
from tiling.jpeg_codec import decode_jpeg, encode_lossless
from tiling.resample import ResampledTiles, area_resize, decode_scaled, sample_location
from wsi.deprecation import renamed_keywords, warn_renamed
from wsi.errors import UnreadableSlideError
from wsi.tifflog import tifffile_messages  # complaints were warned of once by wsi.open_slide

__all__ = ["NativeTiles", "TileReader"]


class NativeTiles:
    """Direct access to a TIFF level's tiles: one read of the stored bytes and one decode per tile.

    JPEG tiles are decoded by libjpeg-turbo (optionally DCT-scaled) or copied as streams; other compressions
    by tifffile's decoder. Several times faster than read_region because nothing is copied between tiles. The
    tile index (offsets, byte counts, JPEG tables) is read once into numpy arrays and shared by all threads,
    which read through one file descriptor with positional reads (`os.pread`). Whether the decoded pixels
    equal the slide reader's is checked by the caller (`TileReader`) before this is used.
    """

    def __init__(self, path: Path, level: int, size: int, level_dimensions: tuple[int, int],
                 downsample: float = 1.0):  # fmt: skip
        """`size`: the level's (square) tile size; `downsample` maps level pixels to level-0 ones in errors."""
        self.path = Path(path)
        self.size = size
        self.downsample = downsample
        self.width, self.height = level_dimensions
        self.level = level
        with tifffile_messages(), tifffile.TiffFile(path) as tif:
            page = tif.series[0].levels[level].pages[0]
            self.jpeg = page.compression == tifffile.COMPRESSION.JPEG
            self._page_decode = None if self.jpeg else page.decode  # works on bytes, without the file
            self._offsets = np.asarray(page.dataoffsets, dtype=np.int64)
            self._counts = np.asarray(page.databytecounts, dtype=np.int64)
            self._tables = bytes(page.jpegtables) if page.jpegtables else None
            self._across = -(-page.imagewidth // page.tilewidth)
            # TIFF JPEG tiles often carry no colour marker; the photometric tag says what they are.
            self.colorspace = "RGB" if page.photometric == tifffile.PHOTOMETRIC.RGB else None
            self._fd, self._fd_lock = None, threading.Lock()
            index, data = 0, self._read_bytes(0)
            reference = np.asarray(page.decode(data, index, jpegtables=page.jpegtables)[0])
        reference = reference.reshape(reference.shape[-3:])[..., :3]
        # Copying streams is exact only if a stand-alone decode gives what tifffile's decoder gives.
        self.streams_decode_alike = self.jpeg and np.array_equal(
            self._decode(self.read_stream(0, 0)), reference
        )

    @classmethod
    def try_open(cls, path: Path, spec: TileSpec, level_dimensions: tuple[int, int]) -> NativeTiles | None:
        """A reader when the level is JPEG-tiled in `spec.size` tiles and the grid steps by whole tiles."""
        if spec.needs_resize or spec.stride != spec.size:
            return None
        native = cls.open_level(path, spec.level, level_dimensions, spec.downsample)
        return native if native is not None and native.jpeg and native.size == spec.size else None

    @classmethod
    def open_level(cls, path: Path, level: int, level_dimensions: tuple[int, int],
                   downsample: float) -> NativeTiles | None:  # fmt: skip
        """A reader when the level (of an integer downsample) is tiled in square 8-bit RGB tiles, else None.

        JPEG tiles are decoded with libjpeg-turbo directly; other compressions tifffile decodes (LZW, deflate,
        zstd, none, JPEG 2000 through imagecodecs) with tifffile's decoder, one tile at a time.
        """
        if abs(downsample - round(downsample)) > 1e-9:
            return None
        try:
            with tifffile_messages(), tifffile.TiffFile(path) as tif:
                series = tif.series[0]
                if level >= len(series.levels):
                    return None
                page = series.levels[level].pages[0]
                ok = (
                    page.is_tiled
                    and page.tilewidth == page.tilelength
                    and page.samplesperpixel == 3
                    and page.dtype == np.uint8
                    and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
                    and (page.imagewidth, page.imagelength) == tuple(level_dimensions)
                )
                size = page.tilewidth
        except Exception:  # not a TIFF, or one tifffile cannot parse: use the slide reader
            return None
        return cls(path, level, size, level_dimensions, downsample) if ok else None

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        del state["_fd"], state["_fd_lock"]
        state["_page_decode"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd, self._fd_lock = None, threading.Lock()
        if not self.jpeg:
            with tifffile_messages(), tifffile.TiffFile(self.path) as tif:
                self._page_decode = tif.series[0].levels[self.level].pages[0].decode

    def __del__(self) -> None:
        self.close()

    def close(self) -> None:
        """Close the file descriptor (reopened by the next read)."""
        fd, self._fd = getattr(self, "_fd", None), None
        if fd is not None:
            os.close(fd)

    def _read_bytes(self, index: int) -> bytes:
        """A tile's stored bytes: one positional read on a descriptor shared by all threads (no seek state)."""
        if self._fd is None:
            with self._fd_lock:
                if self._fd is None:
                    self._fd = os.open(self.path, os.O_RDONLY)
        return os.pread(self._fd, int(self._counts[index]), int(self._offsets[index]))

    def _decode(self, stream: bytes) -> np.ndarray:
        return np.asarray(decode_jpeg(stream, self.colorspace)).reshape(self.size, self.size, -1)[..., :3]

    def is_interior(self, x_level: int, y_level: int) -> bool:
        return x_level + self.size <= self.width and y_level + self.size <= self.height

    def read_stream(self, x_level: int, y_level: int) -> bytes:
        """The tile as one self-contained JPEG stream (shared JPEGTables spliced in after SOI)."""
        data = self._read_bytes((y_level // self.size) * self._across + x_level // self.size)
        if self._tables:
            data = data[:2] + self._tables[2:-2] + data[2:]
        return data

    def decode_tile(self, tx: int, ty: int, scale: int = 1) -> np.ndarray:
        """Native tile (tx, ty) (column, row) decoded at 1/`scale` of its size (DCT scaling when > 1).

        A tile that fails to decode raises UnreadableSlideError naming its level-0 location.
        """
        stream = self.read_stream(tx * self.size, ty * self.size)
        try:
            if not self.jpeg:
                index = ty * self._across + tx
                tile = np.asarray(self._page_decode(stream, index)[0])
                return tile.reshape(self.size, self.size, -1)[..., :3]
            if scale == 1:
                return self._decode(stream)
            tile = decode_scaled(stream, scale, self.colorspace)
            step = self.size // scale
            return tile.reshape(step, step, -1)[..., :3]
        except Exception as exc:
            d = self.downsample
            location = (round(tx * self.size * d), round(ty * self.size * d))
            raise UnreadableSlideError(
                self.path,
                f"native tile at level-0 {location} (size {self.size}) failed to decode: {exc}",
            ) from exc

    def read(self, x_level: int, y_level: int) -> np.ndarray:
        """The tile whose top-left corner is (x_level, y_level) in level pixels (a multiple of the tile size)."""
        tile = self.decode_tile(x_level // self.size, y_level // self.size)
        w, h = self.width - x_level, self.height - y_level
        if w < self.size or h < self.size:  # past the level's edge: white, as read_region gives
            tile = tile.copy()
            tile[:, max(0, w) :] = 255
            tile[max(0, h) :] = 255
        return tile


def _agrees_with_reader(native: NativeTiles, slide: wsi.Slide, spec: TileSpec) -> bool:
    """Whether a native tile decodes to what the slide's own reader returns there (level mapping, overlapping
    tiles or colour handling of some vendors would differ; then the native path is not used)."""
    size = min(spec.size, native.width, native.height)
    x0, y0 = (native.width // spec.size // 2) * spec.size, (native.height // spec.size // 2) * spec.size
    d = spec.downsample
    expected = slide.read_region((round(x0 * d), round(y0 * d)), spec.level, (size, size))
    return np.array_equal(native.read(x0, y0)[:size, :size], expected)


# Largest mean absolute difference (grey levels) between a DCT-scaled decode of a native tile and the area
# average of its full-size decode (measured: 0.1 - 1.1 on real and mosaic tissue); a wrong colour space or
# scale gives tens.
DCT_TOLERANCE = 2.5


def _resampled_agrees(resampled: ResampledTiles, slide: wsi.Slide) -> bool:
    """Whether native tiles give the slide reader's pixels on a sample near the middle of the level: the
    full-size paste + resize (level mapping, paste, colour) must equal read_region + resize exactly; with DCT
    scaling, the scaled decode of the native tile there must be within DCT_TOLERANCE of the area average of
    its full-size decode (the paste and resize after it are the ones just checked)."""
    native, spec = resampled.native, resampled.spec
    x, y = sample_location(native, spec)
    full = resampled if resampled.scale == 1 else ResampledTiles(native, spec, exact=True)
    if full.diff_from_reader(slide, x, y)[1] != 0:
        return False
    if resampled.scale == 1:
        return True
    tx, ty = round(x / spec.downsample) // native.size, round(y / spec.downsample) // native.size
    step = native.size // resampled.scale
    scaled = native.decode_tile(tx, ty, resampled.scale).astype(np.int16)
    expected = area_resize(native.decode_tile(tx, ty), (step, step)).astype(np.int16)
    return float(np.abs(scaled - expected).mean()) <= DCT_TOLERANCE


# Widest region (level pixels) read at once for neighbouring tiles on the read_region path: 4096 x 512 px RGBA
# is 8 MB per thread.
STRIP_PIXELS = 4096


class TileReader:
    """Reads the tiles of a `TileSpec` from one slide; thread-safe and picklable.

    The native paths are set up once and shared: `NativeTiles` when the grid lines up with the level's JPEG
    tiles, else `ResampledTiles` (resampled, overlapping or unaligned grids, and every grid on levels tiled
    in another compression tifffile decodes). A slide handle is opened per thread only when a tile must go
    through read_region (slides tifffile cannot read tile by tile, or whose check failed).
    """

    @renamed_keywords(mpp="slide_mpp")
    def __init__(self, path: str | Path, spec: TileSpec, backend: str | None = None,
                 slide_mpp: float | None = None, native: bool = True, exact: bool = False,
                 slide: wsi.Slide | None = None):  # fmt: skip
        """`slide_mpp` overrides the slide's own resolution, as in `wsi.open_slide` (old name: `mpp`).
        `exact`: resampled tiles equal read_region + resize (no DCT scaling, see tiling.resample). `slide`: a
        handle of this slide the caller has open (same backend and mpp), used by the calling thread instead of
        opening another one; the caller closes it, after this reader."""
        self.path = Path(path)
        self.spec = spec
        self.backend = backend
        self.slide_mpp = slide_mpp
        self.exact = exact
        self._native_allowed = native
        self._native: NativeTiles | None = None
        self._resampled: ResampledTiles | None = None
        self._native_checked = False
        self._strips_agree: bool | None = None  # read_region path: strip reads checked on the first strip
        self._lock = threading.Lock()
        self._local = threading.local()
        self._opened: list[wsi.Slide] = []  # every thread's slide handle, for close()
        self._opened_lock = threading.Lock()  # not self._lock: _native_tiles holds that while opening a slide
        if slide is not None:
            self._local.slide = slide  # not in _opened: the caller's to close

    def close(self) -> None:
        """Close the slide handles this reader opened, in every thread (reopened if it reads again)."""
        with self._opened_lock:
            opened, self._opened = self._opened, []
            self._local = threading.local()
        for slide in opened:
            slide.close()

    def __enter__(self) -> TileReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def mpp(self) -> float | None:
        """Deprecated name of `slide_mpp`."""
        warn_renamed("mpp", "slide_mpp", "TileReader", stacklevel=3)
        return self.slide_mpp

    def __getstate__(self) -> dict:
        """Picklable for process pools and DataLoader workers: each process opens its own handles."""
        state = self.__dict__.copy()
        del state["_local"], state["_lock"], state["_opened"], state["_opened_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._local = threading.local()
        self._opened, self._opened_lock = [], threading.Lock()

    def _slide(self) -> wsi.Slide:
        slide = getattr(self._local, "slide", None)
        if slide is None:
            slide = self._local.slide = wsi.open_slide(
                self.path, backend=self.backend, slide_mpp=self.slide_mpp
            )
            with self._opened_lock:
                self._opened.append(slide)
        return slide

    def _native_tiles(self) -> NativeTiles | None:
        """The shared native reader, set up and checked against the slide reader once."""
        if not self._native_checked:
            with self._lock:
                if not self._native_checked:
                    native = None
                    if self._native_allowed:
                        slide = self._slide()
                        native = NativeTiles.try_open(
                            self.path, self.spec, slide.meta.level_dimensions[self.spec.level]
                        )
                        if native is not None and not _agrees_with_reader(native, slide, self.spec):
                            native = None
                        if native is None:
                            self._resampled = self._open_resampled(slide)
                    self._native = native
                    self._native_checked = True
        return self._native

    def _open_resampled(self, slide: wsi.Slide) -> ResampledTiles | None:
        spec = self.spec
        level = NativeTiles.open_level(
            self.path, spec.level, slide.meta.level_dimensions[spec.level], spec.downsample
        )
        if level is None:
            return None
        resampled = ResampledTiles(level, spec, exact=self.exact)
        if not _resampled_agrees(resampled, slide):
            return None
        return resampled

    @property
    def path_name(self) -> str:
        """Which path reads the tiles: "native" (aligned JPEG tiles), "resampled-dct<k>" (DCT-scaled by 1/k),
        "resampled" (full-size decode of native tiles) or "read_region"."""
        native = self._native_tiles()
        if native is not None:
            return "native"
        if self._resampled is not None:
            scale = self._resampled.scale
            return f"resampled-dct{scale}" if scale > 1 else "resampled"
        return "read_region"

    @property
    def can_copy_jpeg(self) -> bool:
        """Whether tiles can be stored as the slide's own JPEG streams (see tiling.jpeg_codec)."""
        native = self._native_tiles()
        return native is not None and native.streams_decode_alike

    @property
    def jpeg_colorspace(self) -> str | None:
        """The colour space a store of copied streams records (see JpegCodec)."""
        native = self._native_tiles()
        return native.colorspace if native is not None else None

    def read(self, x: int, y: int) -> np.ndarray:
        """(size, size, 3) uint8 tile whose top-left level-0 corner is (x, y)."""
        spec = self.spec
        native = self._native_tiles()
        if native is not None:
            d = spec.downsample
            return native.read(round(x / d), round(y / d))
        if self._resampled is not None:
            return self._resampled.read(int(x), int(y))
        region = self._slide().read_region((int(x), int(y)), spec.level, (spec.read_size, spec.read_size))
        return wsi.resize_rgb(region, (spec.size, spec.size))

    def read_streams(self, coords: np.ndarray) -> list[bytes]:
        """JPEG streams of tiles: copied from the slide when possible, else lossless JPEG of the pixels."""
        native = self._native_tiles() if self.can_copy_jpeg else None
        d = self.spec.downsample
        out = []
        for x, y in coords:
            if native is not None and native.is_interior(round(x / d), round(y / d)):
                out.append(native.read_stream(round(x / d), round(y / d)))
            else:
                out.append(encode_lossless(self.read(int(x), int(y))))
        return out

    def read_many(self, coords: np.ndarray) -> np.ndarray:
        """(n, size, size, 3) uint8 tiles at level-0 top-left `coords` (n, 2).

        On the read_region path (slides tifffile cannot read tile by tile: MRXS, VMS, NDPI stripes, ...), a
        shard's tiles are neighbours, read by one worker (openslide's cache then decodes each native tile
        about once); with overlapping tiles (stride < size) each run of neighbours in a row is read as one
        region, a strip, and cut out, so that each pixel is read once, not size / stride times (1.3-1.5x in
        benchmarks/RESULTS.md; without overlap a strip was no faster). The first strip is checked against
        tile-by-tile reads; if they differ, tiles are read one by one.
        """
        coords = np.asarray(coords).reshape(-1, 2)
        out = np.empty((len(coords), self.spec.size, self.spec.size, 3), np.uint8)
        overlap = self.spec.stride < self.spec.size
        strips = self._strips(coords) if overlap and self.path_name == "read_region" else []
        done = np.zeros(len(coords), bool)
        for start, stop in strips:
            if stop - start > 1 and self._strip_trusted(coords[start:stop]):
                self._read_strip(coords[start:stop], out[start:stop])
                done[start:stop] = True
        for i in np.flatnonzero(~done):
            out[i] = self.read(int(coords[i, 0]), int(coords[i, 1]))
        return out

    def _strips(self, coords: np.ndarray) -> list[tuple[int, int]]:
        """Runs [start, stop) of `coords` that are neighbours in one row of the grid, read as one region: the
        same y, each one grid step right of the previous, a whole number of level pixels apart, at most
        STRIP_PIXELS level pixels wide."""
        spec, d = self.spec, self.spec.downsample
        runs, start = [], 0
        for i in range(1, len(coords) + 1):
            if i < len(coords):
                dx = coords[i, 0] - coords[i - 1, 0]
                offset = (coords[i, 0] - coords[start, 0]) / d
                if (coords[i, 1] == coords[start, 1] and 0 < dx <= math.ceil(spec.stride_level0)
                        and abs(offset - round(offset)) < 1e-9 and round(offset) + spec.read_size <= STRIP_PIXELS):  # fmt: skip
                    continue
            runs.append((start, i))
            start = i
        return runs

    def _read_strip(self, coords: np.ndarray, out: np.ndarray) -> None:
        spec, d = self.spec, self.spec.downsample
        x0, y0 = int(coords[0, 0]), int(coords[0, 1])
        offsets = [round((int(x) - x0) / d) for x in coords[:, 0]]
        region = self._slide().read_region(
            (x0, y0), spec.level, (offsets[-1] + spec.read_size, spec.read_size)
        )
        for i, offset in enumerate(offsets):
            box = np.ascontiguousarray(region[:, offset : offset + spec.read_size])
            out[i] = wsi.resize_rgb(box, (spec.size, spec.size))

    def _strip_trusted(self, coords: np.ndarray) -> bool:
        """Whether a strip read gives the tile-by-tile pixels (checked once, on the first strip of two or more
        tiles: a reader that resamples fractional level positions could differ)."""
        if self._strips_agree is None:
            with self._lock:
                if self._strips_agree is None:
                    strip = np.empty((len(coords), self.spec.size, self.spec.size, 3), np.uint8)
                    self._read_strip(coords, strip)
                    single = [self.read(int(x), int(y)) for x, y in coords]
                    self._strips_agree = all(np.array_equal(a, b) for a, b in zip(strip, single, strict=True))
        return self._strips_agree

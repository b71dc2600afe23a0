"""A look at a TIFF-family file before a backend opens it: is it complete, and how are its pixels laid out.

Backends read the pixels; this says what they are (8-bit RGB, 16-bit grey, one page per fluorescence channel),
whether a cut-short copy left image directories or tile data beyond the end of the file, and what tifffile
complained about while parsing. The answer is cached per file (path, size, mtime, inode).
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

import tifffile

from wsi.tifflog import tifffile_messages

__all__ = ["TiffLayout", "probe_tiff"]

_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_MAX_PAGES = 5000  # pages checked for data beyond the end of the file (a slide has a handful)
_QPI_NAME = re.compile(r"<Name>\s*([^<]*?)\s*</Name>")
_OME_CHANNEL = re.compile(r"<Channel\b[^>]*?\bName=\"([^\"]*)\"")


@dataclass(frozen=True)
class TiffLayout:
    """How a TIFF file stores its pixels, and whether it looks complete.

    `channels` counts colour samples (3 for RGB) or, for multiplex fluorescence, channel planes stored as
    separate pages (`planar_channels`). `truncated` says why the file looks cut short (None when it does not);
    `complaints` is what tifffile logged while parsing it, once each.
    """

    dtype: str
    channels: int
    planar_channels: bool
    channel_names: tuple[str, ...]
    modality: str  # "brightfield" or "fluorescence"
    min_is_white: bool
    has_alpha: bool
    truncated: str | None
    complaints: tuple[str, ...]

    @property
    def rgb8(self) -> bool:
        """8-bit samples of one pixel (grey, RGB, RGBA): what every backend reads as it is."""
        return self.dtype == "uint8" and not self.planar_channels


def probe_tiff(path: str | Path) -> TiffLayout | None:
    """The layout of a TIFF/BigTIFF file (SVS, NDPI, QPTIFF, generic TIFF), or None for another format or a
    file tifffile cannot parse at all (the backends then say why)."""
    st = os.stat(path)
    return _probe(str(path), st.st_size, st.st_mtime_ns, st.st_ino)


@functools.lru_cache(maxsize=64)
def _probe(path: str, size: int, _mtime_ns: int, _inode: int) -> TiffLayout | None:
    with open(path, "rb") as f:
        if f.read(4) not in _MAGIC:
            return None
    with tifffile_messages() as complaints:
        try:
            tif = tifffile.TiffFile(path)
        except Exception:  # tifffile raises many types for damaged headers
            return _broken(complaints, size)
        try:
            with tif:
                return _layout(tif, size, complaints)
        except Exception:
            return _broken(complaints, size)


def _broken(complaints: list[str], size: int) -> TiffLayout | None:
    reason = _truncation_in(complaints, size)
    if reason is None:
        return None
    return TiffLayout("unknown", 0, False, (), "brightfield", False, False, reason, tuple(complaints))


def _truncation_in(complaints: list[str], size: int) -> str | None:
    """tifffile logs an offset at or beyond the end of the file exactly when a directory lies past it."""
    for message in complaints:
        if "invalid offset to first page" in message or "invalid page offset" in message:
            return f"an image directory lies beyond the end of the file ({size:,} bytes): {message}"
    return None


def _data_beyond_end(tif: tifffile.TiffFile, size: int) -> str | None:
    for page in islice(tif.pages, _MAX_PAGES):
        ends = [o + c for o, c in zip(page.dataoffsets, page.databytecounts, strict=False) if o and c]
        if ends and max(ends) > size:
            return (f"image data of page {page.index} runs to byte {max(ends):,}, beyond the end of the file "
                    f"({size:,} bytes)")  # fmt: skip
    return None


def _layout(tif: tifffile.TiffFile, size: int, complaints: list[str]) -> TiffLayout:
    beyond = _data_beyond_end(tif, size)  # loads every directory first: tifffile complains meanwhile
    truncated = _truncation_in(complaints, size) or beyond
    if not tif.series:
        if truncated is None:
            raise ValueError("no image series")
        return TiffLayout("unknown", 0, False, (), "brightfield", False, False, truncated, tuple(complaints))
    series = tif.series[0]
    page = series.keyframe
    planes = series.shape[series.axes.index("C")] if "C" in series.axes else 1
    extra = len(page.extrasamples) if page.extrasamples else 0
    samples = page.samplesperpixel - extra
    planar = planes > 1 and samples == 1
    names = _channel_names(tif, series) if planar else ()
    return TiffLayout(
        dtype=str(series.dtype),
        channels=planes if planar else samples,
        planar_channels=planar,
        channel_names=names if len(names) == planes else (),
        modality="fluorescence" if planar else "brightfield",
        min_is_white=page.photometric == tifffile.PHOTOMETRIC.MINISWHITE,
        has_alpha=extra > 0,
        truncated=truncated,
        complaints=tuple(complaints),
    )


def _channel_names(tif: tifffile.TiffFile, series) -> tuple[str, ...]:
    """From each page's PerkinElmer QPI description, or the OME-XML <Channel Name=...> elements."""
    if tif.is_qpi:
        names = []
        for page in series.pages:
            found = _QPI_NAME.search(getattr(page, "description", "") or "")
            names.append(found.group(1) if found else "")
        return tuple(names) if all(names) else ()
    if tif.is_ome:
        return tuple(_OME_CHANNEL.findall(tif.ome_metadata or ""))
    return ()

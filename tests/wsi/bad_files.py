"""Writers of the odd and broken slide files a lab brings (issue 14): each small, written in a test's tmp_path."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tifffile

from tests.conftest import CMU

CHANNELS = ("DAPI", "CD8", "PanCK")


def gray16_tiff(
    path: Path, size=(2000, 1500), tiled: bool = False, lo: int = 1000, hi: int = 5000
) -> np.ndarray:
    """A 16-bit one-channel LZW TIFF at 0.5 um/px: a bright field with dark blobs, values in [lo, hi]. Stripped
    (the default) is what openslide refuses and tiffslide used to read as (h, w, 1)."""
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    blobs = np.exp(-(((xx - w * 0.4) / (w * 0.15)) ** 2 + ((yy - h * 0.5) / (h * 0.2)) ** 2))
    image = (hi - (hi - lo) * blobs).astype(np.uint16)
    tifffile.imwrite(path, image, compression="lzw", tile=(256, 256) if tiled else None,
                     resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", metadata=None)  # fmt: skip
    return image


def _qpi(name: str, kind: str) -> str:
    return ('<?xml version="1.0" encoding="utf-8"?>\n<PerkinElmer-QPI-ImageDescription><DescriptionVersion>2'
            f"</DescriptionVersion><ImageType>{kind}</ImageType><Name>{name}</Name></PerkinElmer-QPI-ImageDescription>")  # fmt: skip


def qptiff(path: Path, size=(1536, 1024), names=CHANNELS) -> list[np.ndarray]:
    """A PerkinElmer-style multiplex fluorescence QPTIFF: one tiled 8-bit page per channel at full resolution, an
    RGB thumbnail, then the channels at half resolution; each page's XML description names its channel."""
    w, h = size
    rng = np.random.default_rng(0)
    planes = [rng.integers(0, 256, (h, w), dtype=np.uint8) for _ in names]
    common = {"software": "PerkinElmer-QPI", "metadata": None}
    with tifffile.TiffWriter(path, bigtiff=True) as tif:
        for name, plane in zip(names, planes, strict=True):
            tif.write(plane, tile=(256, 256), compression="lzw", description=_qpi(name, "FullResolution"),
                      resolution=(1e4 / 0.5, 1e4 / 0.5), resolutionunit="CENTIMETER", **common)  # fmt: skip
        tif.write(np.zeros((64, 96, 3), np.uint8), description=_qpi("", "Thumbnail"), **common)
        for name, plane in zip(names, planes, strict=True):
            tif.write(plane[::2, ::2], tile=(256, 256), compression="lzw",
                      description=_qpi(name, "ReducedResolution"), **common)  # fmt: skip
    return planes


def truncated_copy(path: Path, source: Path = CMU, fraction: float = 0.5) -> Path:
    """The first `fraction` of `source`, as an interrupted copy leaves it."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def complaining_tiff(path: Path, size=(1024, 768)) -> Path:
    """A good 8-bit RGB TIFF at 0.5 um/px (a purple square on white) whose ImageDescription value lies past the end
    of the file: tifffile logs a complaint on every parse, the pixels read fine."""
    import struct

    w, h = size
    image = np.full((h, w, 3), 240, np.uint8)
    image[h // 4 : 3 * h // 4, w // 4 : 3 * w // 4] = (150, 80, 160)
    tifffile.imwrite(path, image, tile=(256, 256), description="a description", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER", metadata=None)  # fmt: skip
    with tifffile.TiffFile(path) as tif:
        tag_offset = tif.pages[0].tags["ImageDescription"].offset
    data = bytearray(path.read_bytes())
    struct.pack_into("<I", data, tag_offset + 8, len(data) + 1000)
    path.write_bytes(bytes(data))
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def dangling_link(path: Path) -> Path:
    path.symlink_to(path.parent / "gone-forever.svs")
    return path


def lone_dicom(path: Path) -> Path:
    """A DICOM file that is no whole-slide image: the preamble, DICM and a tiny group-2 header."""
    header = b"\x02\x00\x10\x00UI\x14\x001.2.840.10008.1.2.1\x00"
    path.write_bytes(b"\0" * 128 + b"DICM" + header)
    return path


def corrupt_tile(path, column: int, row: int) -> None:
    """Overwrite the bytes of tile (`column`, `row`) of a TIFF's first page with zeros (a tile that fails to decode)."""
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        index = row * -(-page.imagewidth // page.tilewidth) + column
        offset, count = page.dataoffsets[index], page.databytecounts[index]
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\x00" * count)

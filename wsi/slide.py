"""`open_slide` and `Slide`: one reader over every backend, reading at a level or at a target mpp."""

from __future__ import annotations

import math
import warnings
from pathlib import Path
from types import MappingProxyType

import numpy as np
from PIL import Image

from wsi.backends import backend_order, get_backend
from wsi.deprecation import renamed_keywords
from wsi.errors import MissingMppError, SlideWarning, UnreadableSlideError, UnsupportedSlideError
from wsi.files import check_slide_file
from wsi.meta import SlideMeta, plausible_mpp
from wsi.tiff_probe import probe_tiff

__all__ = ["Slide", "open_slide", "resize_rgb"]

# A level is usable for a target downsample (or mpp) when it is at most this much coarser (rounding in vendor
# metadata).
_TOLERANCE = 1e-3


def _composite_on_white(image: np.ndarray) -> np.ndarray:
    if image.shape[-1] == 3:
        return np.ascontiguousarray(image)
    if image[..., 3].min() == 255:  # fully opaque, the usual case: no arithmetic, no temporaries
        return np.ascontiguousarray(image[..., :3])
    rgb = image[..., :3].astype(np.uint16)
    alpha = image[..., 3:4].astype(np.uint16)
    out = (rgb * alpha + 255 * (255 - alpha) + 127) // 255
    return out.astype(np.uint8)


def resize_rgb(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an (H, W, 3) uint8 image to (w, h); antialiased when shrinking."""
    if (image.shape[1], image.shape[0]) == tuple(size):
        return image
    return np.asarray(Image.fromarray(image).resize(tuple(size), Image.Resampling.BILINEAR))


class Slide:
    """An open whole-slide image. Locations are level-0 (x, y) pixels; sizes are (w, h); images (H, W, 3) RGB."""

    @renamed_keywords(mpp="slide_mpp")
    def __init__(self, reader, path: Path, slide_mpp: float | None = None):
        self._reader = reader
        self.path = Path(path)
        given = plausible_mpp(slide_mpp) if slide_mpp is not None else None
        if slide_mpp is not None and given is None:
            raise ValueError(
                f"{path}: slide_mpp={slide_mpp} is not a plausible resolution in microns per pixel"
            )
        self.meta = SlideMeta(
            path=self.path,
            dimensions=reader.dimensions,
            level_dimensions=reader.level_dimensions,
            level_downsamples=reader.level_downsamples,
            mpp=given if given is not None else plausible_mpp(reader.raw_mpp),
            objective_power=reader.objective_power,
            vendor=reader.vendor,
            backend=reader.name,
            properties=MappingProxyType(dict(reader.properties)),
            channels=reader.channels,
            channel_names=tuple(reader.channel_names),
            modality=reader.modality,
            intensity=reader.intensity,
        )

    # -- context management -------------------------------------------------------------------------------
    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._reader.close()

    def __repr__(self) -> str:
        m = self.meta
        return f"Slide({self.path.name!r}, {m.dimensions[0]}x{m.dimensions[1]}, mpp={m.mpp}, backend={m.backend})"

    # -- reading --------------------------------------------------------------------------------------------
    @property
    def mpp(self) -> float:
        """Level-0 mpp; raises `MissingMppError` (naming --slide-mpp) when the slide has none."""
        if self.meta.mpp is None:
            raise MissingMppError(self.path, "reading at a target resolution")
        return self.meta.mpp

    def read_region(self, location: tuple[int, int], level: int, size: tuple[int, int]) -> np.ndarray:
        """Pixels of `size` (w, h) at `level`, starting at level-0 `location`; transparency composited on white."""
        if not 0 <= level < self.meta.level_count:
            raise ValueError(f"{self.path}: level {level} out of range 0..{self.meta.level_count - 1}")
        w, h = (int(v) for v in size)
        if w <= 0 or h <= 0:
            raise ValueError(f"size must be positive (w, h), got {size}")
        return _composite_on_white(self._reader.read_region(location, level, (w, h)))

    def level_for_downsample(self, downsample: float) -> int:
        """The coarsest level whose downsample is not above `downsample` (level 0 when every level is).

        Reading there and shrinking by the remaining factor never upsamples. A level at most 0.1 % coarser
        counts (rounding in vendor metadata).
        """
        best = 0
        for level, d in enumerate(self.meta.level_downsamples):
            if d <= downsample * (1 + _TOLERANCE) and d > self.meta.level_downsamples[best]:
                best = level
        return best

    def best_level_for_mpp(self, mpp: float) -> int:
        """The finest level whose mpp is not coarser than `mpp` (level 0 when all are coarser)."""
        return self.level_for_downsample(mpp / self.mpp)

    def read(self, location: tuple[int, int], size: tuple[int, int], mpp: float = 0.5) -> np.ndarray:
        """The level-0 box at `location` of `size` (w, h) level-0 pixels, resampled to `mpp`.

        Reads from the finest level not coarser than `mpp`, then resizes by the remaining factor. The output
        is (round(h * s), round(w * s), 3) with s = slide mpp / target mpp.
        """
        scale = self.mpp / mpp
        out_size = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        level = self.best_level_for_mpp(mpp)
        downsample = self.meta.level_downsamples[level]
        read_size = (
            max(1, math.ceil(size[0] / downsample - 1e-9)),
            max(1, math.ceil(size[1] / downsample - 1e-9)),
        )
        region = self.read_region(location, level, read_size)
        return resize_rgb(region, out_size)

    def thumbnail(self, max_size: int = 1024) -> np.ndarray:
        """The whole slide with its longer side at most `max_size` pixels, read from the coarsest useful level."""
        w0, h0 = self.meta.dimensions
        level = self.level_for_downsample(max(w0, h0) / max_size)
        lw, lh = self.meta.level_dimensions[level]
        image = self.read_region((0, 0), level, (lw, lh))
        scale = min(1.0, max_size / max(w0, h0))
        return resize_rgb(image, (max(1, round(w0 * scale)), max(1, round(h0 * scale))))


@renamed_keywords(mpp="slide_mpp")
def open_slide(path: str | Path, backend: str | None = None, slide_mpp: float | None = None) -> Slide:
    """Open a slide with `backend` ("openslide", "tiffslide"), or in auto mode try each in registry order.

    `slide_mpp` overrides the file's level-0 resolution (for slides without one). The old keyword `mpp=` is
    accepted with a DeprecationWarning. Before any backend opens it the file is checked (`wsi.files`: missing,
    dangling link, directory, FIFO or device, permission) and, for TIFF files, refused as `UnreadableSlideError`
    when it looks truncated.
    """
    path = Path(path)
    check_slide_file(path)
    layout = probe_tiff(path)
    if layout is not None and layout.truncated:
        raise UnreadableSlideError(path, f"looks truncated (cut short, e.g. by an interrupted copy; copy it again): "
                                         f"{layout.truncated}")  # fmt: skip
    for message in layout.complaints if layout is not None else ():
        warnings.warn(f"{path}: tifffile: {message}", SlideWarning, stacklevel=2)
    names = [backend] if backend else backend_order()
    problems = []
    for name in names:
        opener = get_backend(name)
        try:
            return Slide(opener(path), path, slide_mpp=slide_mpp)
        except UnsupportedSlideError as exc:
            problems.append(str(exc).removeprefix(f"{path}: "))
    raise UnsupportedSlideError(path, "not a supported slide: " + "; ".join(problems))

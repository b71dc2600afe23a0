"""tiffslide backend: pure-Python TIFF/SVS reading through tifffile; tried after openslide in auto mode."""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import numpy as np
import tifffile

from wsi.backends._registry import register_backend
from wsi.errors import UnreadableSlideError, UnsupportedSlideError

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tiffslide


def _check_codecs(slide: tiffslide.TiffSlide, path: Path) -> None:
    """tiffslide opens files whose tiles no codec can decode; call those unsupported up front."""
    for series in slide.ts_tifffile.series[:1]:
        for level in series.levels:
            compression = level.keyframe.compression
            if not isinstance(compression, tifffile.COMPRESSION):
                raise UnsupportedSlideError(path, f"unsupported TIFF compression {int(compression)}")


def level_location(location: tuple[int, int], downsample: float) -> tuple[int, int]:
    """Where tiffslide's read_region starts at a level for a level-0 `location`: int(x / downsample).

    tiffslide keeps this mapping in a private method; it is restated here (tests check that both agree) so that
    the backend uses only tiffslide's public API.
    """
    return int(int(location[0]) / downsample), int(int(location[1]) / downsample)


class TiffSlideReader:
    name = "tiffslide"

    def __init__(self, path: Path):
        self.path = path
        try:
            self._slide = tiffslide.TiffSlide(str(path))
        except Exception as exc:  # tifffile raises several unrelated types for non-TIFF input
            raise UnsupportedSlideError(path, f"tiffslide cannot open it ({exc})") from exc
        _check_codecs(self._slide, path)
        props = self._slide.properties
        self.properties = {k: str(v) for k, v in props.items()}
        self.dimensions = tuple(self._slide.dimensions)
        self.level_dimensions = tuple(tuple(d) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.vendor = props.get("tiffslide.vendor")
        mpp_x, mpp_y = props.get("tiffslide.mpp-x"), props.get("tiffslide.mpp-y")
        self.raw_mpp = (mpp_x + mpp_y) / 2 if mpp_x and mpp_y else (mpp_x or mpp_y)
        power = props.get("tiffslide.objective-power")
        self.objective_power = float(power) if power else None

    def read_region(self, location, level, size) -> np.ndarray:
        """Like openslide, pixels outside the level read as white (tiffslide itself pads with black)."""
        w, h = (int(v) for v in size)
        x0, y0 = level_location(location, self.level_downsamples[level])
        lw, lh = self.level_dimensions[level]
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(lw, x0 + w), min(lh, y0 + h)
        try:
            if (cx0, cy0, cx1, cy1) == (x0, y0, x0 + w, y0 + h):
                return np.asarray(
                    self._slide.read_region(location, level, (w, h), as_array=True, padding=False)
                )
            out = np.full((h, w, 3), 255, dtype=np.uint8)
            if cx1 > cx0 and cy1 > cy0:
                ds = self.level_downsamples[level]
                # The level-0 point that tiffslide maps back to (cx0, cy0) with int(x / ds).
                start = (math.ceil(cx0 * ds - 1e-9), math.ceil(cy0 * ds - 1e-9))
                inner = self._slide.read_region(
                    start, level, (cx1 - cx0, cy1 - cy0), as_array=True, padding=False
                )
                out[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0] = inner[..., :3]
            return out
        except Exception as exc:  # codec errors come from imagecodecs with many types
            raise UnreadableSlideError(
                self.path, f"reading region {tuple(location)} level {level} size {tuple(size)} failed: {exc}"
            ) from exc

    def close(self) -> None:
        self._slide.close()


@register_backend("tiffslide", priority=10)
def open_tiffslide(path: Path) -> TiffSlideReader:
    return TiffSlideReader(path)

"""tiffslide backend: pure-Python TIFF/SVS reading through tifffile; tried after openslide in auto mode."""

from __future__ import annotations

import math
import os
import threading
import warnings
from pathlib import Path

import numpy as np
import tifffile

from wsi.backends._registry import register_backend
from wsi.errors import SlideWarning, UnreadableSlideError, UnsupportedSlideError
from wsi.samples import IntensityWindow, sample_level, to_display
from wsi.tiff_probe import probe_tiff
from wsi.tifflog import tifffile_messages

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    import tiffslide


_WINDOWS: dict[tuple, IntensityWindow] = {}  # per file (path, size, mtime, inode), oldest dropped first
_WINDOWS_LOCK = threading.Lock()


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
    """Reads any sample layout tifffile knows; grey, 16-bit and multichannel pixels come back as RGB uint8 through
    `wsi.samples.to_display` (the intensity mapping is documented there)."""

    name = "tiffslide"

    def __init__(self, path: Path):
        self.path = path
        layout = probe_tiff(path)  # a truncated file was refused before (wsi.open_slide)
        self._said: set[str] = set(layout.complaints) if layout else set()  # open_slide warned of those
        with tifffile_messages() as complaints:
            try:
                self._slide = tiffslide.TiffSlide(str(path))
            except Exception as exc:  # tifffile raises several unrelated types for non-TIFF input
                raise UnsupportedSlideError(path, f"tiffslide cannot open it ({exc})") from exc
        self._warn(complaints)
        _check_codecs(self._slide, path)
        self.channels = layout.channels if layout else 3
        self.channel_names = layout.channel_names if layout else ()
        self.modality = layout.modality if layout else "brightfield"
        self._layout = layout if layout is not None and not (layout.rgb8 and layout.channels == 3) else None
        self._window = None
        self.intensity = None
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
        if self._layout is not None and self._layout.dtype != "uint8":
            st = os.stat(path)
            key = (str(path), st.st_size, st.st_mtime_ns, st.st_ino)
            with _WINDOWS_LOCK:  # every tiling thread opens the slide: measure once per file
                window = _WINDOWS.get(key)
            if window is None:
                try:
                    window = self._intensity_window()
                except Exception as exc:  # codec errors come from imagecodecs with many types
                    raise UnreadableSlideError(path, f"reading the coarsest level to set the intensity window "
                                                     f"failed: {exc}") from exc  # fmt: skip
                with _WINDOWS_LOCK:  # slides opened in threads at once: no eviction under another's lookup
                    if key not in _WINDOWS and len(_WINDOWS) >= 64:
                        _WINDOWS.pop(next(iter(_WINDOWS)))
                    _WINDOWS[key] = window
            self._window = window
            self.intensity = f"{self._layout.dtype}: {self._window.describe()}"

    def _warn(self, complaints: list[str]) -> None:
        """tifffile's complaints as SlideWarnings, once per slide and message."""
        for message in complaints:
            if message not in self._said:
                self._said.add(message)
                warnings.warn(f"{self.path}: tifffile: {message}", SlideWarning, stacklevel=3)

    def _raw(self, location, level: int, size: tuple[int, int]) -> np.ndarray:
        with tifffile_messages() as complaints:
            raw = np.asarray(self._slide.read_region(location, level, size, as_array=True, padding=False))
        if complaints:
            self._warn(complaints)
        return raw

    def _pixels(self, location, level: int, size: tuple[int, int]) -> np.ndarray:
        raw = self._raw(location, level, size)
        if self._layout is None:
            return raw
        lay = self._layout
        return to_display(raw, window=self._window, planar_channels=lay.planar_channels, has_alpha=lay.has_alpha,
                          min_is_white=lay.min_is_white)  # fmt: skip

    def _intensity_window(self) -> IntensityWindow:
        """The window of the coarsest level (the same for every tile of the slide)."""
        level = len(self.level_dimensions) - 1
        ds = self.level_downsamples[level]

        def read(xy, size):
            raw = self._raw((math.ceil(xy[0] * ds - 1e-9), math.ceil(xy[1] * ds - 1e-9)), level, size)
            raw = raw[..., None] if raw.ndim == 2 else raw
            return raw[..., :-1] if self._layout.has_alpha and not self._layout.planar_channels else raw

        return IntensityWindow.from_sample(sample_level(read, self.level_dimensions[level]))

    def read_region(self, location, level, size) -> np.ndarray:
        """Like openslide, pixels outside the level read as white (tiffslide itself pads with black)."""
        w, h = (int(v) for v in size)
        x0, y0 = level_location(location, self.level_downsamples[level])
        lw, lh = self.level_dimensions[level]
        cx0, cy0, cx1, cy1 = max(0, x0), max(0, y0), min(lw, x0 + w), min(lh, y0 + h)
        try:
            if (cx0, cy0, cx1, cy1) == (x0, y0, x0 + w, y0 + h):
                return self._pixels(location, level, (w, h))
            out = np.full((h, w, 3), 255, dtype=np.uint8)
            if cx1 > cx0 and cy1 > cy0:
                ds = self.level_downsamples[level]
                # The level-0 point that tiffslide maps back to (cx0, cy0) with int(x / ds).
                start = (math.ceil(cx0 * ds - 1e-9), math.ceil(cy0 * ds - 1e-9))
                inner = self._pixels(start, level, (cx1 - cx0, cy1 - cy0))
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

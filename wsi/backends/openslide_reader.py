"""OpenSlide backend: vendor formats (SVS, NDPI, MRXS, SCN, DICOM, ...). Tried first in auto mode."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide

from wsi.backends._registry import register_backend
from wsi.errors import UnreadableSlideError, UnsupportedSlideError
from wsi.tiff_probe import probe_tiff


def _float_or_none(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


class OpenSlideReader:
    name = "openslide"

    def __init__(self, path: Path):
        self.path = path
        layout = probe_tiff(path)
        if layout is not None and not layout.rgb8:
            # openslide would keep the high byte of 16-bit samples, or only the first channel page.
            what = (f"{layout.channels} channel planes" if layout.planar_channels
                    else f"{layout.dtype} samples")  # fmt: skip
            raise UnsupportedSlideError(
                path, f"openslide reads only 8-bit RGB or grey pixels, this TIFF has {what}"
            )
        self.channels = layout.channels if layout else 3
        self.channel_names: tuple[str, ...] = ()
        self.modality = "brightfield"
        self.intensity = None
        try:
            self._slide = openslide.OpenSlide(str(path))
        except (openslide.OpenSlideError, openslide.OpenSlideUnsupportedFormatError) as exc:
            raise UnsupportedSlideError(path, f"openslide cannot open it ({exc})") from exc
        props = self._slide.properties
        self.properties = dict(props)
        self.dimensions = tuple(self._slide.dimensions)
        self.level_dimensions = tuple(tuple(d) for d in self._slide.level_dimensions)
        self.level_downsamples = tuple(float(d) for d in self._slide.level_downsamples)
        self.vendor = props.get(openslide.PROPERTY_NAME_VENDOR)
        mpp_x = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_X))
        mpp_y = _float_or_none(props.get(openslide.PROPERTY_NAME_MPP_Y))
        self.raw_mpp = (mpp_x + mpp_y) / 2 if mpp_x and mpp_y else (mpp_x or mpp_y)
        self.objective_power = _float_or_none(props.get(openslide.PROPERTY_NAME_OBJECTIVE_POWER))

    def read_region(self, location, level, size) -> np.ndarray:
        try:
            image = self._slide.read_region(
                tuple(int(v) for v in location), level, tuple(int(v) for v in size)
            )
        except openslide.OpenSlideError as exc:
            raise UnreadableSlideError(
                self.path, f"reading region {tuple(location)} level {level} size {tuple(size)} failed: {exc}"
            ) from exc
        return np.asarray(image)

    def close(self) -> None:
        self._slide.close()


@register_backend("openslide", priority=0)
def open_openslide(path: Path) -> OpenSlideReader:
    return OpenSlideReader(path)

"""Slides: open any whole-slide image through openslide or tiffslide and read it at a known resolution.

Locations are level-0 (x, y) pixels, sizes (w, h), images (H, W, 3) uint8 RGB.
"""

from wsi import deprecation, qupath, synthetic
from wsi.errors import (
    MissingMppError,
    SlideError,
    SlideNotFoundError,
    UnreadableSlideError,
    UnsupportedSlideError,
)
from wsi.meta import SlideMeta, magnification_to_mpp, plausible_mpp
from wsi.slide import Slide, open_slide, resize_rgb

SLIDE_EXTENSIONS = (
    ".svs",
    ".tif",
    ".tiff",
    ".ndpi",
    ".mrxs",
    ".scn",
    ".vms",
    ".vmu",
    ".svslide",
    ".bif",
    ".dcm",
)

__all__ = [
    "SLIDE_EXTENSIONS",
    "MissingMppError",
    "Slide",
    "SlideError",
    "SlideMeta",
    "SlideNotFoundError",
    "UnreadableSlideError",
    "UnsupportedSlideError",
    "deprecation",
    "magnification_to_mpp",
    "open_slide",
    "plausible_mpp",
    "qupath",
    "resize_rgb",
    "synthetic",
]

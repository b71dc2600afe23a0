"""Slides: open any whole-slide image through openslide or tiffslide and read it at a known resolution.

Locations are level-0 (x, y) pixels, sizes (w, h), images (H, W, 3) uint8 RGB.
"""

from wsi import deprecation, qupath, synthetic
from wsi.errors import (
    MissingMppError,
    ModalityError,
    SlideError,
    SlideNotFoundError,
    SlideWarning,
    UnreadableSlideError,
    UnsupportedSlideError,
)
from wsi.files import check_slide_file, file_kind
from wsi.meta import SlideMeta, magnification_to_mpp, plausible_mpp, require_brightfield
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
    ".qptiff",
)

__all__ = [
    "SLIDE_EXTENSIONS",
    "MissingMppError",
    "ModalityError",
    "Slide",
    "SlideError",
    "SlideMeta",
    "SlideNotFoundError",
    "SlideWarning",
    "UnreadableSlideError",
    "UnsupportedSlideError",
    "check_slide_file",
    "deprecation",
    "file_kind",
    "magnification_to_mpp",
    "open_slide",
    "plausible_mpp",
    "qupath",
    "require_brightfield",
    "resize_rgb",
    "synthetic",
]

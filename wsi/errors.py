"""Slide errors. Every message names the file, so a failed batch says which slide and why."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MissingMppError",
    "SlideError",
    "SlideNotFoundError",
    "UnreadableSlideError",
    "UnsupportedSlideError",
]


class SlideError(Exception):
    """Base class of every problem with a slide file; `path` names the file."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class UnsupportedSlideError(SlideError):
    """No backend can open the file (not a slide, or an unsupported encoding)."""


class UnreadableSlideError(SlideError):
    """The slide opened but pixel data could not be read (corrupt tiles); the message names the region."""


class MissingMppError(SlideError):
    """The slide has no usable resolution and a physical resolution was asked for."""

    def __init__(self, path: str | Path, what: str = "this operation"):
        super().__init__(
            path,
            f"no usable microns-per-pixel (mpp) in the slide metadata, needed for {what}; pass the slide's "
            "own resolution with --slide-mpp (slidestream info / tile / run) or slide_mpp=... in Python "
            "(open_slide, tile_slide)",
        )

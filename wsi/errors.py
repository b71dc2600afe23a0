"""Slide errors. Every message names the file, so a failed batch says which slide and why."""

from __future__ import annotations

from pathlib import Path

__all__ = [
    "MissingMppError",
    "ModalityError",
    "SlideError",
    "SlideNotFoundError",
    "UnreadableSlideError",
    "SlideWarning",
    "UnsupportedSlideError",
]


class SlideError(Exception):
    """Base class of every problem with a slide file; `path` names the file."""

    def __init__(self, path: str | Path, message: str):
        self.path = str(path)
        super().__init__(f"{self.path}: {message}")


class SlideNotFoundError(SlideError, FileNotFoundError):
    """The path does not exist, is a dangling symbolic link, or is a directory."""


class UnsupportedSlideError(SlideError):
    """No backend can open the file: not a slide, an unsupported encoding, or not a regular file (a FIFO, a
    socket, a device: refused without being opened, since reading a FIFO can block for ever)."""


class UnreadableSlideError(SlideError):
    """The file is there but its pixels cannot be read: permission denied, a truncated file (an interrupted
    copy), or corrupt tiles (the message then names the region)."""


class ModalityError(SlideError):
    """An operation made for brightfield (RGB, H&E) slides was asked of another modality (fluorescence)."""


class SlideWarning(UserWarning):
    """Something odd in a slide file that does not stop reading it (e.g. what tifffile complained about);
    the batch pipeline records these in the slide's manifest warnings."""


class MissingMppError(SlideError):
    """The slide has no usable resolution and a physical resolution was asked for."""

    def __init__(self, path: str | Path, what: str = "this operation"):
        super().__init__(
            path,
            f"no usable microns-per-pixel (mpp) in the slide metadata, needed for {what}; pass the slide's "
            "own resolution with --slide-mpp (slidestream info / tile / run) or slide_mpp=... in Python "
            "(open_slide, tile_slide)",
        )

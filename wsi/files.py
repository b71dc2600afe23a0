"""What kind of file a path is, and the checks made before any reader touches it.

A FIFO named like a slide would block the first read for ever, a dangling link or a permission problem would come
back from a backend as "not a supported slide": these are told apart here, from `stat` alone (nothing is opened
except a regular file, to test that it can be read).
"""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from wsi.errors import SlideNotFoundError, UnreadableSlideError, UnsupportedSlideError

__all__ = ["check_slide_file", "file_kind"]

_KINDS = (
    (stat.S_ISREG, "file"),
    (stat.S_ISDIR, "directory"),
    (stat.S_ISFIFO, "named pipe (FIFO)"),
    (stat.S_ISSOCK, "socket"),
    (stat.S_ISCHR, "character device"),
    (stat.S_ISBLK, "block device"),
)


def file_kind(path: str | Path) -> str:
    """What `path` is (symbolic links followed): "file", "directory", "named pipe (FIFO)", "socket",
    "character device", "block device", "missing", "dangling symbolic link" or "symbolic link loop"."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "dangling symbolic link" if os.path.islink(path) else "missing"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "symbolic link loop"
        raise
    return next((kind for test, kind in _KINDS if test(mode)), "special file")


def check_slide_file(path: str | Path) -> None:
    """Raise the `SlideError` that says why `path` cannot be a slide file, before any backend opens it.

    Missing files, dangling links and directories raise `SlideNotFoundError`; FIFOs, sockets and devices
    `UnsupportedSlideError` (never opened); a file that cannot be read `UnreadableSlideError` (permission denied).
    """
    kind = file_kind(path)
    if kind == "missing":
        raise SlideNotFoundError(path, "no such file")
    if kind == "dangling symbolic link":
        raise SlideNotFoundError(
            path, f"dangling symbolic link to {os.readlink(path)} (the target does not exist)"
        )
    if kind == "symbolic link loop":
        raise SlideNotFoundError(path, "symbolic link loop (the link never reaches a file)")
    if kind == "directory":
        raise SlideNotFoundError(path, "is a directory, not a slide file")
    if kind != "file":
        raise UnsupportedSlideError(
            path, f"is a {kind}, not a regular file; refused without opening it (reading it could block)"
        )
    try:
        with open(path, "rb"):
            pass
    except PermissionError as exc:
        raise UnreadableSlideError(
            path, "permission denied: this user cannot read the file (check its permissions)"
        ) from exc

"""tifffile's complaints (logged as `<tifffile.TiffPages @123> invalid page offset 456`) collected per thread.

Without this they reach the console raw, several times per slide, through logging's last-resort handler. Inside
`tifffile_messages()` what tifffile logs from the same thread is collected instead (once each, without the
object address) and kept off the console; the caller turns it into an error or a `SlideWarning`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["tifffile_messages"]

_local = threading.local()
_install_lock = threading.Lock()
_ADDRESS = re.compile(r"<tifffile\.\w+[^<>]*? @\d+>\s*")


class _Collect(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        sink = getattr(_local, "sink", None)
        if sink is None:
            return True  # not inside tifffile_messages(): tifffile's usual behaviour
        message = _ADDRESS.sub("", record.getMessage()).strip()
        if message not in sink:
            sink.append(message)
        return False


_FILTER = _Collect()


@contextmanager
def tifffile_messages() -> Iterator[list[str]]:
    """Collect what tifffile logs in this thread meanwhile, each message once, into the yielded list."""
    logger = logging.getLogger("tifffile")
    if _FILTER not in logger.filters:
        with _install_lock:  # installed on first use, never at import
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
    outer = getattr(_local, "sink", None)
    sink: list[str] = []
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer
        if outer is not None:
            outer.extend(m for m in sink if m not in outer)

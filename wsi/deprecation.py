"""Renamed keywords: the old name keeps working for one deprecation period, with a DeprecationWarning.

Shared by the packages of this project (wsi, tiling, slidestream) so that every rename warns the same way.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable
from typing import Any

__all__ = ["renamed_keywords", "warn_renamed"]


def warn_renamed(old: str, new: str, where: str, stacklevel: int = 3) -> None:
    """Warn that `old` (a keyword, option or attribute of `where`) is now called `new`."""
    warnings.warn(f"{where}: {old!r} is deprecated and will be removed; use {new!r}", DeprecationWarning,
                  stacklevel=stacklevel)  # fmt: skip


def renamed_keywords(**renames: str) -> Callable[[Callable], Callable]:
    """Decorator: accept each old keyword (`old="new"`) as the new one, with a DeprecationWarning.

    Passing both the old and the new name is a TypeError that names both.
    """

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, new in renames.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{fn.__qualname__}() got both {old!r} (deprecated) and {new!r}")
                    warn_renamed(old, new, f"{fn.__qualname__}()")
                    kwargs[new] = kwargs.pop(old)
            return fn(*args, **kwargs)

        return wrapper

    return decorate

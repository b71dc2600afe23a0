"""Recording warnings per thread, so that slides worked on in threads of one process keep their own warnings.

`warnings.catch_warnings` swaps process-wide state: two threads recording at once lose each other's warnings
and can leave recording switched on for good. `record_warnings()` records as `catch_warnings(record=True)` with
the "always" filter does; while `warnings_by_thread()` is active (the batch runner's thread executor holds it for
the whole run) it records only the warnings of its own thread, without touching process-wide state. A warning
from a thread that records none (a helper thread a slide started) is shown, unless the filters in place before
ignore it (DeprecationWarning and ResourceWarning by default).
"""

from __future__ import annotations

import contextlib
import threading
import warnings
from collections.abc import Iterator

__all__ = ["record_warnings", "warnings_by_thread"]

_local = threading.local()
_routing_lock = threading.Lock()
_routing = 0  # how many warnings_by_thread() blocks are open


@contextlib.contextmanager
def record_warnings() -> Iterator[list[warnings.WarningMessage]]:
    """The warnings issued inside, every one (the "always" filter), as a list of `warnings.WarningMessage`."""
    if not _routing:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            yield caught
        return
    stack = _local.__dict__.setdefault("stack", [])
    caught: list[warnings.WarningMessage] = []
    stack.append(caught)
    try:
        yield caught
    finally:
        del stack[next(i for i in range(len(stack) - 1, -1, -1) if stack[i] is caught)]  # by identity


@contextlib.contextmanager
def warnings_by_thread() -> Iterator[None]:
    """Inside, each warning goes to the innermost `record_warnings()` of the thread that issued it. Enter it in
    one thread (the one that starts the others), before they start recording; it sets the "always" filter."""
    global _routing
    with warnings.catch_warnings():
        before = list(warnings.filters)
        warnings.simplefilter("always")
        shown = warnings.showwarning

        def route(message, category, filename, lineno, file=None, line=None):
            stack = getattr(_local, "stack", None)
            if stack:
                stack[-1].append(warnings.WarningMessage(message, category, filename, lineno, file, line))
            elif not _ignored(str(message), category, before):
                shown(message, category, filename, lineno, file, line)

        warnings.showwarning = route
        with _routing_lock:
            _routing += 1
        try:
            yield
        finally:
            with _routing_lock:
                _routing -= 1


def _ignored(text: str, category: type[Warning], filters: list) -> bool:
    """Whether the first of `filters` (as `warnings.filters`) matching the message and category ignores it.
    Filters naming a module are passed over (the module is not known here): Python's defaults then still
    ignore DeprecationWarning, ResourceWarning and the like from threads that record nothing."""
    for action, message, kind, module, lineno in filters:
        if (
            module is None
            and not lineno
            and issubclass(category, kind)
            and (message is None or message.match(text))
        ):
            return action == "ignore"
    return False

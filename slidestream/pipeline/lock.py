"""A per-slide lock, so that runs sharing an output folder never work on one slide at the same time.

The lock is OUT/slides/<slide_id>/.slidestream.lock, held with flock(2) and holding the holder's host, PID and
start time (to say who holds it). The kernel drops the flock when its process dies, however it dies, so a lock
file left behind by a dead process is stale: the next run takes it over and says so.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from datetime import UTC, datetime
from pathlib import Path

__all__ = ["LOCK_NAME", "LockBusy", "SlideLock"]

LOCK_NAME = ".slidestream.lock"


class LockBusy(Exception):
    """Another live run holds the slide's lock; the message names its host, PID and start time."""


def _holder(text: str) -> str:
    try:
        info = json.loads(text)
        return f"{info['host']} PID {info['pid']}, started {info['started']}"
    except (ValueError, KeyError, TypeError):
        return "an unknown holder"


class SlideLock:
    """Context manager: take the lock of `folder`, waiting up to `wait` seconds (None: forever; 0: not at all).

    After entering, `waited` (seconds), `waited_for` (the holder waited for) and `took_over` (a stale holder)
    say what happened."""

    def __init__(self, folder: str | Path, wait: float | None = None, poll: float = 0.2):
        self.path = Path(folder) / LOCK_NAME
        self.wait, self.poll = wait, poll
        self.waited = 0.0
        self.waited_for: str | None = None
        self.took_over: str | None = None
        self._fd: int | None = None

    def __enter__(self) -> SlideLock:
        start = time.monotonic()
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(os.pread(fd, 4096, 0).decode(errors="replace"))
                os.close(fd)
                self.waited_for = holder
                if self.wait is not None and time.monotonic() - start >= self.wait:
                    raise LockBusy(
                        f"{self.path.parent.name}: in progress in another run ({holder})"
                    ) from None
                time.sleep(self.poll)
                continue
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if not same:  # the holder released (and removed) it between our open and our flock: try again
                os.close(fd)
                continue
            break
        self._fd = fd
        self.waited = time.monotonic() - start if self.waited_for else 0.0
        left = os.pread(fd, 4096, 0).decode(errors="replace")
        if left.strip():  # written by a holder that died without releasing it
            self.took_over = _holder(left)
        info = {"host": socket.gethostname(), "pid": os.getpid(),
                "started": datetime.now(UTC).isoformat(timespec="seconds")}  # fmt: skip
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(info).encode(), 0)
        except OSError:  # a full disk: the flock is what locks, the holder's details are a courtesy
            pass
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is None:
            return
        try:
            self.path.unlink(missing_ok=True)  # ours, and still locked: nobody else can be holding it
        finally:
            os.close(self._fd)
            self._fd = None

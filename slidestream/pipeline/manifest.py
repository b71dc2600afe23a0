"""The run manifest (OUT/manifest.jsonl, one line per slide and step) and the summary (OUT/summary.csv).

The manifest is only ever appended to, one record at a time, each fsynced before the next (a record cut short
by a full disk is removed again), so the records of finished slides survive any later fault. The summary is
rewritten whole: to a temporary file, fsynced, then renamed into place.
"""

from __future__ import annotations

import csv
import errno
import json
import os
import platform
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "DiskFull",
    "ManifestWriter",
    "StepRecord",
    "disk_full",
    "read_manifest",
    "slide_warnings",
    "versions",
    "write_summary",
]


class DiskFull(OSError):
    """No space left where a run writes: "disk full at PATH (N bytes free)"."""

    def __str__(self) -> str:
        return str(self.strerror)


def disk_full(exc: BaseException, where: str | Path) -> DiskFull | None:
    """`exc` as a DiskFull naming the path and the free space, when it is ENOSPC (or EDQUOT); else None."""
    if isinstance(exc, DiskFull):
        return exc
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        return None
    path = Path(exc.filename or where)
    probe = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    free = shutil.disk_usage(probe).free
    return DiskFull(exc.errno, f"disk full at {path} ({free} bytes free)", str(path))


class ManifestWriter:
    """Appends records to OUT/manifest.jsonl: one write per line, fsynced; a torn line is truncated away."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def append(self, line: str) -> None:
        data = (line.rstrip("\n") + "\n").encode()
        before = os.fstat(self._fd).st_size
        try:
            written = os.write(self._fd, data)
            if written != len(data):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self.path))
            os.fsync(self._fd)
        except OSError as exc:
            if os.fstat(self._fd).st_size > before:
                os.ftruncate(
                    self._fd, before
                )  # our own torn line: the next record must start on a line of its own
            raise disk_full(exc, self.path) or exc from exc

    def close(self) -> None:
        os.close(self._fd)

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def versions() -> dict[str, str]:
    """Versions that decide results, recorded with every step."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"python": platform.python_version()}
    for name in ("slidestream", "openslide-python", "tiffslide", "zarr", "torch", "timm", "dask"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


@dataclass(frozen=True)
class StepRecord:
    """One manifest line."""

    slide_id: str
    path: str
    step: str
    status: str  # done / skipped / failed / not-run; "ignored" for an input file that is not a slide
    seconds: float = 0.0
    error: str | None = None
    measurements: dict[str, Any] = field(default_factory=dict)
    warnings: tuple[str, ...] = ()
    finished: str = ""
    worker: str = ""

    def line(self, versions: dict[str, str]) -> str:
        return json.dumps({**asdict(self), "versions": versions}, default=str)


def read_manifest(path: str | Path) -> list[dict]:
    """All manifest lines (a torn last line from an interrupted run is ignored)."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


# `mpp` is the slide's own resolution; `tile_mpp` and `tile_size` are the tiles'. `warnings` are the slide's
# quality-control warnings ("; " between them), `error` the failed step and why.
SUMMARY_COLUMNS = ["slide_id", "path", "status", "mpp", "width", "height", "vendor", "tile_mpp", "tile_size", "tiles",
                   "tissue_mm2", "codec", "qc_dropped",
                   "encoder", "feature_dim", "weights", "seconds", "warnings",
                   "error"]  # fmt: skip

# Warnings about the run rather than the slide (another run held its lock): on the console, not in the summary.
RUN_NOTES = ("waited ", "took over a stale lock")


def slide_warnings(warnings) -> list[str]:
    """The quality-control warnings among a record's `warnings` (without notes about the run itself)."""
    return [w for w in warnings if not w.startswith(RUN_NOTES)]


def write_summary(path: str | Path, records: list[dict], slide_ids: set[str] | None = None) -> Path:
    """summary.csv from the latest record of each slide and step: one row per slide (of `slide_ids` if given:
    the slides of this run, not every slide the manifest ever saw). Measurements of plug-in steps (e.g. the
    predict step's predictions) follow the fixed columns, in the order first seen. `seconds` is the time the
    slide's steps took when they did their work: a step skipped as finished counts the seconds of its latest
    earlier "done" record (0 where there is none: a store made outside the run)."""
    latest: dict[tuple[str, str], dict] = {}
    done_seconds: dict[tuple[str, str], float] = {}  # the latest "done" record's seconds, per slide and step
    for record in records:  # later runs supersede earlier lines of the same slide and step
        if not record["slide_id"]:
            continue  # an input file that is not a slide (step "input")
        if slide_ids is None or record["slide_id"] in slide_ids:
            key = (record["slide_id"], record["step"])
            if record["status"] == "skipped":
                record = {**record, "seconds": done_seconds.get(key, 0.0)}
            elif record["status"] == "done":
                done_seconds[key] = float(record.get("seconds", 0.0))
            latest[key] = record
    rows: dict[str, dict] = {}
    extra: dict[str, None] = {}  # ordered set of plug-in steps' measurement names
    for record in latest.values():
        row = rows.setdefault(record["slide_id"], {"slide_id": record["slide_id"], "path": record["path"],
                                                   "status": "done", "seconds": 0.0, "error": "",
                                                   "warnings": []})  # fmt: skip
        measurements = record.get("measurements", {})
        row.update({k: v for k, v in measurements.items() if k in SUMMARY_COLUMNS})
        if record["step"] not in ("tile", "features"):
            extra.update(
                dict.fromkeys(
                    k for k in measurements if k not in SUMMARY_COLUMNS and k != "worker_peak_rss_mb"
                )
            )
            row.update({k: v for k, v in measurements.items() if k in extra})
        row["seconds"] = round(float(row["seconds"]) + float(record.get("seconds", 0.0)), 2)
        row["warnings"] += [w for w in slide_warnings(record.get("warnings", ())) if w not in row["warnings"]]
        if record["status"] == "failed":
            row["status"] = "failed"
            row["error"] = f"{record['step']}: {record['error']}"
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # one per process: concurrent runs never share it
    try:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS + list(extra), extrasaction="ignore")
            writer.writeheader()
            for slide_id in sorted(rows):
                writer.writerow({**rows[slide_id], "warnings": "; ".join(rows[slide_id]["warnings"])})
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)  # ours; the previous summary is untouched
        raise disk_full(exc, path) or exc from exc
    return path

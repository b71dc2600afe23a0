"""The run manifest (OUT/manifest.jsonl, one line per slide and step) and the summary (OUT/summary.csv)."""

from __future__ import annotations

import csv
import json
import platform
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["StepRecord", "read_manifest", "versions", "write_summary"]


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
    status: str  # done / skipped / failed / not-run
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


SUMMARY_COLUMNS = ["slide_id", "path", "status", "mpp", "width", "height", "vendor", "tiles", "tissue_mm2", "codec",
                   "encoder", "feature_dim", "weights", "seconds", "error"]  # fmt: skip


def write_summary(path: str | Path, records: list[dict]) -> Path:
    """summary.csv from the latest record of each slide and step: one row per slide."""
    latest: dict[tuple[str, str], dict] = {}
    for record in records:  # later runs supersede earlier lines of the same slide and step
        latest[(record["slide_id"], record["step"])] = record
    rows: dict[str, dict] = {}
    for record in latest.values():
        row = rows.setdefault(record["slide_id"], {"slide_id": record["slide_id"], "path": record["path"],
                                                   "status": "done", "seconds": 0.0, "error": ""})  # fmt: skip
        row.update({k: v for k, v in record.get("measurements", {}).items() if k in SUMMARY_COLUMNS})
        row["seconds"] = round(float(row["seconds"]) + float(record.get("seconds", 0.0)), 2)
        if record["status"] in ("failed", "not-run") and row["status"] != "failed":
            row["status"] = record["status"] if record["status"] == "failed" else row["status"]
        if record["status"] == "failed":
            row["status"] = "failed"
            row["error"] = f"{record['step']}: {record['error']}"
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=SUMMARY_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        for slide_id in sorted(rows):
            writer.writerow(rows[slide_id])
    tmp.replace(path)
    return path

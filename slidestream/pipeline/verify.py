"""`verify_results`: check every patch store of a results folder against what it recorded when it finished."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from slidestream.pipeline.manifest import read_manifest

__all__ = ["StoreCheck", "verify_results"]


@dataclass(frozen=True)
class StoreCheck:
    """One slide's store: its problems (none when intact)."""

    slide_id: str
    path: Path
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_results(out: str | Path, deep: bool = False) -> list[StoreCheck]:
    """Check OUT/slides/*/patches.zarr: a listing of every recorded chunk (fast), and with `deep` the checksum of
    every chunk's bytes. Slides the manifest records as tiled whose store is gone are reported too.

    Raises ValueError when `out` holds neither stores nor a manifest."""
    from tiling import PatchStore, StoreError

    out = Path(out)
    paths = sorted(out.glob("slides/*/patches.zarr"))
    tiled = {
        r["slide_id"]
        for r in read_manifest(out / "manifest.jsonl")
        if r["step"] == "tile" and r["status"] in ("done", "skipped")
    }
    if not paths and not tiled:
        raise ValueError(
            f"{out}: no patch stores (slides/*/patches.zarr) and no manifest; is it a results folder?"
        )
    checks = []
    for path in paths:
        try:
            problems = tuple(PatchStore.open(path).verify(deep=deep))
        except StoreError as exc:
            problems = (str(exc),)
        checks.append(StoreCheck(path.parent.name, path, problems))
    seen = {c.slide_id for c in checks}
    for slide_id in sorted(tiled - seen):
        path = out / "slides" / slide_id / "patches.zarr"
        checks.append(StoreCheck(slide_id, path, ("store missing (the manifest records it as tiled)",)))
    return checks

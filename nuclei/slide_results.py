"""Nuclei of a whole slide into a folder, resumable shard by shard, in bounded memory.

    result = nuclei.write_slide_nuclei(slide, "out/slides/S1")   # nuclei.parquet, nuclei.geojson.gz, nuclei.json

Each shard of tiles is written to `nuclei.parts/shard_NNNNN.parquet` as it finishes; an interrupted run resumes
from the shards already there (when they were made with the same segmenter, options and slide). When every
shard is done, the parts are streamed into `nuclei.parquet` and `nuclei.geojson.gz` (each written under a
temporary name and renamed), `nuclei.json` (the summary) is written last and the parts are removed. A folder
holding `nuclei.json` is therefore complete; GeoJSON and Parquet files are never left half-written under their
final names.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from shapely.geometry.base import BaseGeometry

import wsi
from nuclei.export import read_parquet, write_geojson, write_parquet
from nuclei.slide import SlideNucleiConfig, make_segmenter, plan_slide
from nuclei.stitch import near_seam, seam_duplicates
from nuclei.tile_stats import TileStats
from wsi.atomic import atomic_file

__all__ = ["PARTS", "RESULT_FORMAT", "SlideNucleiResult", "read_summary", "write_slide_nuclei"]

RESULT_FORMAT = "slidestream.nuclei-slide/1"
PARTS = "nuclei.parts"
FILES = ("nuclei.parquet", "nuclei.geojson.gz", "nuclei.json")


@dataclass(frozen=True)
class SlideNucleiResult:
    """What `write_slide_nuclei` wrote: counts, the tiled region's area, per-type fractions, files and, when
    store tiles were given, per-tile features (`tile_values` (N, K) with `tile_columns`)."""

    nuclei: int
    region_mm2: float
    tiles: int
    fractions: dict[str, float]
    files: dict[str, Path]
    shards_resumed: int = 0
    tile_columns: list[str] = field(default_factory=list)
    tile_values: np.ndarray | None = None

    @property
    def density_mm2(self) -> float:
        return self.nuclei / self.region_mm2 if self.region_mm2 > 0 else 0.0


def read_summary(folder: str | Path) -> dict | None:
    """The nuclei.json of a finished slide folder, or None when absent or not ours."""
    try:
        summary = json.loads((Path(folder) / "nuclei.json").read_text())
    except (OSError, ValueError):
        return None
    return summary if summary.get("format") == RESULT_FORMAT else None


def _prepare_parts(parts: Path, fingerprint: dict) -> set[int]:
    """Shards already done in `parts` for this fingerprint; parts of another fingerprint are removed (they
    are ours: the folder holds our plan.json), anything else there is refused."""
    plan_file = parts / "plan.json"
    if parts.exists():
        try:
            recorded = json.loads(plan_file.read_text())
        except (OSError, ValueError):
            recorded = None
        if recorded is None or recorded.get("format") != RESULT_FORMAT:
            raise FileExistsError(f"{parts} exists and was not written by slidestream; it is left as it is "
                                  "(move it away to run nuclei on this slide)")  # fmt: skip
        if recorded == fingerprint:
            return {int(p.stem.split("_")[1]) for p in parts.glob("shard_*.parquet")}
        shutil.rmtree(parts)
    parts.mkdir(parents=True)
    with atomic_file(plan_file) as tmp:
        tmp.chmod(0o644)
        tmp.write_text(json.dumps(fingerprint, indent=1))
    return set()


def write_slide_nuclei(slide: wsi.Slide, folder: str | Path, model=None, roi: BaseGeometry | None = None,
                       tissue: bool | BaseGeometry = True, mpp: float | None = None, device: str = "auto",
                       config: SlideNucleiConfig | None = None, object_type: str = "cell",
                       store_tiles: tuple[np.ndarray, float, float] | None = None,
                       on_tiles: Callable[[int], None] | None = None, tta: bool = False) -> SlideNucleiResult:  # fmt: skip
    """Segment every nucleus of `slide` into `folder` (see the module docstring); resumes an interrupted run.

    `model`, `roi`, `tissue`, `mpp`, `device` and `tta` are as for `segment_slide`; `object_type` "cell" or
    "detection" for the GeoJSON. `store_tiles` = (coords, stride0, extent) of a patch store's tiles (level-0)
    asks for per-tile features (`nuclei.TileStats`). A slide with no tissue gives empty, complete files.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = config or SlideNucleiConfig()
    segmenter = make_segmenter(model, device=device, mpp=mpp, tta=tta)
    plan = plan_slide(slide, mpp if mpp is not None else segmenter.mpp, config, roi=roi, tissue=tissue)
    fingerprint = {"format": RESULT_FORMAT, "segmenter": segmenter.describe(), "mpp": plan.mpp,
                   "slide": {"path": str(slide.path), "dimensions": list(slide.meta.dimensions),
                             "slide_mpp": plan.slide_mpp},
                   "config": {k: v for k, v in asdict(config).items() if k not in ("workers", "batch_size")},
                   "tiles": len(plan), "first_tiles": plan.coords[:4].tolist(), "region_mm2": plan.region_mm2}  # fmt: skip
    parts = folder / PARTS
    files = {name: folder / name for name in FILES}
    if read_summary(folder) is not None:
        files["nuclei.json"].unlink()  # ours; from here until it is written again the folder reads as partial
    elif not parts.exists() and any(files[name].exists() for name in FILES):
        raise FileExistsError(f"{folder} holds nuclei files that slidestream did not finish writing or did not "
                              "write (no nuclei.json, no nuclei.parts); they are left as they are")  # fmt: skip
    done = _prepare_parts(parts, fingerprint)
    todo = [s for s in range(plan.n_shards) if s not in done]
    if on_tiles and done:
        on_tiles(sum(len(plan.shard_range(s)) for s in done))
    from nuclei.slide import iter_slide_nuclei

    for shard, table in iter_slide_nuclei(plan, segmenter, shards=todo, on_tiles=on_tiles):
        write_parquet(parts / f"shard_{shard:05d}.parquet", [table])

    shard_files = [parts / f"shard_{s:05d}.parquet" for s in range(plan.n_shards)]
    cores = plan.cores()
    # Seams: the rows near core edges of every shard (a few percent) are compared for copies found twice.
    near = []
    for shard, path in enumerate(shard_files):
        table = read_parquet(path)
        rows = np.flatnonzero(near_seam(table, cores, plan.seam_margin0))
        near.append(table.iloc[rows].assign(shard=shard, row=rows))
    near = pd.concat(near, ignore_index=True) if near else pd.DataFrame(columns=["shard", "row"])
    dropped = near.iloc[seam_duplicates(near, cores)] if len(near) else near
    drop = {s: set(dropped["row"][dropped["shard"] == s]) for s in set(dropped["shard"])}

    def tables() -> Iterator[pd.DataFrame]:
        for shard, path in enumerate(shard_files):
            table = read_parquet(path)
            if drop.get(shard):
                table = table.drop(index=sorted(drop[shard])).reset_index(drop=True)
            yield table

    stats = TileStats(*store_tiles, plan.slide_mpp, segmenter.classes) if store_tiles is not None else None
    types: dict[str, int] = {}
    total = 0
    for table in tables():  # one pass for the counts and per-tile features, shard by shard
        total += len(table)
        for kind, n in table["type"].value_counts().items():
            if kind:
                types[kind] = types.get(kind, 0) + int(n)
        if stats is not None:
            stats.add(table)
    write_parquet(files["nuclei.parquet"], tables())
    write_geojson(files["nuclei.geojson.gz"], tables(), object_type=object_type)
    fractions = {c: (types.get(c, 0) / total if total else 0.0) for c in segmenter.classes[1:]}
    result = SlideNucleiResult(total, plan.region_mm2, len(plan), fractions, files, len(done),
                               stats.columns if stats else [], stats.values() if stats else None)  # fmt: skip
    summary = {"format": RESULT_FORMAT, "nuclei": total, "seam_copies_removed": len(dropped),
               "region_mm2": plan.region_mm2,
               "density_mm2": result.density_mm2, "tiles": len(plan), "fractions": fractions,
               "object_type": object_type, "plan": fingerprint}  # fmt: skip
    with atomic_file(files["nuclei.json"]) as tmp:
        tmp.chmod(0o644)
        tmp.write_text(json.dumps(summary, indent=1) + "\n")
    shutil.rmtree(parts)
    return result

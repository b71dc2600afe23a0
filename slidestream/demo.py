"""The demo: the bundled real slide plus generated synthetic slides -> `run` with every step that exists."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from wsi.deprecation import renamed_keywords, warn_renamed
from wsi.synthetic import SyntheticSpec, write_slide

__all__ = ["DemoConfig", "bundled_slide", "prepare_demo_slides", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    """What `slidestream demo` does: `synthetic_slides` slides of `synthetic_dimensions` (w, h) level-0 px
    beside the bundled real slide, all through `run` on a local cluster of `slide_workers` processes (default:
    up to 2) or on the cluster at `scheduler_address` (waiting `scheduler_timeout` seconds for it to answer;
    None: the run's default)."""

    out: str | Path = "slidestream-demo"
    synthetic_slides: int = 2
    synthetic_dimensions: tuple[int, int] = (8192, 6144)
    progress: bool = True
    slide_workers: int | None = None
    scheduler_address: str | None = None
    scheduler_timeout: float | None = None

    @property
    def synthetic_size(self) -> tuple[int, int]:
        """Deprecated name of `synthetic_dimensions`."""
        warn_renamed("synthetic_size", "synthetic_dimensions", "DemoConfig")
        return self.synthetic_dimensions


DemoConfig.__init__ = renamed_keywords(synthetic_size="synthetic_dimensions")(DemoConfig.__init__)


def bundled_slide() -> Path:
    """Path of the real H&E slide shipped with the package (CMU-1-Small-Region.svs, CC0)."""
    return Path(str(resources.files("slidestream") / "data" / "CMU-1-Small-Region.svs"))


def prepare_demo_slides(config: DemoConfig) -> Path:
    """OUT/input/ with the bundled slide and `synthetic_slides` synthetic ones (kept when already there)."""
    folder = Path(config.out) / "input"
    folder.mkdir(parents=True, exist_ok=True)
    real = folder / bundled_slide().name
    if not real.exists():
        shutil.copyfile(bundled_slide(), real)
    for i in range(config.synthetic_slides):
        path = folder / f"synthetic-{i}.svs"
        if not path.exists():
            spec = SyntheticSpec(*config.synthetic_dimensions, mpp=0.25, seed=i, tumor=i % 2 == 1)
            write_slide(path, spec, progress=config.progress)
    return folder


def run_demo(config: DemoConfig) -> int:
    """Prepare the demo slides, run every step on them, print the report and where to look; the exit status."""
    from slidestream.discovery import find_slides
    from slidestream.pipeline import load_config, run_batch
    from slidestream.pipeline.report import report

    folder = prepare_demo_slides(config)
    out = Path(config.out)
    slides, _ = find_slides([folder])
    run_config = load_config(out=out, slide_workers=config.slide_workers or min(2, os.cpu_count() or 1),
                             scheduler_address=config.scheduler_address,
                             scheduler_timeout=config.scheduler_timeout, progress=config.progress)  # fmt: skip
    print(f"running {', '.join(run_config.steps)} on {len(slides)} slides in {folder} ...", flush=True)
    try:
        result = run_batch(slides, run_config)
    except ValueError as exc:  # results of other options, or files of the user's, in the output folder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = report(result, len(slides))
    example = out / "slides" / slides[0].slide_id
    nuclei = folder / f"synthetic-{max(0, min(1, config.synthetic_slides - 1))}.nuclei.geojson"  # 1 has tumor
    print(f"""
Where to look:
  {out / "summary.csv"}                 one row per slide: size, mpp, tiles, tissue area, features
  {example}/thumbnail.png   the slide with its tiles (green) and tissue outline (black)
  {example}/patches.zarr    tile coordinates, patches and features (tiling.PatchStore.open)
  {folder}/synthetic-*.truth.json      ground truth of the synthetic slides (masks, nuclei)

Open in QuPath (0.4 or later):
  1. File > Open... and pick {folder / slides[0].path.name}
  2. File > Import objects from file... (or drag and drop) {example}/tissue.geojson
     The tissue outline appears as annotations classified "Tissue".
  3. For a synthetic slide, also import {nuclei}: every true nucleus as a detection.""")
    return code

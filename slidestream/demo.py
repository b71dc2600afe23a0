"""The demo: the bundled real slide plus generated synthetic slides -> `run` with every step that exists."""

from __future__ import annotations

import os
import shutil
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from wsi.synthetic import SyntheticSpec, write_slide

__all__ = ["DemoConfig", "bundled_slide", "prepare_demo_slides", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    out: str | Path = "slidestream-demo"
    synthetic_slides: int = 2
    synthetic_size: tuple[int, int] = (8192, 6144)
    progress: bool = True


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
            spec = SyntheticSpec(*config.synthetic_size, mpp=0.25, seed=i, tumor=i % 2 == 1)
            write_slide(path, spec, progress=config.progress)
    return folder


def run_demo(config: DemoConfig) -> int:
    from slidestream.commands.run import report
    from slidestream.discovery import find_slides
    from slidestream.pipeline import load_config, run_batch

    folder = prepare_demo_slides(config)
    out = Path(config.out)
    slides, _ = find_slides([folder])
    run_config = load_config(out=out, workers=min(2, os.cpu_count() or 1), progress=config.progress)
    print(f"running {', '.join(run_config.steps)} on {len(slides)} slides in {folder} ...", flush=True)
    try:
        result = run_batch(slides, run_config)
    except ValueError as exc:  # results of other options, or files of the user's, in the output folder
        print(f"error: {exc}", file=sys.stderr)
        return 2
    code = report(result, len(slides))
    example = out / "slides" / slides[0].id
    print(f"""
Where to look:
  {out / "summary.csv"}                 one row per slide: size, mpp, tiles, tissue area, features
  {example}/thumbnail.png   the slide with its tissue outline (green) and tiles (blue)
  {example}/patches.zarr    tile coordinates, patches and features (tiling.PatchStore.open)
  {folder}/synthetic-*.truth.json      ground truth of the synthetic slides (masks, nuclei)

Open in QuPath (0.4 or later):
  1. File > Open... and pick {folder / slides[0].path.name}
  2. File > Import objects from file... (or drag and drop) {example}/tissue.geojson
     The tissue outline appears as annotations classified "Tissue".
  3. For a synthetic slide, also import input/synthetic-1.nuclei.geojson: every true nucleus as a detection.""")
    return code

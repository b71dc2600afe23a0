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
from wsi.synthetic.truth import read_spec

__all__ = ["DemoConfig", "DemoFolderError", "bundled_slide", "demo_slides", "prepare_demo_slides", "run_demo"]


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


def _synthetic_spec(config: DemoConfig, i: int) -> SyntheticSpec:
    """The demo's i-th synthetic slide (odd ones hold a tumor)."""
    return SyntheticSpec(*config.synthetic_dimensions, mpp=0.25, seed=i, tumor=i % 2 == 1)


def demo_slides(config: DemoConfig) -> list[Path]:
    """The slides the demo runs on: OUT/input/ with the bundled slide, then synthetic-0.svs ... (others there,
    such as slides of an earlier demo with more --slides, are left out)."""
    folder = Path(config.out) / "input"
    return [
        folder / bundled_slide().name,
        *(folder / f"synthetic-{i}.svs" for i in range(config.synthetic_slides)),
    ]


class DemoFolderError(ValueError):
    """The demo's folder holds a slide it cannot use: one of an earlier demo with other dimensions, or a file of
    the user's under a demo slide's name."""


def _written_spec(path: Path) -> SyntheticSpec | None:
    """The spec a synthetic slide was written with (from its truth.json), or None when it has no ground truth."""
    try:
        return read_spec(path)
    except (OSError, ValueError):
        return None


def prepare_demo_slides(config: DemoConfig) -> Path:
    """OUT/input/ with the bundled slide and `synthetic_slides` synthetic ones; one already there is kept when it
    was written with the same spec. Raises DemoFolderError (a ValueError), before anything is written, for one written with another
    spec (an earlier demo with other --dimensions: the results beside it were made from it) or a file there
    without ground truth (not the demo's): both are left as they are."""
    real, *synthetic = demo_slides(config)
    for i, path in enumerate(synthetic):
        if not path.exists():
            continue
        spec, written = _synthetic_spec(config, i), _written_spec(path)
        if written is None:
            raise DemoFolderError(
                f"{path} is not a slide the demo wrote (no ground truth {path.with_suffix('.truth.json').name} "
                "beside it); it is left as it is: give the demo another folder (-o DIR)"
            )
        if written != spec:
            raise DemoFolderError(
                f"{path} was written by an earlier demo as {written.width}x{written.height} px, not the "
                f"{spec.width}x{spec.height} asked for (--dimensions), and {config.out} holds its results: give this "
                f"demo another folder (-o DIR), or run it again with --dimensions {written.width}x{written.height}"
            )
    real.parent.mkdir(parents=True, exist_ok=True)
    if not real.exists():
        shutil.copyfile(bundled_slide(), real)
    for i, path in enumerate(synthetic):
        if not path.exists():
            write_slide(path, _synthetic_spec(config, i), progress=config.progress)
    return real.parent


def run_demo(config: DemoConfig) -> int:
    """Prepare the demo slides, run every step on them, print the report and where to look; the exit status."""
    from slidestream.discovery import find_slides
    from slidestream.pipeline import load_config, run_batch
    from slidestream.pipeline.report import report

    try:
        folder = prepare_demo_slides(config)
    except DemoFolderError as exc:
        # A slide of an earlier demo with other --dimensions, or a file of the user's.
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(config.out)
    slides, _ = find_slides(demo_slides(config))
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

"""The demo: bundled real slide + generated synthetic slides -> every step that exists."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import wsi
from wsi.synthetic import SyntheticSpec, write_slide

__all__ = ["DemoConfig", "bundled_slide", "prepare_demo_slides", "run_demo"]


@dataclass(frozen=True)
class DemoConfig:
    out: str | Path = "slidestream-demo"
    synthetic_slides: int = 2
    synthetic_size: tuple[int, int] = (6144, 4608)
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
    folder = prepare_demo_slides(config)
    for path in sorted(folder.glob("*.svs")):
        with wsi.open_slide(path) as slide:
            m = slide.meta
            print(f"{path.name:28s} {m.dimensions[0]:>6} x {m.dimensions[1]:<6} {m.level_count} levels  "
                  f"mpp {m.mpp}  {m.vendor}/{m.backend}")  # fmt: skip
    print(
        f"\nslides and ground truth are in {folder}/ (synthetic-*.truth.json, *.tissue.png, *.nuclei.geojson)"
    )
    print("open a slide in QuPath, then drag synthetic-*.nuclei.geojson onto it to see the true nuclei")
    return 0

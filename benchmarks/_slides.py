"""Synthetic slides for the benchmarks, written once and cached under the benchmarks' data folder."""

from __future__ import annotations

from pathlib import Path


def cached_slide_folder(data: str | Path, name: str, n: int, dimensions: str, first_seed: int) -> Path:
    """`data/<name>-<dimensions>/slide-<i>.svs` for i < n (WxH at 0.25 um/px, tumor on even slides), each
    written only if it is not there yet."""
    from wsi.synthetic import SyntheticSpec, write_slide

    w, h = (int(v) for v in dimensions.split("x"))
    folder = Path(data) / f"{name}-{dimensions}"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        path = folder / f"slide-{i}.svs"
        if not path.exists():
            spec = SyntheticSpec(w, h, mpp=0.25, seed=first_seed + i, tumor=i % 2 == 0)
            write_slide(path, spec, progress=False)
    return folder

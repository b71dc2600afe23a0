"""Read back the ground truth written beside a synthetic slide."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsi.synthetic.content import SyntheticSpec

__all__ = ["SyntheticTruth", "load_truth"]


@dataclass(frozen=True)
class SyntheticTruth:
    """Masks are bool (H, W) at `mask_downsample`; `nuclei` is the GeoJSON path (None for large slides)."""

    spec: SyntheticSpec
    mask_downsample: int
    tissue_mask: np.ndarray
    tumor_mask: np.ndarray
    nuclei: Path | None


def load_truth(slide_path: str | Path) -> SyntheticTruth:
    """Ground truth for a slide written by `write_slide` (reads <stem>.truth.json)."""
    slide_path = Path(slide_path)
    truth_path = slide_path.with_suffix(".truth.json")
    if not truth_path.exists():
        raise FileNotFoundError(f"{slide_path}: no ground truth beside it ({truth_path.name} is missing)")
    record = json.loads(truth_path.read_text())
    folder = truth_path.parent
    return SyntheticTruth(
        spec=SyntheticSpec(**record["spec"]),
        mask_downsample=int(record["mask_downsample"]),
        tissue_mask=np.asarray(Image.open(folder / record["tissue_mask"])) > 0,
        tumor_mask=np.asarray(Image.open(folder / record["tumor_mask"])) > 0,
        nuclei=folder / record["nuclei"] if record.get("nuclei") else None,
    )

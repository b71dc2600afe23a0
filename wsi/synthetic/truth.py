"""Read back the ground truth written beside a synthetic slide."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from wsi.synthetic.content import SyntheticSpec

__all__ = ["SyntheticTruth", "load_truth", "read_spec"]


@dataclass(frozen=True)
class SyntheticTruth:
    """Masks are bool (H, W) at `mask_downsample`; `nuclei` is the GeoJSON path (None for large slides)."""

    spec: SyntheticSpec
    mask_downsample: int
    tissue_mask: np.ndarray
    tumor_mask: np.ndarray
    nuclei: Path | None


def _read_record(slide_path: str | Path) -> tuple[Path, dict, SyntheticSpec]:
    """The truth file beside `slide_path`, its record and the spec in it (errors as `read_spec`)."""
    slide_path = Path(slide_path)
    truth_path = slide_path.with_suffix(".truth.json")
    if not truth_path.exists():
        raise FileNotFoundError(f"{slide_path}: no ground truth beside it ({truth_path.name} is missing)")
    try:
        record = json.loads(truth_path.read_text())
        return truth_path, record, SyntheticSpec(**record["spec"])
    except (ValueError, KeyError, TypeError) as exc:  # not JSON, no spec, or a spec of other fields
        raise ValueError(f"{truth_path}: not the ground truth of a synthetic slide ({type(exc).__name__}: "
                         f"{exc})") from exc  # fmt: skip


def read_spec(slide_path: str | Path) -> SyntheticSpec:
    """The spec a slide written by `write_slide` was made from (its <stem>.truth.json), without reading the
    masks. FileNotFoundError when there is no truth file, ValueError when it is not one `write_slide` wrote."""
    return _read_record(slide_path)[2]


def load_truth(slide_path: str | Path) -> SyntheticTruth:
    """Ground truth for a slide written by `write_slide` (reads <stem>.truth.json; errors as `read_spec`)."""
    truth_path, record, spec = _read_record(slide_path)
    folder = truth_path.parent
    return SyntheticTruth(
        spec=spec,
        mask_downsample=int(record["mask_downsample"]),
        tissue_mask=np.asarray(Image.open(folder / record["tissue_mask"])) > 0,
        tumor_mask=np.asarray(Image.open(folder / record["tumor_mask"])) > 0,
        nuclei=folder / record["nuclei"] if record.get("nuclei") else None,
    )

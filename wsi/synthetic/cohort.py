"""Synthetic cohorts: many synthetic slides plus a labels table whose labels follow from the slides' ground truth.

Rules (`write_cohort`), all drawn from one seed:
- `cancer`: half the slides (rounded down, in random order) are rendered with tumor regions; the label is 1 when
  the slide's ground-truth tumor mask is not empty, so a label never names tumor the pixels lack.
- `grade` (cancer slides only, empty for benign): 1-5 from the ground-truth tumor fraction of the tissue, in
  equal steps between the cohort's smallest and largest cancer burden (visible as tumor extent).
- `mut_a`: 1 when a cancer slide's tumor fraction is above the cancer slides' median, flipped with probability
  0.1 (label noise). `mut_b`: drawn at random with probability 0.3 and tied to nothing in the pixels: a negative
  control (a model should reach an AUC near 0.5 on it).
- `time`, `event`: exponential survival with hazard 0.01 * exp(1.2 * cancer + 0.3 * (grade - 1) + 4 * tumor
  fraction) per month, censored uniformly on 12-120 months.
- `patient_id`: about a third of the patients have two slides (with the same cancer status), so grouped splits
  matter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from wsi.atomic import atomic_file
from wsi.synthetic.content import SyntheticSpec
from wsi.synthetic.writer import write_slide

__all__ = ["LABEL_COLUMNS", "SyntheticCohort", "cohort_labels", "write_cohort"]

LABEL_COLUMNS = ("slide_id", "patient_id", "cancer", "grade", "mut_a", "mut_b", "time", "event")


@dataclass(frozen=True)
class SyntheticCohort:
    """What `write_cohort` wrote: the slide paths (in slide-id order) and the labels table with its path."""

    slides: list
    labels: pd.DataFrame
    labels_path: Path


def _patients(n: int, rng: np.random.Generator) -> list[int]:
    """Patient index of each slide: about a third of the patients have two consecutive slides."""
    patients, patient = [], 0
    while len(patients) < n:
        patients.extend([patient] * (2 if rng.random() < 1 / 3 and len(patients) + 2 <= n else 1))
        patient += 1
    return patients


def cohort_labels(tumor_fraction: np.ndarray, patients: list[int], seed: int) -> pd.DataFrame:
    """The labels table from each slide's ground-truth tumor fraction of the tissue (rules in the module doc)."""
    fraction = np.asarray(tumor_fraction, dtype=float)
    if fraction.ndim != 1 or len(fraction) != len(patients):
        raise ValueError(
            f"tumor_fraction must have shape (n_slides,) = ({len(patients)},), got {fraction.shape}"
        )
    rng = np.random.default_rng([seed, 1])
    n = len(fraction)
    cancer = (fraction > 0).astype(int)
    grade = np.full(n, np.nan)
    mut_a = np.zeros(n, dtype=int)
    if cancer.any():
        burden = fraction[cancer == 1]
        lo, hi = burden.min(), burden.max()
        steps = np.clip(np.floor((burden - lo) / max(hi - lo, 1e-12) * 5), 0, 4) + 1
        grade[cancer == 1] = steps
        mut_a[cancer == 1] = (burden > np.median(burden)).astype(int)
    flip = rng.random(n) < 0.1
    mut_a = np.where(flip, 1 - mut_a, mut_a)
    mut_b = (rng.random(n) < 0.3).astype(int)
    hazard = 0.01 * np.exp(1.2 * cancer + 0.3 * (np.nan_to_num(grade, nan=1.0) - 1) + 4 * fraction)
    event_time = rng.exponential(1 / hazard)
    censor = rng.uniform(12, 120, n)
    return pd.DataFrame({
        "slide_id": [f"S{i:03d}" for i in range(n)],
        "patient_id": [f"P{p:03d}" for p in patients],
        "cancer": cancer,
        "grade": pd.array(grade, dtype="Int64"),
        "mut_a": mut_a,
        "mut_b": mut_b,
        "time": np.round(np.minimum(event_time, censor), 2),
        "event": (event_time <= censor).astype(int),
    })  # fmt: skip


def _write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)


def write_cohort(out: str | Path, n: int = 40, seed: int = 0, dimensions: tuple[int, int] = (8192, 8192),
                 slide_mpp: float = 0.25, tile_size: int = 256, progress: bool = False) -> SyntheticCohort:  # fmt: skip
    """Write `n` synthetic slides to OUT/slides/S###.svs (with their truth files) and OUT/labels.csv.

    Refuses an OUT that already holds labels.csv or slides (it never overwrites). Slide i uses content seed
    `seed * 10_000 + i`, so cohorts of different seeds share no slide.
    """
    if n < 2:
        raise ValueError(f"a cohort needs at least 2 slides, got {n}")
    out = Path(out)
    labels_path = out / "labels.csv"
    slides_dir = out / "slides"
    if labels_path.exists() or (slides_dir.exists() and any(slides_dir.iterdir())):
        raise FileExistsError(f"{out} already holds a cohort (labels.csv or slides/); not overwriting it")
    slides_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    patients = _patients(n, rng)
    # Cancer status per patient, about half the slides.
    order = rng.permutation(max(patients) + 1)
    wanted = set(order[: (max(patients) + 1) // 2].tolist())
    width, height = dimensions
    paths, fractions = [], []
    for i, patient in enumerate(patients):
        spec = SyntheticSpec(width, height, mpp=slide_mpp, seed=seed * 10_000 + i, tumor=patient in wanted)
        written = write_slide(slides_dir / f"S{i:03d}.svs", spec, tile_size=tile_size, progress=progress)
        truth = json.loads(Path(written.truth).read_text())
        tissue = max(truth["tissue_fraction"], 1e-12)
        fractions.append(min(1.0, truth["tumor_fraction"] / tissue))
        paths.append(written.path)
    labels = cohort_labels(np.array(fractions), patients, seed)
    labels.insert(len(labels.columns), "tumor_fraction", np.round(fractions, 4))
    _write_csv_atomic(labels, labels_path)
    return SyntheticCohort(paths, labels, labels_path)

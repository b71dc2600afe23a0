"""Synthetic cohorts: many synthetic slides plus a labels table whose labels follow from what the slides show.

Rules (`write_cohort`), all drawn from one seed; what the pixels show is described in `wsi.synthetic.content`
and `wsi.synthetic.glands`. Every draw is keyed by the seed and the patient's or slide's index, so a slide keeps
its patient, labels and pixels whatever `n` is (a larger cohort of the same seed extends a smaller one):
- `patient_id`: about a third of the patients have two slides; a patient's slides share cancer status, grade and
  mutations (they come from one tumor), so grouped splits matter.
- `cancer`: one patient of each consecutive pair has cancer (so half the patients, in any prefix); their
  slides are rendered with a tumor region covering a target fraction of the tissue drawn log-uniformly between
  2% and 30%. The label is 1 when the slide's ground-truth tumor mask is not empty, so a label never names tumor
  the pixels lack.
- every slide, benign or not, carries benign look-alikes of tumor (`lookalikes` 0.7-1.0: crowded basal-cell-rich
  glands with small dark nuclei, lymphoid aggregates away from the tumor, darker-stained zones), so a tile's
  colour does not tell tumor from benign; only morphology does.
- `grade` (cancer only, empty for benign): 1-5, each block of five consecutive cancer patients takes every
  grade once (balanced), rendered as the tumor's morphology (nuclear size, pleomorphism, crowding and
  stratification, vesicular nuclei with nucleoli, lumina fading to solid nests at grade 5).
- `mut_a` (cancer only): 1 for one of each consecutive pair of cancer patients, rendered as a dense band of
  lymphocytes in the stroma in and around the tumor (strength 0.7-1.0; 0-0.1 without the mutation). `mut_b`
  (cancer only): 1 for two of each block of five cancer patients (40%), rendered as pale, bluish, mucinous stroma
  in and around the tumor. Each observed label is then flipped with probability 0.08 (label noise), so even a
  perfect reader of the pixels is not always right.
- `time`, `event`: Weibull (shape 3) survival with scale 80 months * exp(-lp / 3), lp = 2 * cancer
  + 0.7 * (grade - 1) + 5 * tumor fraction; censored uniformly on 24-150 months.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from wsi.atomic import atomic_file
from wsi.synthetic.content import SyntheticSpec, field_values
from wsi.synthetic.writer import write_slide

__all__ = ["LABEL_COLUMNS", "SyntheticCohort", "cohort_labels", "plan_cohort", "write_cohort"]

LABEL_COLUMNS = ("slide_id", "patient_id", "cancer", "grade", "mut_a", "mut_b", "time", "event")
LABEL_NOISE = 0.08
BURDEN_RANGE = (0.02, 0.30)
LOOKALIKE_RANGE = (0.7, 1.0)


@dataclass(frozen=True)
class SyntheticCohort:
    """What `write_cohort` wrote: the slide paths (in slide-id order) and the labels table with its path."""

    slides: list
    labels: pd.DataFrame
    labels_path: Path


@dataclass(frozen=True)
class PatientTraits:
    """What one patient's tumor looks like (shared by the patient's slides); benign patients: cancer False."""

    cancer: bool
    grade: int
    mut_a: int
    mut_b: int


def _patients(n: int, seed: int) -> list[int]:
    """Patient index of each slide: about a third of the patients have two consecutive slides (the last patient
    of a cohort may lose its second slide to `n`; no slide changes patient when `n` grows)."""
    patients, patient = [], 0
    while len(patients) < n:
        two = np.random.default_rng([seed, 0, patient]).random() < 1 / 3
        patients.extend([patient] * (2 if two else 1))
        patient += 1
    return patients[:n]


def _balanced(index: int, block: int, positives: int, seed: int, salt: int) -> int:
    """A value in [0, block) for item `index` such that each block of `block` consecutive items takes each value
    once (a seeded permutation per block); `positives` > 0: 1 for `positives` items of each block, else 0."""
    order = np.random.default_rng([seed, salt, index // block]).permutation(block)
    value = int(order[index % block])
    return int(value < positives) if positives else value


def _tumor_fraction(spec: SyntheticSpec, step: int = 16) -> float:
    """Tumor fraction of the tissue, from the fields on a grid every `step` level-0 pixels."""
    xs = np.arange(step / 2, spec.width, step)
    ys = np.arange(step / 2, spec.height, step)
    tissue, tumor = field_values(spec, xs[None, :], ys[:, None])
    return float((tumor > 0).sum() / max(1, (tissue > 0).sum()))


def _threshold_for(spec: SyntheticSpec, target: float) -> float:
    """The tumor threshold whose tumor covers about `target` of the tissue (bisection; monotone in it)."""
    lo, hi = 0.05, 0.98  # low threshold: much tumor
    for _ in range(14):
        mid = (lo + hi) / 2
        if _tumor_fraction(replace(spec, tumor_threshold=mid)) > target:
            lo = mid
        else:
            hi = mid
    return lo


def plan_cohort(n: int, seed: int, dimensions: tuple[int, int], slide_mpp: float) -> tuple[list, list, list]:
    """Patients, their traits and each slide's spec (rules in the module doc), without writing anything."""
    patients = _patients(n, seed)
    traits, n_cancer = [], 0
    for p in range(max(patients) + 1):
        if _balanced(p, 2, 1, seed, 1):
            grade = 1 + _balanced(n_cancer, 5, 0, seed, 2)
            mut_a, mut_b = _balanced(n_cancer, 2, 1, seed, 3), _balanced(n_cancer, 5, 2, seed, 4)
            traits.append(PatientTraits(True, grade, mut_a, mut_b))
            n_cancer += 1
        else:
            traits.append(PatientTraits(False, 3, 0, 0))
    width, height = dimensions
    specs = []
    for i, patient in enumerate(patients):
        t = traits[patient]
        rng = np.random.default_rng([seed, 5, i])
        strength = rng.uniform(0.7, 1.0, 2)
        background = rng.uniform(0.0, 0.1, 2)
        spec = SyntheticSpec(
            width, height, mpp=slide_mpp, seed=seed * 10_000 + i, tumor=t.cancer, grade=t.grade if t.cancer else 3,
            lymphocytes=float(strength[0] if t.mut_a else background[0]) if t.cancer else 0.0,
            mucin=float(strength[1] if t.mut_b else background[1]) if t.cancer else 0.0,
            lookalikes=round(float(rng.uniform(*LOOKALIKE_RANGE)), 3),
        )  # fmt: skip
        target = float(np.exp(rng.uniform(*np.log(BURDEN_RANGE))))
        if t.cancer:
            spec = replace(spec, tumor_threshold=round(_threshold_for(spec, target), 4))
        specs.append(spec)
    return patients, traits, specs


def cohort_labels(tumor_fraction: np.ndarray, patients: list[int], traits: list[PatientTraits],
                  seed: int) -> pd.DataFrame:  # fmt: skip
    """The labels table from each slide's ground-truth tumor fraction of the tissue and its patient's traits."""
    fraction = np.asarray(tumor_fraction, dtype=float)
    if fraction.ndim != 1 or len(fraction) != len(patients):
        raise ValueError(
            f"tumor_fraction must have shape (n_slides,) = ({len(patients)},), got {fraction.shape}"
        )
    n = len(fraction)
    # One generator per slide: a slide's noise, event and censoring times do not depend on n.
    draws = np.array([np.random.default_rng([seed, 1, i]).random(4) for i in range(n)]).reshape(n, 4)
    cancer = (fraction > 0).astype(int)
    slide_traits = [traits[p] for p in patients]
    grade = np.where(cancer == 1, [t.grade for t in slide_traits], np.nan)
    observed = {}
    for k, name in enumerate(("mut_a", "mut_b")):
        true = np.array([getattr(t, name) for t in slide_traits])
        flip = draws[:, k] < LABEL_NOISE
        observed[name] = np.where(cancer == 1, np.where(flip, 1 - true, true), np.nan)
    lp = 2.0 * cancer + 0.7 * (np.nan_to_num(grade, nan=1.0) - 1) + 5.0 * fraction
    weibull = (-np.log1p(-draws[:, 2])) ** (1 / 3.0)  # inverse CDF of the shape-3 Weibull
    event_time = 80.0 * np.exp(-lp / 3.0) * weibull
    censor = 24 + 126 * draws[:, 3]
    return pd.DataFrame({
        "slide_id": [f"S{i:03d}" for i in range(n)],
        "patient_id": [f"P{p:03d}" for p in patients],
        "cancer": cancer,
        "grade": pd.array(grade, dtype="Int64"),
        "mut_a": pd.array(observed["mut_a"], dtype="Int64"),
        "mut_b": pd.array(observed["mut_b"], dtype="Int64"),
        "time": np.round(np.minimum(event_time, censor), 2),
        "event": (event_time <= censor).astype(int),
    })  # fmt: skip


def _write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    with atomic_file(path) as tmp:
        table.to_csv(tmp, index=False)


def _write_one(job) -> tuple[Path, float]:
    """Write one slide of a cohort; its path and ground-truth tumor fraction of the tissue."""
    path, spec, tile_size, progress, in_pool = job
    # Slides written in parallel processes draw with one thread each; one at a time, with the default threads.
    written = write_slide(
        path, spec, tile_size=tile_size, progress=progress, render_workers=1 if in_pool else None
    )
    truth = json.loads(Path(written.truth).read_text())
    tissue = max(truth["tissue_fraction"], 1e-12)
    return written.path, min(1.0, truth["tumor_fraction"] / tissue)


def write_cohort(out: str | Path, n: int = 40, seed: int = 0, dimensions: tuple[int, int] = (8192, 8192),
                 slide_mpp: float = 0.25, tile_size: int = 256, progress: bool = False,
                 workers: int = 1) -> SyntheticCohort:  # fmt: skip
    """Write `n` synthetic slides to OUT/slides/S###.svs (with their truth files) and OUT/labels.csv.

    Refuses an OUT that already holds labels.csv or slides (it never overwrites). Slide i uses content seed
    `seed * 10_000 + i`, so cohorts of different seeds share no slide. labels.csv also carries the ground truth
    behind the labels (`tumor_fraction`, and the rendered `lymphocytes`, `mucin` and `lookalikes` strengths).
    `workers` > 1
    writes that many slides at once in separate processes (the same files as one at a time).
    """
    if n < 2:
        raise ValueError(f"a cohort needs at least 2 slides, got {n}")
    out = Path(out)
    labels_path = out / "labels.csv"
    slides_dir = out / "slides"
    if labels_path.exists() or (slides_dir.exists() and any(slides_dir.iterdir())):
        raise FileExistsError(f"{out} already holds a cohort (labels.csv or slides/); not overwriting it")
    slides_dir.mkdir(parents=True, exist_ok=True)
    patients, traits, specs = plan_cohort(n, seed, dimensions, slide_mpp)
    jobs = [
        (slides_dir / f"S{i:03d}.svs", spec, tile_size, progress and workers <= 1, workers > 1)
        for i, spec in enumerate(specs)
    ]
    if workers > 1:
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(min(workers, n)) as pool:
            done = list(pool.map(_write_one, jobs))
    else:
        done = [_write_one(job) for job in jobs]
    paths = [path for path, _ in done]
    fractions = [fraction for _, fraction in done]
    labels = cohort_labels(np.array(fractions), patients, traits, seed)
    labels["tumor_fraction"] = np.round(fractions, 4)
    labels["lymphocytes"] = [round(s.lymphocytes, 3) for s in specs]
    labels["mucin"] = [round(s.mucin, 3) for s in specs]
    labels["lookalikes"] = [s.lookalikes for s in specs]
    _write_csv_atomic(labels, labels_path)
    return SyntheticCohort(paths, labels, labels_path)

"""Instance segmentation metrics on (H, W) integer label images (0 = background): detection P/R/F1, Dice, AJI, PQ.

    m = nuclei.metrics.score(true_labels, pred_labels)     # one image -> Scores
    total = nuclei.metrics.aggregate([m1, m2, ...])        # pooled over images (counts summed, not averaged)

Matching is one-to-one at IoU > 0.5 (pairs above 0.5 are unique, as in the PQ paper), so a true nucleus matches
at most one prediction. Dice is pixel-level foreground Dice; AJI follows Kumar et al. 2017 (each true nucleus
takes the prediction with the largest IoU; unused predictions add to the union).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

__all__ = ["Scores", "aggregate", "error_counts", "merged_predictions", "pair_counts", "score"]


@dataclass(frozen=True)
class Scores:
    """Counts behind every metric, so that images can be pooled; the metrics are properties."""

    tp: int
    fp: int
    fn: int
    iou_sum: float  # sum of IoU over matched pairs (for SQ)
    inter: int  # foreground pixel intersection (Dice)
    fg_sum: int  # |true fg| + |pred fg|
    aji_inter: int
    aji_union: int

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Detection F1 = DQ: 2 TP / (2 TP + FP + FN)."""
        d = 2 * self.tp + self.fp + self.fn
        return 2 * self.tp / d if d else 1.0

    @property
    def dice(self) -> float:
        return 2 * self.inter / self.fg_sum if self.fg_sum else 1.0

    @property
    def aji(self) -> float:
        return self.aji_inter / self.aji_union if self.aji_union else 1.0

    @property
    def dq(self) -> float:
        return self.f1

    @property
    def sq(self) -> float:
        return self.iou_sum / self.tp if self.tp else 0.0

    @property
    def pq(self) -> float:
        return self.dq * self.sq

    def as_dict(self) -> dict[str, float]:
        """Counts and metrics in one flat dict (for tables and JSON)."""
        out: dict[str, float] = asdict(self)
        for k in ("precision", "recall", "f1", "dice", "aji", "dq", "sq", "pq"):
            out[k] = getattr(self, k)
        return out


def _check(labels: np.ndarray, name: str) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be an (H, W) integer label image, got {labels.dtype} {labels.shape}")
    if labels.min(initial=0) < 0:
        raise ValueError(f"{name} has negative labels")
    return labels


def pair_counts(true: np.ndarray, pred: np.ndarray):
    """Compact ids and the (n_true, n_pred) pixel intersection matrix, with each instance's area."""
    t_ids, t = np.unique(true, return_inverse=True)
    p_ids, p = np.unique(pred, return_inverse=True)
    # index 0 of each is background only when 0 is present; force a background row/column.
    t_off = 0 if t_ids[0] == 0 else 1
    p_off = 0 if p_ids[0] == 0 else 1
    t = t.ravel() + t_off
    p = p.ravel() + p_off
    nt, np_ = len(t_ids) + t_off, len(p_ids) + p_off
    inter = np.bincount(t * np_ + p, minlength=nt * np_).reshape(nt, np_)
    return inter[1:, 1:], inter[1:, :].sum(1), inter[:, 1:].sum(0)


def score(true: np.ndarray, pred: np.ndarray) -> Scores:
    """All metrics' counts for one image; `true` and `pred` are (H, W) integer labels, 0 = background."""
    true, pred = _check(true, "true"), _check(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"true and pred must have the same (H, W) shape, got {true.shape} and {pred.shape}")
    inter, t_area, p_area = pair_counts(true, pred)
    union = t_area[:, None] + p_area[None, :] - inter
    iou = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    matched = iou > 0.5
    tp = int(matched.sum())
    iou_sum = float(iou[matched].sum())
    fg_t, fg_p = true > 0, pred > 0
    # AJI: each true nucleus takes its best-IoU prediction (among those it touches).
    aji_i, aji_u = 0, 0
    used = np.zeros(len(p_area), bool)
    if len(t_area):
        if len(p_area):
            best = np.argmax(iou, axis=1)
            hit = inter[np.arange(len(t_area)), best] > 0
            aji_i = int(inter[np.arange(len(t_area)), best][hit].sum())
            aji_u = int(union[np.arange(len(t_area)), best][hit].sum()) + int(t_area[~hit].sum())
            used[best[hit]] = True
        else:
            aji_u = int(t_area.sum())
    aji_u += int(p_area[~used].sum())
    return Scores(
        tp=tp,
        fp=len(p_area) - tp,
        fn=len(t_area) - tp,
        iou_sum=iou_sum,
        inter=int((fg_t & fg_p).sum()),
        fg_sum=int(fg_t.sum() + fg_p.sum()),
        aji_inter=aji_i,
        aji_union=aji_u,
    )


def aggregate(scores: list[Scores]) -> Scores:
    """Pool images by summing counts (AJI and PQ over the whole set, as the benchmarks report them)."""
    if not scores:
        raise ValueError("aggregate needs at least one Scores")
    fields = Scores.__dataclass_fields__
    return Scores(**{k: sum(getattr(s, k) for s in scores) for k in fields})


def _held(inter: np.ndarray, t_area: np.ndarray) -> np.ndarray:
    """(n_true, n_pred) of `pair_counts`: prediction j covers more than half of true nucleus i."""
    return inter > 0.5 * t_area[:, None]


def merged_predictions(true: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Label ids of the predictions that hold two or more true nuclei (`error_counts`' `merged`, per
    prediction: what a picture of the errors fills)."""
    true, pred = _check(true, "true"), _check(pred, "pred")
    inter, t_area, _ = pair_counts(true, pred)
    ids = np.unique(pred)
    return ids[ids != 0][_held(inter, t_area).sum(0) >= 2]


def error_counts(true: np.ndarray, pred: np.ndarray) -> dict[str, int]:
    """Why true nuclei go unmatched, by kind (a diagnosis, not a metric): counts of true nuclei and predictions.

    A prediction "holds" a true nucleus when it covers more than half of it. `merged`: true nuclei held by a
    prediction that holds two or more; `split`: true nuclei that no prediction holds but two or more cover by more
    than a fifth each; `missed`: true nuclei that no prediction holds and that are not split, with more than half
    of their pixels predicted background; `false_positive`: predictions with under a fifth of their pixels on true
    nuclei. `true` and `pred` are (H, W) integer labels, 0 = background.
    """
    true, pred = _check(true, "true"), _check(pred, "pred")
    if true.shape != pred.shape:
        raise ValueError(f"true and pred must have the same (H, W) shape, got {true.shape} and {pred.shape}")
    inter, t_area, p_area = pair_counts(true, pred)
    n_true, n_pred = len(t_area), len(p_area)
    if not n_true or not n_pred:
        return {"true": n_true, "pred": n_pred, "merged": 0, "split": 0, "missed": n_true,
                "false_positive": n_pred}  # fmt: skip
    cover = inter / np.maximum(t_area[:, None], 1)  # share of each true nucleus under each prediction
    held = _held(inter, t_area)
    holder_count = held.sum(0)  # true nuclei each prediction holds
    merged = int((held & (holder_count >= 2)[None, :]).any(1).sum())
    unheld = ~held.any(1)
    split = unheld & ((cover > 0.2).sum(1) >= 2)
    missed = int((unheld & ~split & (cover.sum(1) < 0.5)).sum())  # each true nucleus is of one kind at most
    false_positive = int((inter.sum(0) / np.maximum(p_area, 1) < 0.2).sum())
    return {"true": n_true, "pred": n_pred, "merged": merged, "split": int(split.sum()), "missed": missed,
            "false_positive": false_positive}  # fmt: skip

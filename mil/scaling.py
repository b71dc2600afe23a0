"""Feature standardisation for MIL: per-dimension mean and sd of the training bags' tiles, kept with the model.

Encoders such as stain_stats give features with sds of 0.01-0.2: unscaled, a MIL model sees slides that differ
by a few thousandths, learns slowly and predicts nearly the same value for every slide. `mil.fit` fits the scale
on the bags it trains on (in cross-validation: each fold's training bags, never its test or validation bags),
the model applies it in `forward`, and checkpoints save it, so prediction sees what training saw.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["FeatureScale"]

_MIN_SD = 1e-6


@dataclass(frozen=True)
class FeatureScale:
    """(x - mean) / sd per feature dimension; a dimension constant in training keeps sd 1 (centred only)."""

    mean: tuple[float, ...]
    sd: tuple[float, ...]

    def __post_init__(self):
        if len(self.mean) != len(self.sd) or not self.mean:
            raise ValueError(f"mean and sd must be non-empty and of one length, got {len(self.mean)} and "
                             f"{len(self.sd)}")  # fmt: skip
        if not all(np.isfinite(self.mean)) or not all(np.isfinite(self.sd)) or min(self.sd) <= 0:
            raise ValueError("mean must be finite and sd finite and positive")

    def __len__(self) -> int:
        return len(self.mean)

    @classmethod
    def fit(cls, bags: Sequence) -> FeatureScale:
        """Mean and sd over all tiles of `bags` (each (n_i, D)), in float64.

        Accumulated bag by bag (each bag's mean and sum of squared deviations, merged as Chan et al. do), so the
        memory is one bag in float64, not every tile of the cohort."""
        n, mean, m2 = 0, None, None
        for bag in bags:
            tiles = torch.as_tensor(bag if torch.is_tensor(bag) else np.asarray(bag))
            if not len(tiles):
                continue
            tiles = tiles.reshape(len(tiles), -1).detach().to("cpu", torch.float64)
            bag_mean = tiles.mean(dim=0)
            bag_m2 = ((tiles - bag_mean) ** 2).sum(dim=0)
            if mean is None:
                n, mean, m2 = len(tiles), bag_mean, bag_m2
                continue
            total = n + len(tiles)
            delta = bag_mean - mean
            mean = mean + delta * (len(tiles) / total)
            m2 = m2 + bag_m2 + delta**2 * (n * len(tiles) / total)
            n = total
        if mean is None:
            raise ValueError("no tile to fit a feature scale on")
        sd = (m2 / (n - 1)).sqrt() if n > 1 else torch.ones_like(mean)
        sd = torch.where(sd > _MIN_SD, sd, torch.ones_like(sd))
        return cls(tuple(mean.tolist()), tuple(sd.tolist()))

    def to_dict(self) -> dict:
        return {"mean": list(self.mean), "sd": list(self.sd)}

    @classmethod
    def from_dict(cls, state: dict) -> FeatureScale:
        return cls(tuple(float(v) for v in state["mean"]), tuple(float(v) for v in state["sd"]))

"""Weight-free built-in encoders."""

from __future__ import annotations

from pathlib import Path

from mil.encoders.base import Encoder, EncoderError
from mil.encoders.registry import register_encoder
from mil.stain_stats import StainStats

__all__ = ["stain_stats"]


@register_encoder(dim=StainStats.dim, licence="Apache-2.0 (slidestream)", source="built in, no weights")
def stain_stats(weights: str | Path | None = None) -> Encoder:
    """H&E stain statistics, colour histograms and texture (53 features, no weights)."""
    if weights is not None:
        raise EncoderError("stain_stats has no weights")
    return Encoder(
        "stain_stats", StainStats(), StainStats.dim, None, (0, 0, 0), (1, 1, 1), "none", "stain_stats"
    )

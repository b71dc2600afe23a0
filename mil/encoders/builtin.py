"""Weight-free built-in encoders."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from mil.encoders.base import Encoder, EncoderError
from mil.encoders.morphometry import MorphometryConfig, checked_mpp, feature_names
from mil.encoders.morphometry import morphometry as measure
from mil.encoders.registry import register_encoder
from mil.stain_stats import StainStats

__all__ = ["MorphometryEncoder", "morphometry", "stain_stats"]


@register_encoder(dim=StainStats.dim, licence="Apache-2.0 (slidestream)", source="built in, no weights")
def stain_stats(weights: str | Path | None = None) -> Encoder:
    """H&E stain statistics, colour histograms and texture (53 features, no weights)."""
    if weights is not None:
        raise EncoderError("stain_stats has no weights")
    return Encoder(
        "stain_stats", StainStats(), StainStats.dim, None, (0, 0, 0), (1, 1, 1), "none", "stain_stats"
    )


class MorphometryEncoder(Encoder):
    """`mil.encoders.morphometry.morphometry` (the measurements) as an `Encoder`: uint8 (B, 3, H, W) -> (B, 79) float32 on the
    input's device, computed with numpy on the CPU (no preprocessing, no weights).

    `mpp` is the resolution of the tiles it is given (sizes come out in microns with it); `feature_names`
    names the columns, and `describe()` carries both, so features of tiles at another mpp are never mixed.
    """

    def __init__(self, mpp: float = 0.5, config: MorphometryConfig | None = None):
        try:
            mpp = checked_mpp(mpp)
        except ValueError as exc:
            raise EncoderError(str(exc)) from exc
        self.config = config or MorphometryConfig()
        self.feature_names = feature_names(self.config)
        arguments = {"mpp": float(mpp)} if config is None else {"mpp": float(mpp), "config": repr(config)}
        super().__init__("morphometry", nn.Identity(), len(self.feature_names), None, (0, 0, 0), (1, 1, 1),
                         "none", "morphometry", arguments=arguments, mpp=float(mpp))  # fmt: skip

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder morphometry expects (B, 3, H, W) images, got {tuple(images.shape)}")
        if images.dtype != torch.uint8:  # floats in [0, 1], as other encoders accept them
            images = (images.float() * 255).round().clamp(0, 255).to(torch.uint8)
        tiles = images.detach().permute(0, 2, 3, 1).cpu().numpy()  # the store's (B, H, W, 3): no copy
        return torch.from_numpy(measure(tiles, self.mpp, self.config)).to(images.device)

    def describe(self) -> dict:
        return {**super().describe(), "feature_names": list(self.feature_names)}


@register_encoder(dim=len(feature_names()), licence="Apache-2.0 (slidestream)", source="built in, no weights")
def morphometry(weights: str | Path | None = None, mpp: float = 0.5) -> Encoder:
    """Nuclear morphometry, stroma and H&E texture (79 named features, numpy, no weights)."""
    if weights is not None:
        raise EncoderError("morphometry has no weights")
    return MorphometryEncoder(mpp)

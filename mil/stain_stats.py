"""A light, weight-free patch encoder: H&E stain statistics, colour histograms and texture, in torch.

Meant for CPU-only runs and the demo: it separates tissue kinds (glass, stroma, dense tumour nuclei) without
any trained weights, and runs on the GPU too since it is plain tensor code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["StainStats"]

# Ruifrok & Johnston H&E-DAB stain matrix (rows: hematoxylin, eosin, DAB) and its inverse (as skimage rgb2hed).
_RGB_FROM_HED = torch.tensor([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]])
_HED_FROM_RGB = torch.linalg.inv(_RGB_FROM_HED)
_QUANTILES = torch.tensor([0.1, 0.5, 0.9])
_BINS = 8


class StainStats(nn.Module):
    """(B, 3, H, W) RGB in [0, 1] -> (B, 53) features.

    Per stain channel (H, E, residual): mean, std and 10/50/90th percentiles of optical density (15); fraction of
    tissue pixels (1); 8-bin histograms of R, G and B (24); hematoxylin-positive fraction at two thresholds (2);
    texture of the grey image: gradient magnitude mean / std, Laplacian variance and local contrast at 2 and 8 px
    (5); mean and std of saturation (2); and 4 cross-channel means (H*E, H^2, E^2, OD total).
    """

    dim = 53

    def __init__(self):
        super().__init__()
        self.register_buffer("hed_from_rgb", _HED_FROM_RGB.clone(), persistent=False)
        self.register_buffer("quantiles", _QUANTILES.clone(), persistent=False)
        sobel = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]])
        self.register_buffer("sobel", torch.stack([sobel, sobel.T])[:, None], persistent=False)
        lap = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])
        self.register_buffer("laplace", lap[None, None], persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"StainStats expects (B, 3, H, W) RGB in [0, 1], got {tuple(x.shape)}")
        x = x.float()
        while min(x.shape[-2:]) > 128:  # statistics of a 2x-reduced tile are as telling and 4x cheaper
            x = F.avg_pool2d(x, 2)
        b = x.shape[0]
        od = -torch.log(x.clamp(min=1 / 255))
        hed = torch.einsum("bchw,cd->bdhw", od, self.hed_from_rgb).flatten(2)  # (B, 3, HW)
        # Percentiles from a 2x pooled image: sorting every pixel would cost more than all the rest.
        small = F.avg_pool2d(od, 2) if min(od.shape[-2:]) >= 16 else od
        small = torch.einsum("bchw,cd->bdhw", small, self.hed_from_rgb).flatten(2)
        q = torch.quantile(small, self.quantiles.to(hed), dim=2).permute(1, 0, 2).reshape(b, -1)
        stain = torch.cat([hed.mean(2), hed.std(2), q], dim=1)
        total = od.sum(1).flatten(1)
        tissue = (total > 0.3).float().mean(1, keepdim=True)
        bins = (x.flatten(2) * _BINS).long().clamp(max=_BINS - 1)
        hist = torch.zeros(b, 3, _BINS, device=x.device).scatter_add_(
            2, bins, torch.ones_like(bins, dtype=torch.float)
        )
        hist = (hist / bins.shape[2]).reshape(b, -1)
        h = hed[:, 0]
        positive = torch.stack([(h > 0.05).float().mean(1), (h > 0.15).float().mean(1)], dim=1)
        grey = x.mean(1, keepdim=True)
        grad = F.conv2d(grey, self.sobel, padding=1).pow(2).sum(1).sqrt().flatten(1)
        lap = F.conv2d(grey, self.laplace, padding=1).flatten(1)
        contrast = [(grey - F.avg_pool2d(grey, k, 1, k // 2, count_include_pad=False)[..., : grey.shape[2], : grey.shape[3]])
                    .abs().flatten(1).mean(1) for k in (3, 9)]  # fmt: skip
        texture = torch.stack([grad.mean(1), grad.std(1), lap.var(1), *contrast], dim=1)
        mx, mn = x.max(1).values, x.min(1).values
        sat = ((mx - mn) / mx.clamp(min=1e-3)).flatten(1)
        colour = torch.stack([sat.mean(1), sat.std(1)], dim=1)
        e = hed[:, 1]
        cross = torch.stack([(h * e).mean(1), (h * h).mean(1), (e * e).mean(1), total.mean(1)], dim=1)
        return torch.cat([stain, tissue, hist, positive, texture, colour, cross], dim=1)

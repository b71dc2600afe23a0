"""CTransPath: a Swin-T whose patch embedding is a small convolutional stem, read from the original checkpoint.

The published `ctranspath.pth` was saved from the authors' copy of timm 0.5.4, where each stage ends with its
patch merging and attention masks / position indices are stored; today's timm merges at the start of the next
stage and computes those buffers. The key map moves the merging layers one stage on and drops the buffers.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from mil.encoders.recipe import Recipe
from mil.encoders.registry import register_recipe

__all__ = ["ConvStem", "ctranspath", "swin_v054_to_timm"]


class ConvStem(nn.Module):
    """Two stride-2 3x3 conv-BN-ReLU layers and a 1x1 projection: (B, 3, H, W) -> (B, H/4, W/4, C), as timm's
    Swin expects from its patch embedding (NHWC)."""

    def __init__(self, img_size=224, patch_size=4, in_chans=3, embed_dim=96, norm_layer=None, **kwargs):
        super().__init__()
        if patch_size != 4 or embed_dim % 8:
            raise ValueError(
                f"ConvStem needs patch_size 4 and embed_dim divisible by 8, got {patch_size}, {embed_dim}"
            )
        size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size = size
        self.patch_size = (patch_size, patch_size)
        self.grid_size = (size[0] // patch_size, size[1] // patch_size)
        self.num_patches = self.grid_size[0] * self.grid_size[1]
        layers: list[nn.Module] = []
        width_in, width = in_chans, embed_dim // 8
        for _ in range(2):
            layers += [nn.Conv2d(width_in, width, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(width),
                       nn.ReLU(inplace=True)]  # fmt: skip
            width_in, width = width, width * 2
        layers.append(nn.Conv2d(width_in, embed_dim, kernel_size=1))
        self.proj = nn.Sequential(*layers)
        self.norm = norm_layer(embed_dim) if norm_layer else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x).permute(0, 2, 3, 1))


def swin_v054_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The original CTransPath state dict under today's timm Swin names."""
    out = {}
    old_layout = "layers.0.downsample.reduction.weight" in state
    for key, value in state.items():
        if key.endswith(("relative_position_index", "attn_mask")) or key.startswith("head."):
            continue  # buffers timm computes itself; the classifier head is not used
        if old_layout:
            key = re.sub(
                r"^layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) + 1}.downsample", key
            )
        out[key] = value
    return out


@register_recipe
def ctranspath() -> Recipe:
    """CTransPath (Wang et al., MedIA 2022): Swin-T with a conv stem, semantic contrastive learning on TCGA+PAIP;
    mean-pooled last stage."""
    return Recipe(
        "swin_tiny_patch4_window7_224", 768, {"embed_layer": ConvStem}, mpp=1.0, licence="GPL-3.0",
        source="github.com/Xiyue-Wang/TransPath (ctranspath.pth, Google Drive)",
        checkpoint="timm 0.5.4 Swin state dict", key_map=swin_v054_to_timm,
    )  # fmt: skip

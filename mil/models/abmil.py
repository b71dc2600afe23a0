"""Attention-based MIL (Ilse et al. 2018): a learned weighted mean of the tile embeddings."""

from __future__ import annotations

import torch
from torch import nn

from mil.models._base import MILModel, MILOutput, make_head, masked_softmax, nan_masked, tile_encoder
from mil.models._registry import register_model

__all__ = ["ABMIL", "GatedAttention", "abmil", "abmil_gated"]


class GatedAttention(nn.Module):
    """Attention scores (.., N, branches) from embeddings (.., N, H); gated = tanh(Va h) * sigmoid(Ua h)."""

    def __init__(self, dim: int, attn_dim: int, branches: int = 1, gated: bool = True, dropout: float = 0.0):
        super().__init__()
        self.v = nn.Sequential(nn.Linear(dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.u = nn.Sequential(nn.Linear(dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout)) if gated else None
        self.w = nn.Linear(attn_dim, branches)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        a = self.v(h)
        if self.u is not None:
            a = a * self.u(h)
        return self.w(a)


class ABMIL(MILModel):
    """Tiles -> (Linear+ReLU) x `encoder_layers` embeddings -> attention (plain or gated) -> weighted mean -> head.

    `instance_scores` are the attention weights (B, N, 1).
    """

    def __init__(self, in_dim: int, n_outputs: int, embed_dim: int = 256, attn_dim: int = 128,
                 gated: bool = False, dropout: float = 0.25, encoder_layers: int = 1,
                 head: str = "linear"):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        self.encoder = tile_encoder(in_dim, embed_dim, encoder_layers, dropout)
        self.attention = GatedAttention(embed_dim, attn_dim, 1, gated)
        self.head = make_head(head, embed_dim, n_outputs)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        h = self.encoder(features)
        weights = masked_softmax(self.attention(h), mask[..., None], dim=1)  # (B, N, 1)
        embedding = (weights * h).sum(dim=1)
        return MILOutput(self.head(embedding), nan_masked(weights, mask), embedding=embedding)


@register_model
def abmil(in_dim: int, n_outputs: int, **kwargs) -> ABMIL:
    return ABMIL(in_dim, n_outputs, gated=False, **kwargs)


@register_model
def abmil_gated(in_dim: int, n_outputs: int, **kwargs) -> ABMIL:
    return ABMIL(in_dim, n_outputs, gated=True, **kwargs)

"""Instance pooling: each tile is scored by the head, and the bag takes the mean, the max or the mean of the top k
of its tiles' scores. Max and top-k let a minority of tiles carry the bag (a few percent of tumour tiles), where
the mean dilutes them; top-k is steadier to train than the max (k tiles get a gradient, not one)."""

from __future__ import annotations

import torch

from mil.models._base import MILModel, MILOutput, make_head, nan_masked, tile_encoder
from mil.models._registry import register_model

__all__ = ["InstancePooling", "max", "mean", "topk"]


class InstancePooling(MILModel):
    """Tiles -> (Linear+ReLU) x `encoder_layers` -> head per tile (B, N, K) -> masked mean, max or top-k mean
    over tiles -> bag logits.

    With a linear head the mean of the tile logits equals the head of the mean embedding. `top_k`: the number
    of highest-scoring tiles averaged per output by `pool="topk"` (fewer when a bag has fewer tiles).
    `instance_scores` are the per-tile logits.
    """

    instance_scores_are_weights = False

    def __init__(self, in_dim: int, n_outputs: int, pool: str = "mean", embed_dim: int = 256,
                 dropout: float = 0.25, encoder_layers: int = 1, head: str = "linear", top_k: int = 4):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        if pool not in ("mean", "max", "topk"):
            raise ValueError(f"pool must be 'mean', 'max' or 'topk', got {pool!r}")
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1, got {top_k}")
        self.pool = pool
        self.top_k = top_k
        self.encoder = tile_encoder(in_dim, embed_dim, encoder_layers, dropout)
        self.head = make_head(head, embed_dim, n_outputs)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        h = self.encoder(features)
        b, n, _ = h.shape
        scores = self.head(h.reshape(b * n, -1)).reshape(b, n, -1)
        m = mask[..., None]
        weights = m.to(h.dtype) / m.sum(dim=1, keepdim=True)  # masked mean (the embedding of mean and topk)
        if self.pool == "mean":
            logits = (scores * weights).sum(dim=1)
            embedding = (h * weights).sum(dim=1)
        elif self.pool == "max":
            logits = scores.masked_fill(~m, float("-inf")).amax(dim=1)
            embedding = h.masked_fill(~m, float("-inf")).amax(dim=1)
        else:
            k = min(self.top_k, n)
            top = (
                scores.masked_fill(~m, float("-inf")).topk(k, dim=1).values
            )  # (B, k, K), -inf past a bag's end
            taken = torch.isfinite(top)
            logits = top.masked_fill(~taken, 0.0).sum(dim=1) / taken.sum(dim=1)
            embedding = (h * weights).sum(dim=1)
        return MILOutput(logits, nan_masked(scores, mask), embedding=embedding)


@register_model
def mean(in_dim: int, n_outputs: int, **kwargs) -> InstancePooling:
    return InstancePooling(in_dim, n_outputs, pool="mean", **kwargs)


@register_model
def max(in_dim: int, n_outputs: int, **kwargs) -> InstancePooling:  # noqa: A001 - the registry key is "max"
    return InstancePooling(in_dim, n_outputs, pool="max", **kwargs)


@register_model
def topk(in_dim: int, n_outputs: int, **kwargs) -> InstancePooling:
    return InstancePooling(in_dim, n_outputs, pool="topk", **kwargs)

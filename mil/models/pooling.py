"""Pooling baselines: each tile is scored by the head, and the bag takes the mean or the max of its tiles."""

from __future__ import annotations

from mil.models._base import MILModel, MILOutput, make_head, nan_masked, tile_encoder
from mil.models._registry import register_model

__all__ = ["InstancePooling", "max", "mean"]


class InstancePooling(MILModel):
    """Tiles -> Linear+ReLU -> head per tile (B, N, K) -> masked mean or max over tiles -> bag logits.

    With a linear head the mean of the tile logits equals the head of the mean embedding. `instance_scores`
    are the per-tile logits.
    """

    def __init__(self, in_dim: int, n_outputs: int, pool: str = "mean", embed_dim: int = 256,
                 dropout: float = 0.25, encoder_layers: int = 1, head: str = "linear"):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        if pool not in ("mean", "max"):
            raise ValueError(f"pool must be 'mean' or 'max', got {pool!r}")
        self.pool = pool
        self.encoder = tile_encoder(in_dim, embed_dim, encoder_layers, dropout)
        self.head = make_head(head, embed_dim, n_outputs)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        h = self.encoder(features)
        b, n, _ = h.shape
        scores = self.head(h.reshape(b * n, -1)).reshape(b, n, -1)
        m = mask[..., None]
        if self.pool == "mean":
            weights = m.to(h.dtype) / m.sum(dim=1, keepdim=True)
            logits = (scores * weights).sum(dim=1)
            embedding = (h * weights).sum(dim=1)
        else:
            logits = scores.masked_fill(~m, float("-inf")).amax(dim=1)
            embedding = h.masked_fill(~m, float("-inf")).amax(dim=1)
        return MILOutput(logits, nan_masked(scores, mask), embedding=embedding)


@register_model
def mean(in_dim: int, n_outputs: int, **kwargs) -> InstancePooling:
    return InstancePooling(in_dim, n_outputs, pool="mean", **kwargs)


@register_model
def max(in_dim: int, n_outputs: int, **kwargs) -> InstancePooling:  # noqa: A001 - the registry key is "max"
    return InstancePooling(in_dim, n_outputs, pool="max", **kwargs)

"""DSMIL (Li et al. 2021): a max-instance stream and a bag stream whose attention is the similarity of each tile
to the critical (highest scoring) tile of each class.

`logits` are the bag stream's; the max-instance stream's logits are `aux_logits`, trained with the same task
loss (the loop averages the two losses, as DSMIL does). `instance_scores` are the per-tile class scores
(B, N, K). With `head="cumulative"` the instance classifier is a cumulative-link head too.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from mil.models._base import MILModel, MILOutput, make_head, masked_softmax, nan_masked, tile_encoder
from mil.models._registry import register_model

__all__ = ["DSMIL", "dsmil"]


class DSMIL(MILModel):
    instance_scores_are_weights = False  # per-tile class scores of the max-instance stream

    def __init__(self, in_dim: int, n_outputs: int, embed_dim: int = 256, query_dim: int = 128,
                 dropout: float = 0.25, encoder_layers: int = 1, head: str = "linear"):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        self.encoder = tile_encoder(in_dim, embed_dim, encoder_layers, dropout)
        # The max-instance stream is trained with the task loss too, so a cumulative-link task needs ordered
        # instance logits as well.
        self.instance_classifier = make_head("cumulative" if head == "cumulative" else "linear", embed_dim,
                                             n_outputs)  # fmt: skip
        self.query = nn.Sequential(
            nn.Linear(embed_dim, query_dim), nn.ReLU(), nn.Linear(query_dim, query_dim), nn.Tanh()
        )
        self.query_dim = query_dim
        # DSMIL's Conv1d(K, K, kernel_size=H) over the K class embeddings is a linear map of their concatenation.
        self.head = make_head(head, n_outputs * embed_dim, n_outputs)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        h = self.encoder(features)  # (B, N, H)
        scores = self.instance_classifier(h)  # (B, N, K)
        m = mask[..., None]
        masked_scores = scores.masked_fill(~m, float("-inf"))
        max_logits, critical = masked_scores.max(dim=1)  # (B, K), (B, K)
        q = self.query(h)  # (B, N, Q)
        q_critical = torch.gather(q, 1, critical[..., None].expand(-1, -1, q.shape[2]))  # (B, K, Q)
        similarity = torch.einsum("bnq,bkq->bnk", q, q_critical) / math.sqrt(self.query_dim)
        weights = masked_softmax(similarity, m, dim=1)  # (B, N, K)
        class_embeddings = torch.einsum("bnk,bnh->bkh", weights, h)  # (B, K, H)
        logits = self.head(class_embeddings.flatten(1))
        return MILOutput(logits, nan_masked(scores, mask), aux_logits=max_logits,
                         embedding=class_embeddings.mean(dim=1))  # fmt: skip


@register_model
def dsmil(in_dim: int, n_outputs: int, **kwargs) -> DSMIL:
    return DSMIL(in_dim, n_outputs, **kwargs)

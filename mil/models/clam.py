"""CLAM (Lu et al. 2021): gated attention MIL with an instance-clustering loss on the most and least attended tiles.

Single-branch (`clam_sb`): one attention map; multi-branch (`clam_mb`): one attention map and one classifier per
class. In training, given each bag's class, the `k_sample` most attended tiles of that class's branch are
pseudo-labelled positive and the `k_sample` least attended negative for that class's instance classifier; with
`subtyping`, the most attended tiles of the other classes' branches are pseudo-labelled negative for theirs.
The mean cross-entropy of these pseudo-labels, times `instance_weight`, is `aux_loss` (CLAM weighs the bag
loss 0.7 and the instance loss 0.3; here the task loss keeps weight 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mil.models._base import MILModel, MILOutput, make_head, masked_softmax, nan_masked, tile_encoder
from mil.models._registry import register_model
from mil.models.abmil import GatedAttention

__all__ = ["CLAM", "clam_mb", "clam_sb"]


class CLAM(MILModel):
    """`instance_scores` are the attention weights: (B, N, 1) single-branch, (B, N, classes) multi-branch (two
    branches for a one-output binary task, whose logit is then the difference of the two class logits)."""

    def __init__(self, in_dim: int, n_outputs: int, multi_branch: bool = False, embed_dim: int = 256,
                 attn_dim: int = 128, dropout: float = 0.25, encoder_layers: int = 1, k_sample: int = 8,
                 instance_weight: float = 0.3, subtyping: bool = False, head: str = "linear"):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        self.multi_branch = multi_branch
        self.k_sample = k_sample
        self.instance_weight = instance_weight
        self.subtyping = subtyping
        # A one-output (binary) task still has two classes: one attention branch and instance classifier each.
        self.n_classes = max(n_outputs, 2)
        branches = self.n_classes if multi_branch else 1
        self.encoder = tile_encoder(in_dim, embed_dim, encoder_layers, dropout)
        self.attention = GatedAttention(embed_dim, attn_dim, branches, gated=True, dropout=dropout)
        if multi_branch:
            if head == "cox" and n_outputs != 1:
                raise ValueError(f"a cox head gives one log-risk, so n_outputs must be 1, got {n_outputs}")
            if head == "cumulative":
                raise ValueError("clam_mb has one head per class, but a cumulative-link head needs one shared "
                                 "score: use clam_sb, or the grade task's CORN link (link='corn')")  # fmt: skip
            self.heads = nn.ModuleList(make_head(head, embed_dim, 1) for _ in range(self.n_classes))
        else:
            self.head = make_head(head, embed_dim, n_outputs)
        self.instance_classifiers = nn.ModuleList(nn.Linear(embed_dim, 2) for _ in range(self.n_classes))

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        h = self.encoder(features)
        raw = self.attention(h)  # (B, N, branches)
        weights = masked_softmax(raw, mask[..., None], dim=1)
        pooled = torch.einsum("bnk,bnh->bkh", weights, h)  # (B, branches, H)
        if self.multi_branch:
            logits = torch.cat([head(pooled[:, k]) for k, head in enumerate(self.heads)], dim=1)
            if self.n_outputs == 1:  # two-class softmax -> its log-odds, the one logit of a binary task
                logits = logits[:, 1:] - logits[:, :1]
        else:
            logits = self.head(pooled[:, 0])
        aux = None
        if self.training and instance_labels is not None and self.instance_weight > 0:
            aux = self.instance_weight * self._instance_loss(h, raw, mask, instance_labels)
        return MILOutput(logits, nan_masked(weights, mask), aux_loss=aux, embedding=pooled.mean(dim=1))

    def _instance_loss(self, h, raw, mask, labels) -> torch.Tensor:
        losses = []
        for i in range(h.shape[0]):
            label = int(labels[i])
            if label < 0:
                continue
            if label >= self.n_classes:
                raise ValueError(f"instance label {label} is outside 0..{self.n_classes - 1}")
            valid = mask[i]
            n_valid = int(valid.sum())
            k = min(self.k_sample, n_valid // 2)
            if k == 0:
                continue
            # An unpadded bag is used as it is: a boolean index would copy it and scatter its gradient back.
            hi, ri = (h[i], raw[i]) if n_valid == len(valid) else (h[i][valid], raw[i][valid])
            for c in range(self.n_classes):
                if c != label and not self.subtyping:
                    continue
                branch = c if self.multi_branch and c < raw.shape[2] else 0
                scores = ri[:, branch]
                top = torch.topk(scores, k).indices
                if c == label:
                    bottom = torch.topk(-scores, k).indices
                    x = torch.cat([hi[top], hi[bottom]])
                    target = torch.cat([torch.ones(k), torch.zeros(k)]).long().to(h.device)
                else:
                    x = hi[top]
                    target = torch.zeros(k, dtype=torch.long, device=h.device)
                losses.append(F.cross_entropy(self.instance_classifiers[c](x), target))
        if not losses:
            return h.sum() * 0.0
        return torch.stack(losses).mean()


@register_model
def clam_sb(in_dim: int, n_outputs: int, **kwargs) -> CLAM:
    return CLAM(in_dim, n_outputs, multi_branch=False, **kwargs)


@register_model
def clam_mb(in_dim: int, n_outputs: int, **kwargs) -> CLAM:
    return CLAM(in_dim, n_outputs, multi_branch=True, **kwargs)

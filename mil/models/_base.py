"""What every MIL model shares: the output dataclass, the input checks and the slide-level heads."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from mil.scaling import FeatureScale
from survival import CoxHead

__all__ = [
    "CumulativeLinkHead",
    "MILModel",
    "MILOutput",
    "ModelSpec",
    "make_head",
    "masked_softmax",
    "nan_masked",
    "tile_encoder",
]


@dataclass(frozen=True)
class ModelSpec:
    """How a registered model was built: enough to build it again (checkpoints)."""

    name: str
    in_dim: int
    n_outputs: int
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class MILOutput:
    """A MIL model's output for B bags of up to N tiles and K outputs.

    `logits` (B, K): the slide-level prediction. `instance_scores` (B, N, K or 1): attention weights (attention
    models, each bag's weights sum to 1 over its tiles) or per-tile logits (pooling baselines, DSMIL); NaN at
    masked (padding) positions. `aux_loss`: a scalar the training loop adds to the task loss (CLAM's
    instance-clustering loss, only in training with labels), else None. `aux_logits` (B, K): a second
    prediction trained with the same task loss (DSMIL's max-instance stream), else None. `embedding` (B, H):
    the slide embedding before the head.
    """

    logits: torch.Tensor
    instance_scores: torch.Tensor
    aux_loss: torch.Tensor | None = None
    aux_logits: torch.Tensor | None = None
    embedding: torch.Tensor | None = None


def masked_softmax(scores: torch.Tensor, mask: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Softmax over `dim` where `mask` (broadcastable to `scores`) is true; masked entries get weight 0."""
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=dim).nan_to_num(0.0)


class _CoxOutput(nn.Module):
    """`survival.CoxHead` with a (B, 1) output, like the linear heads."""

    def __init__(self, in_dim: int, n_outputs: int, dropout: float = 0.0):
        super().__init__()
        if n_outputs != 1:
            raise ValueError(f"a cox head gives one log-risk, so n_outputs must be 1, got {n_outputs}")
        self.cox = CoxHead(in_dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.cox(x).unsqueeze(-1)


class CumulativeLinkHead(nn.Module):
    """Proportional odds (cumulative logit) head for K + 1 ordered grades: one score s = w.x and ordered
    thresholds t_0 < ... < t_{K-1}; output k is s - t_k, the log-odds of P(grade > k).

    The outputs are decreasing in k by construction (the thresholds are t_0 plus cumulative softplus gaps),
    so the cumulative probabilities are consistent. Works on any leading dimensions: (..., in_dim) -> (..., K).
    """

    def __init__(self, in_dim: int, n_outputs: int):
        super().__init__()
        self.score = nn.Linear(in_dim, 1, bias=False)
        self.first = nn.Parameter(torch.tensor(-(n_outputs - 1) / 2.0))
        # softplus(0.5413) = 1: thresholds start one unit apart, centred on 0.
        self.gaps = nn.Parameter(torch.full((n_outputs - 1,), 0.5413))

    def thresholds(self) -> torch.Tensor:
        steps = torch.nn.functional.softplus(self.gaps) + 1e-4
        return torch.cat([self.first.reshape(1), self.first + torch.cumsum(steps, dim=0)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.score(x) - self.thresholds()


_HEADS = {"linear": nn.Linear, "cox": _CoxOutput, "cumulative": CumulativeLinkHead}


def make_head(kind: str, in_dim: int, n_outputs: int) -> nn.Module:
    """The slide-level head: "linear" (logits), "cox" (`survival.CoxHead`, one log-risk, no bias) or
    "cumulative" (`CumulativeLinkHead`: ordered log-odds of P(grade > k), for the grade task's cumulative link)."""
    if kind not in _HEADS:
        raise ValueError(f"head must be one of {sorted(_HEADS)}, got {kind!r}")
    return _HEADS[kind](in_dim, n_outputs)


class MILModel(nn.Module):
    """Base of the registered models: checks `(B, N, D)` features and a `(B, N)` mask, standardises the features
    with `feature_scale` (when set), then `forward_bags`.

    `permutation_invariant` says whether reordering a bag's tiles leaves the logits unchanged (tested).
    `instance_scores_are_weights` says whether `instance_scores` are attention weights (non-negative, at most 1
    over a bag's tiles) rather than per-tile class scores (logits).
    """

    permutation_invariant: bool = True
    instance_scores_are_weights: bool = True
    spec: ModelSpec | None = None

    def __init__(self, in_dim: int, n_outputs: int):
        super().__init__()
        self.in_dim = in_dim
        self.n_outputs = n_outputs
        # The scale's only copy (they move with the model). Not in the state dict: checkpoints keep the scale in
        # their JSON, readable, with the model's spec.
        self.register_buffer("_scale_mean", None, persistent=False)
        self.register_buffer("_scale_sd", None, persistent=False)

    @property
    def feature_scale(self) -> FeatureScale | None:
        """The scale `forward` applies (float32, as applied), or None."""
        if self._scale_mean is None:
            return None
        return FeatureScale(tuple(self._scale_mean.tolist()), tuple(self._scale_sd.tolist()))

    def set_feature_scale(self, scale: FeatureScale | None) -> None:
        """Standardise the features given to `forward` with `scale` (None: use them as they are)."""
        if scale is not None and len(scale) != self.in_dim:
            raise ValueError(f"a feature scale of {len(scale)} dimensions for a model of {self.in_dim}-dimensional "
                             "features")  # fmt: skip
        device = next(self.parameters()).device
        self._scale_mean = (
            None if scale is None else torch.tensor(scale.mean, dtype=torch.float32, device=device)
        )
        self._scale_sd = None if scale is None else torch.tensor(scale.sd, dtype=torch.float32, device=device)

    def forward(
        self,
        features: torch.Tensor,
        mask: torch.Tensor | None = None,
        instance_labels: torch.Tensor | None = None,
    ) -> MILOutput:
        """`features` (B, N, D), `mask` (B, N) bool, true for real tiles (default: all).

        `instance_labels` (B,) long: each bag's class for models with an instance loss (CLAM), -1 for none.
        Every bag needs at least one real tile.
        """
        if features.dim() != 3 or features.shape[2] != self.in_dim:
            raise ValueError(
                f"{type(self).__name__} expects features of shape (B, N, {self.in_dim}), "
                f"got {tuple(features.shape)}"
            )
        b, n = features.shape[:2]
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=features.device)
        if mask.shape != (b, n) or mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor of shape (B, N) = ({b}, {n}), got {mask.dtype} {tuple(mask.shape)}"
            )
        if n == 0 or not bool(mask.any(dim=1).all()):
            raise ValueError("every bag needs at least one real tile (mask true somewhere in each row)")
        if instance_labels is not None and instance_labels.shape != (b,):
            raise ValueError(
                f"instance_labels must have shape (B,) = ({b},), got {tuple(instance_labels.shape)}"
            )
        if self._scale_mean is not None:
            features = (features - self._scale_mean) / self._scale_sd
        return self.forward_bags(features, mask, instance_labels)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        raise NotImplementedError


def nan_masked(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """`scores` (B, N, K) with NaN where `mask` (B, N) is false."""
    return scores.masked_fill(~mask[..., None], float("nan"))


def tile_encoder(in_dim: int, embed_dim: int, layers: int = 1, dropout: float = 0.0) -> nn.Sequential:
    """`layers` x (Linear + ReLU + Dropout): tile features -> tile embeddings."""
    if layers < 1:
        raise ValueError(f"encoder_layers must be at least 1, got {layers}")
    modules = []
    for i in range(layers):
        modules += [nn.Linear(in_dim if i == 0 else embed_dim, embed_dim), nn.ReLU(), nn.Dropout(dropout)]
    return nn.Sequential(*modules)

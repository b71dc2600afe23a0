"""TransMIL (Shao et al. 2021): two Nystrom self-attention layers around a pyramid position encoding (PPEG).

Each bag is run on its own real tiles (the batch padding is dropped first, so it never changes a result); the
tokens are then repeated up to the next square (PPEG convolves them on a square grid), a class token is put in
front, and the Nystrom layers pad the sequence at the front to a multiple of the landmarks, with a mask. A
sequence no longer than the landmarks (a bag of up to about `landmarks` tiles) gets exact softmax attention,
which is what Nystrom converges to there. Tile order matters (the position encoding), so TransMIL is not
permutation invariant. `instance_scores` (B, N, 1) are the class token's attention over the tiles in the last
layer (Nystrom-approximated for long sequences), mean over heads.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mil.models._base import MILModel, MILOutput, make_head
from mil.models._registry import register_model

__all__ = ["NystromAttention", "TransMIL", "transmil"]


def _masked(sim: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """`sim` with the pairs outside `keep` at the lowest value of its own dtype (under bfloat16 autocast the
    products are bfloat16, where float32's lowest value does not fit)."""
    return sim.masked_fill(~keep, -torch.finfo(sim.dtype).max)


def _pinv(x: torch.Tensor, iterations: int) -> torch.Tensor:
    """Iterative Moore-Penrose pseudo-inverse (Razavi et al. 2014), as in the Nystromformer."""
    abs_x = x.abs()
    z = x.transpose(-1, -2) / (abs_x.sum(dim=-1).amax() * abs_x.sum(dim=-2).amax())
    eye = torch.eye(x.shape[-1], device=x.device, dtype=x.dtype)
    for _ in range(iterations):
        xz = x @ z
        z = 0.25 * z @ (13 * eye - xz @ (15 * eye - xz @ (7 * eye - xz)))
    return z


class NystromAttention(nn.Module):
    """Multi-head self-attention approximated with `landmarks` segment means (Xiong et al. 2021), one sequence."""

    def __init__(self, dim: int, heads: int = 8, landmarks: int = 256, pinv_iterations: int = 6,
                 residual_kernel: int = 33, dropout: float = 0.1):  # fmt: skip
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not a multiple of heads {heads}")
        self.heads, self.landmarks, self.pinv_iterations = heads, landmarks, pinv_iterations
        self.head_dim = dim // heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.to_out = nn.Sequential(nn.Linear(dim, dim), nn.Dropout(dropout))
        self.residual = nn.Conv2d(heads, heads, (residual_kernel, 1), padding=(residual_kernel // 2, 0),
                                  groups=heads, bias=False)  # fmt: skip

    def forward(self, x: torch.Tensor, return_first_row: bool = False):
        """`x` (1, n, dim) -> (1, n, dim); with `return_first_row`, also token 0's attention (heads, n).

        A sequence of at most `landmarks` tokens gets exact softmax attention: Nystrom with one landmark per
        token is exact (A A+ A = A), and padding such a sequence to `landmarks` would only add cost (a bag of
        10 tiles would pay for 256 tokens and the 256 x 256 pseudo-inverse).
        """
        if x.shape[1] <= self.landmarks:
            return self._exact(x, return_first_row)
        return self._nystrom(x, return_first_row)

    def _qkv(self, x: torch.Tensor):
        q, k, v = (t.reshape(1, -1, self.heads, self.head_dim).transpose(1, 2)
                   for t in self.to_qkv(x).chunk(3, dim=-1))  # fmt: skip
        return q / math.sqrt(self.head_dim), k, v

    def _output(self, out: torch.Tensor) -> torch.Tensor:
        return self.to_out(out.transpose(1, 2).reshape(1, out.shape[2], -1))

    def _exact(self, x: torch.Tensor, return_first_row: bool):
        q, k, v = self._qkv(x)
        attention = (q @ k.transpose(-1, -2)).softmax(-1)  # (1, heads, n, n)
        out = self._output(attention @ v + self.residual(v))
        return (out, attention[0, :, 0]) if return_first_row else out

    def _nystrom(self, x: torch.Tensor, return_first_row: bool):
        n = x.shape[1]
        pad = (-n) % self.landmarks
        x = F.pad(x, (0, 0, pad, 0))
        mask = torch.ones(x.shape[1], dtype=torch.bool, device=x.device)
        mask[:pad] = False
        q, k, v = self._qkv(x)
        m = mask[None, None, :, None].to(x.dtype)
        q, k, v = q * m, k * m, v * m
        per = x.shape[1] // self.landmarks
        counts = mask.reshape(self.landmarks, per).sum(dim=1)
        divisor = counts[None, None, :, None].to(x.dtype) + 1e-8
        q_land = q.reshape(1, self.heads, self.landmarks, per, -1).sum(dim=3) / divisor
        k_land = k.reshape(1, self.heads, self.landmarks, per, -1).sum(dim=3) / divisor
        land_mask = counts > 0
        sim1 = _masked(q @ k_land.transpose(-1, -2), mask[:, None] & land_mask[None, :])
        sim2 = _masked(q_land @ k_land.transpose(-1, -2), land_mask[:, None] & land_mask[None, :])
        sim3 = _masked(q_land @ k.transpose(-1, -2), land_mask[:, None] & mask[None, :])
        attn1, attn2, attn3 = sim1.softmax(-1), sim2.softmax(-1), sim3.softmax(-1)
        left = attn1 @ _pinv(attn2, self.pinv_iterations)
        out = self._output(left @ (attn3 @ v) + self.residual(v))[:, -n:]
        if not return_first_row:
            return out
        first = (left[0, :, pad : pad + 1] @ attn3[0])[:, 0, pad:]  # (heads, n)
        return out, first


class PPEG(nn.Module):
    """Pyramid position encoding: depthwise 7x7, 5x5 and 3x3 convolutions on the square grid of tokens."""

    def __init__(self, dim: int):
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(dim, dim, k, padding=k // 2, groups=dim) for k in (7, 5, 3))

    def forward(self, x: torch.Tensor, side: int) -> torch.Tensor:
        cls, tokens = x[:, :1], x[:, 1:]
        grid = tokens.transpose(1, 2).reshape(1, -1, side, side)
        grid = grid + sum(conv(grid) for conv in self.convs)
        return torch.cat([cls, grid.flatten(2).transpose(1, 2)], dim=1)


class TransMIL(MILModel):
    permutation_invariant = False

    def __init__(self, in_dim: int, n_outputs: int, embed_dim: int = 512, heads: int = 8,
                 landmarks: int | None = None, dropout: float = 0.1, head: str = "linear"):  # fmt: skip
        super().__init__(in_dim, n_outputs)
        landmarks = landmarks or embed_dim // 2
        self.encoder = nn.Sequential(nn.Linear(in_dim, embed_dim), nn.ReLU())
        self.cls_token = nn.Parameter(torch.randn(1, 1, embed_dim) * 0.02)
        self.norms = nn.ModuleList(nn.LayerNorm(embed_dim) for _ in range(3))
        self.layers = nn.ModuleList(
            NystromAttention(embed_dim, heads, landmarks, dropout=dropout) for _ in range(2)
        )
        self.ppeg = PPEG(embed_dim)
        self.head = make_head(head, embed_dim, n_outputs)

    def _one_bag(self, x: torch.Tensor):
        n = x.shape[0]
        h = self.encoder(x)[None]  # (1, n, E)
        side = math.ceil(math.sqrt(n))
        repeat = side * side - n
        h = torch.cat(
            [h, h[:, :repeat]] if repeat <= n else [h, h.repeat(1, math.ceil(repeat / n), 1)[:, :repeat]], 1
        )
        h = torch.cat([self.cls_token, h], dim=1)
        h = h + self.layers[0](self.norms[0](h))
        h = self.ppeg(h, side)
        out, first = self.layers[1](self.norms[1](h), return_first_row=True)
        h = h + out
        embedding = self.norms[2](h[:, 0])[0]
        return embedding, first[:, 1 : n + 1].mean(dim=0)

    def forward_bags(self, features, mask, instance_labels) -> MILOutput:
        embeddings, scores = [], []
        attention = torch.full(mask.shape, float("nan"), device=features.device, dtype=features.dtype)
        for i in range(features.shape[0]):
            embedding, first = self._one_bag(features[i][mask[i]])
            embeddings.append(embedding)
            scores.append(first)
        attention = attention.masked_scatter(mask, torch.cat(scores).to(attention.dtype))
        embedding = torch.stack(embeddings)
        return MILOutput(self.head(embedding), attention[..., None], embedding=embedding)


@register_model
def transmil(in_dim: int, n_outputs: int, **kwargs) -> TransMIL:
    return TransMIL(in_dim, n_outputs, **kwargs)

"""Cox negative partial log-likelihood in torch (Breslow or Efron ties) and a Cox head for slide embeddings."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["CoxHead", "cox_loss"]


def cox_loss(
    log_risk: torch.Tensor,
    time: torch.Tensor,
    event: torch.Tensor,
    ties: str = "efron",
    reduction: str = "mean",
) -> torch.Tensor:
    """Negative Cox partial log-likelihood of `log_risk` (N,) for survival `time` (N,) and `event` (N,) in {0, 1}.

    Numerically stable (log-sum-exp over risk sets, one sort), any input order, differentiable in `log_risk`.
    `reduction="mean"` divides by the number of events. A batch without events gives 0 (with a zero gradient).
    """
    if ties not in ("efron", "breslow"):
        raise ValueError(f"ties must be 'efron' or 'breslow', got {ties!r}")
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction must be 'mean' or 'sum', got {reduction!r}")
    log_risk = log_risk.reshape(-1) if log_risk.dim() == 2 and log_risk.shape[1] == 1 else log_risk
    if log_risk.dim() != 1:
        raise ValueError(f"log_risk must have shape (N,) or (N, 1), got {tuple(log_risk.shape)}")
    n = log_risk.shape[0]
    time = torch.as_tensor(time, device=log_risk.device).reshape(-1)
    event = torch.as_tensor(event, device=log_risk.device).reshape(-1)
    if time.shape[0] != n or event.shape[0] != n:
        raise ValueError(
            f"log_risk, time and event need the same length, got {n}, {time.shape[0]}, {event.shape[0]}"
        )
    if torch.isnan(time.float()).any() or (time < 0).any():
        raise ValueError("time must be non-negative and not NaN")
    if not torch.isin(event, torch.tensor([0, 1], device=event.device, dtype=event.dtype)).all():
        raise ValueError("event must be 0 (censored) or 1 (event)")
    event = event.bool()
    n_events = int(event.sum())
    if n_events == 0:
        return log_risk.sum() * 0.0

    # Descending time: the risk set of a sample is everything before it, up to the end of its tie group.
    order = torch.argsort(time, descending=True, stable=True)
    lr, t, e = log_risk[order], time[order], event[order]
    new = torch.ones(n, dtype=torch.bool, device=lr.device)
    new[1:] = t[1:] != t[:-1]
    group = torch.cumsum(new.long(), 0) - 1
    n_groups = int(group[-1]) + 1
    last = torch.zeros(n_groups, dtype=torch.long, device=lr.device).scatter_reduce(
        0, group, torch.arange(n, device=lr.device), reduce="amax"
    )
    log_s0_risk = torch.logcumsumexp(lr, 0)[last][group]
    if ties == "breslow":
        log_den = log_s0_risk
    else:
        # Efron: den_l = S0(risk) - l/d * S0(dead), l = 0..d-1 over the d tied events of each time.
        lr_dead = lr.masked_fill(~e, float("-inf"))
        peak = torch.full((n_groups,), float("-inf"), dtype=lr.dtype, device=lr.device)
        peak = peak.scatter_reduce(0, group, lr_dead.detach(), reduce="amax")
        peak = torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))
        s0_dead = torch.zeros(n_groups, dtype=lr.dtype, device=lr.device).index_add(
            0, group, torch.exp(lr_dead - peak[group])
        )
        deaths = torch.zeros(n_groups, dtype=lr.dtype, device=lr.device).index_add(0, group, e.to(lr.dtype))
        rank = torch.cumsum(e.long(), 0)
        first_rank = torch.zeros(n_groups, dtype=torch.long, device=lr.device).scatter_reduce(
            0, group, rank - e.long(), reduce="amin", include_self=False
        )
        c = (rank - 1 - first_rank[group]).to(lr.dtype) / deaths[group].clamp_min(1)
        ratio = torch.exp(torch.log(s0_dead[group]) + peak[group] - log_s0_risk)
        log_den = log_s0_risk + torch.log1p(-(c * ratio).clamp(max=1 - 1e-12))
    loss = -(lr[e] - log_den[e]).sum()
    return loss / n_events if reduction == "mean" else loss


class CoxHead(nn.Module):
    """Linear Cox head: (N, in_dim) embeddings -> (N,) log-risk. No bias: the partial likelihood ignores it."""

    def __init__(self, in_dim: int, dropout: float = 0.0):
        super().__init__()
        self.in_dim = in_dim
        self.dropout = nn.Dropout(dropout)
        self.linear = nn.Linear(in_dim, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"CoxHead expects (N, {self.in_dim}) embeddings, got {tuple(x.shape)}")
        return self.linear(self.dropout(x)).squeeze(-1)

"""The torch Cox loss equals the numpy partial likelihood, has exact gradients, and is order-free."""

from __future__ import annotations

import pytest
import torch

import survival


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    n = 60
    log_risk = torch.randn(n, dtype=torch.float64, generator=g)
    time = torch.randint(1, 15, (n,), generator=g).double()  # many ties
    event = (torch.rand(n, generator=g) < 0.6).long()
    return log_risk, time, event


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_equals_numpy_partial_likelihood(batch, ties):
    log_risk, time, event = batch
    data = survival.SortedSurvival.build(time.numpy(), event.numpy().astype(bool), ties)
    expected = -survival.partial_likelihood(data, log_risk.numpy()).loglik
    got = survival.cox_loss(log_risk, time, event, ties=ties, reduction="sum")
    assert got.item() == pytest.approx(expected, rel=1e-10)
    mean = survival.cox_loss(log_risk, time, event, ties=ties)
    assert mean.item() == pytest.approx(expected / int(event.sum()), rel=1e-10)


@pytest.mark.parametrize("ties", ["efron", "breslow"])
def test_gradcheck(batch, ties):
    log_risk, time, event = batch
    x = log_risk.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: survival.cox_loss(v, time, event, ties=ties), (x,))


def test_order_does_not_matter(batch):
    log_risk, time, event = batch
    perm = torch.randperm(len(time), generator=torch.Generator().manual_seed(1))
    a = survival.cox_loss(log_risk, time, event)
    b = survival.cox_loss(log_risk[perm], time[perm], event[perm])
    assert a.item() == pytest.approx(b.item(), rel=1e-12)


def test_stable_for_large_log_risk(batch):
    log_risk, time, event = batch
    big = survival.cox_loss(log_risk * 0 + 800.0 + log_risk, time, event)
    assert torch.isfinite(big)
    assert big.item() == pytest.approx(survival.cox_loss(log_risk, time, event).item(), rel=1e-9)


def test_no_events_is_zero_without_nan():
    x = torch.randn(5, requires_grad=True)
    loss = survival.cox_loss(x, torch.arange(5.0), torch.zeros(5))
    loss.backward()
    assert loss.item() == 0.0 and torch.equal(x.grad, torch.zeros(5))


def test_no_ties_efron_equals_breslow():
    x = torch.randn(30, dtype=torch.float64)
    t = torch.randperm(30).double()
    e = torch.ones(30)
    assert survival.cox_loss(x, t, e, "efron").item() == pytest.approx(
        survival.cox_loss(x, t, e, "breslow").item()
    )


def test_training_a_cox_head_lowers_the_loss():
    torch.manual_seed(0)
    X = torch.randn(200, 4)
    t = torch.distributions.Exponential(torch.exp(X[:, 0] * 1.5)).sample()
    e = torch.ones(200)
    head = survival.CoxHead(4)
    opt = torch.optim.Adam(head.parameters(), lr=0.05)
    first = survival.cox_loss(head(X), t, e).item()
    for _ in range(100):
        opt.zero_grad()
        loss = survival.cox_loss(head(X), t, e)
        loss.backward()
        opt.step()
    assert loss.item() < first - 0.3
    assert head.linear.weight[0, 0] > 1.0
    ci = survival.concordance_index(t.numpy(), e.numpy(), head(X).detach().numpy())
    assert ci > 0.75


def test_bad_inputs():
    with pytest.raises(ValueError, match=r"\(N,\)"):
        survival.cox_loss(torch.zeros(3, 2), torch.ones(3), torch.ones(3))
    with pytest.raises(ValueError, match="same length"):
        survival.cox_loss(torch.zeros(3), torch.ones(2), torch.ones(3))
    with pytest.raises(ValueError, match="non-negative"):
        survival.cox_loss(torch.zeros(2), torch.tensor([1.0, -1.0]), torch.ones(2))
    with pytest.raises(ValueError, match="event must be"):
        survival.cox_loss(torch.zeros(2), torch.ones(2), torch.tensor([0, 2]))
    with pytest.raises(ValueError, match="ties"):
        survival.cox_loss(torch.zeros(2), torch.ones(2), torch.ones(2), ties="exact")
    with pytest.raises(ValueError, match=r"CoxHead expects \(N, 4\)"):
        survival.CoxHead(4)(torch.zeros(2, 3))

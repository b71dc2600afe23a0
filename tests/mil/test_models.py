"""One conformance suite for every registered MIL model."""

from __future__ import annotations

import pytest
import torch

import mil
from mil.models import MILOutput

DIM = 12


def _build(name: str, n_outputs: int, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    # TransMIL's default width (512) is its paper's; a narrower one keeps the suite fast.
    extra = {"embed_dim": 64} if name == "transmil" else {}
    return mil.create_model(name, DIM, n_outputs, **extra, **kwargs).eval()


def _bags(seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(3, 23, DIM, generator=generator)
    mask = torch.ones(3, 23, dtype=torch.bool)
    mask[1, 17:] = False
    mask[2, 5:] = False
    return x, mask


def test_registry_lists_every_family():
    assert {"abmil", "abmil_gated", "clam_sb", "clam_mb", "transmil", "dsmil", "mean", "max"} <= set(
        mil.list_models()
    )
    with pytest.raises(ValueError, match="unknown MIL model 'nope'"):
        mil.create_model("nope", DIM, 1)


@pytest.mark.parametrize("n_outputs", [1, 3])
@pytest.mark.parametrize("name", mil.list_models())
def test_shapes_and_masked_scores(name, n_outputs):
    model = _build(name, n_outputs)
    x, mask = _bags()
    out = model(x, mask)
    assert isinstance(out, MILOutput)
    assert out.logits.shape == (3, n_outputs)
    assert out.instance_scores.shape[:2] == (3, 23) and out.instance_scores.shape[2] in (1, 2, n_outputs)
    assert torch.isnan(out.instance_scores[~mask]).all()
    assert torch.isfinite(out.instance_scores[mask]).all()
    assert torch.isfinite(out.logits).all()
    assert model.spec.name == name and model.spec.in_dim == DIM


@pytest.mark.parametrize("name", mil.list_models())
def test_padding_never_changes_a_result(name):
    model = _build(name, 2)
    x, mask = _bags()
    alone = [model(x[i : i + 1, mask[i]]) for i in range(3)]
    padded = model(x, mask)
    # Garbage in the padding must not leak either.
    noisy = model(torch.where(mask[..., None], x, torch.randn_like(x) * 100), mask)
    for i in range(3):
        n = int(mask[i].sum())
        torch.testing.assert_close(padded.logits[i], alone[i].logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(noisy.logits[i], alone[i].logits[0], atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            padded.instance_scores[i, :n], alone[i].instance_scores[0], atol=1e-5, rtol=1e-4
        )


@pytest.mark.parametrize("name", mil.list_models())
def test_permutation_invariance_where_claimed(name):
    model = _build(name, 2)
    x, mask = _bags()
    order = torch.randperm(23, generator=torch.Generator().manual_seed(1))
    x1, m1 = x[:1], mask[:1]
    out, shuffled = model(x1, m1), model(x1[:, order], m1[:, order])
    if model.permutation_invariant:
        torch.testing.assert_close(out.logits, shuffled.logits, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            out.instance_scores[:, order], shuffled.instance_scores, atol=1e-5, rtol=1e-4
        )
    else:
        assert not torch.allclose(out.logits, shuffled.logits, atol=1e-6), (
            "order-dependent model ignored order"
        )


@pytest.mark.parametrize("name", mil.list_models())
def test_backward_reaches_every_used_parameter(name):
    model = _build(name, 2).train()
    x, mask = _bags()
    out = model(x, mask, instance_labels=torch.tensor([0, 1, -1]))
    loss = out.logits.square().mean()
    if out.aux_logits is not None:
        loss = loss + out.aux_logits.square().mean()
    if out.aux_loss is not None:
        assert out.aux_loss.dim() == 0 and out.aux_loss > 0
        loss = loss + out.aux_loss
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing, f"no gradient for {missing}"


@pytest.mark.parametrize("name", mil.list_models())
def test_save_load_round_trip(name, tmp_path):
    model = _build(name, 3, head="linear")
    task = mil.create_task("multiclass").fit_labels(["a", "b", "c"])
    path = mil.save_model(tmp_path / name, model, task, feature="toy", encoder="toy_encoder")
    loaded = mil.load_model(path, in_dim=DIM, encoder="toy_encoder")
    x, mask = _bags()
    torch.testing.assert_close(loaded.model(x, mask).logits, model(x, mask).logits)
    assert loaded.task.classes_ == ["a", "b", "c"]


@pytest.mark.parametrize("name", mil.list_models())
def test_deterministic_under_a_seed(name):
    x, mask = _bags()
    first, second = _build(name, 2, seed=3).train(), _build(name, 2, seed=3).train()
    torch.manual_seed(7)
    a = first(x, mask).logits
    torch.manual_seed(7)
    b = second(x, mask).logits
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(_build(name, 2, seed=4)(x, mask).logits, first.eval()(x, mask).logits)


@pytest.mark.parametrize("name", mil.list_models())
def test_cox_head_gives_one_log_risk(name):
    model = _build(name, 1, head="cox")
    x, mask = _bags()
    assert model(x, mask).logits.shape == (3, 1)
    with pytest.raises(ValueError, match="n_outputs must be 1"):
        mil.create_model(name, DIM, 2, head="cox")


@pytest.mark.parametrize("name", mil.list_models())
def test_bad_shapes_are_named(name):
    model = _build(name, 1)
    with pytest.raises(ValueError, match=rf"\(B, N, {DIM}\)"):
        model(torch.randn(2, 5, DIM + 1))
    with pytest.raises(ValueError, match=r"shape \(B, N\) = \(2, 5\)"):
        model(torch.randn(2, 5, DIM), torch.ones(2, 4, dtype=torch.bool))
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[1] = False
    with pytest.raises(ValueError, match="at least one real tile"):
        model(torch.randn(2, 5, DIM), mask)


def test_clam_instance_loss_only_in_training_with_labels():
    model = _build("clam_sb", 1, k_sample=3)
    x, mask = _bags()
    assert model(x, mask, torch.tensor([1, 0, 1])).aux_loss is None  # eval mode
    model.train()
    assert model(x, mask).aux_loss is None
    assert model(x, mask, torch.tensor([1, 0, 1])).aux_loss > 0
    assert model(x, mask, torch.tensor([-1, -1, -1])).aux_loss.item() == 0.0


def test_attention_weights_sum_to_one():
    for name in ("abmil", "abmil_gated", "clam_sb", "clam_mb"):
        x, mask = _bags()
        scores = _build(name, 2)(x, mask).instance_scores
        torch.testing.assert_close(torch.nansum(scores, dim=1), torch.ones(3, scores.shape[2]))


@pytest.mark.parametrize("name", mil.list_models())
def test_instance_scores_are_what_the_model_says(name):
    """Attention models give weights (>= 0, at most 1 over a bag); the others per-tile logits, which can be
    negative, so `mil predict` reads a model's scores by its `instance_scores_are_weights`, not by their values."""
    model = _build(name, 2)
    x, mask = _bags()
    scores = model(x, mask).instance_scores
    if model.instance_scores_are_weights:
        assert torch.nan_to_num(scores).min() >= 0 and torch.nansum(scores, dim=1).max() <= 1 + 1e-5
    else:
        assert name in ("mean", "max", "topk", "dsmil") and torch.nan_to_num(scores).min() < 0


def test_transmil_exact_attention_is_what_nystrom_converges_to():
    from mil.models.transmil import NystromAttention

    torch.manual_seed(0)
    layer = NystromAttention(32, heads=4, landmarks=16, pinv_iterations=30, dropout=0.0).eval()
    x = torch.randn(1, 11, 32)
    exact, exact_first = layer(x, return_first_row=True)  # 11 <= 16 landmarks: the exact path
    nystrom, nystrom_first = layer._nystrom(x, return_first_row=True)
    torch.testing.assert_close(exact, nystrom, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(exact_first, nystrom_first, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(exact_first.sum(dim=1), torch.ones(4))


def test_transmil_nystrom_path_keeps_padding_invariance():
    # 8 landmarks: every bag (5, 17, 23 tiles: 10 or 26 tokens with the square and the class token) takes
    # the Nystrom path, with its front padding to a multiple of 8.
    model = _build("transmil", 2, landmarks=8)
    x, mask = _bags()
    padded = model(x, mask)
    for i in range(3):
        alone = model(x[i : i + 1, mask[i]])
        torch.testing.assert_close(padded.logits[i], alone.logits[0], atol=1e-5, rtol=1e-4)
        n = int(mask[i].sum())
        torch.testing.assert_close(
            padded.instance_scores[i, :n], alone.instance_scores[0], atol=1e-5, rtol=1e-4
        )
    assert torch.isfinite(padded.instance_scores[mask]).all()


@pytest.mark.parametrize("name", mil.list_models())
def test_cumulative_head_gives_ordered_logits(name, tmp_path):
    if name == "clam_mb":
        with pytest.raises(ValueError, match="cumulative-link head needs one shared score"):
            _build(name, 3, head="cumulative")
        return
    model = _build(name, 3, head="cumulative").train()
    x, mask = _bags()
    out = model(x, mask, instance_labels=torch.tensor([0, 2, 1]))
    assert out.logits.shape == (3, 3)
    for logits in (out.logits, out.aux_logits):
        if logits is not None:  # P(grade > k) falls with k: DSMIL's max-instance stream too
            assert (logits[:, 1:] < logits[:, :-1]).all()
    task = mil.create_task("grade", levels=4, link="cumulative").fit_labels([0, 1, 2, 3])
    loaded = mil.load_model(mil.save_model(tmp_path / name, model, task), in_dim=DIM)
    torch.testing.assert_close(loaded.model(x, mask).logits, model.eval()(x, mask).logits)
    assert loaded.task.link == "cumulative"

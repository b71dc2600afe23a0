"""Each task head learns its tiny synthetic bag task in seconds; labels are parsed and bad ones listed."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mil
from tests.mil.synthetic_bags import DIM, synthetic_bags

# case -> (task, task kwargs, batch size, metric, floor on 80 held-out bags)
EXPECTED = {
    "binary": ("binary", {}, 8, "auc", 0.95),
    "multiclass": ("multiclass", {}, 8, "auc", 0.95),
    "grade": ("grade", {"levels": 4}, 8, "qwk", 0.6),
    "grade_cumulative": ("grade", {"levels": 4, "link": "cumulative"}, 8, "qwk", 0.6),
    "grade_regression": (
        "grade",
        {"levels": 4, "link": "regression"},
        8,
        "qwk",
        0.5,
    ),  # shrinks to the middle
    "mutation": ("mutation", {"targets": ["a", "b"]}, 8, "auc", 0.9),
    "survival": ("survival", {}, 16, "c_index", 0.65),
}


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_each_task_learns_its_synthetic_bags(case):
    name, kwargs, batch_size, metric, floor = EXPECTED[case]
    train, val, test = (synthetic_bags(name, n, seed) for n, seed in ((120, 0), (30, 1), (80, 2)))
    task = mil.create_task(name, **kwargs).fit_labels(train[1])
    torch.manual_seed(0)
    model = mil.create_model("abmil", DIM, task.n_outputs, embed_dim=64, **task.model_kwargs())
    config = mil.FitConfig(epochs=15, batch_size=batch_size, lr=3e-3, progress=False, seed=0)
    history = mil.fit(model, task, train, val, config)
    assert {"train_loss", "val_loss", f"val_{task.monitor}"} <= set(history.columns)
    result = task.evaluate(task.encode(test[1]), task.predict(mil.predict_logits(model, test, "cpu")))
    assert result[metric] >= floor, result
    if name == "survival":
        assert result["hazard_ratio"] > 1 and result["hazard_ratio_lower"] > 1 and result["logrank_p"] < 0.01


def test_registry():
    assert mil.list_tasks() == ["binary", "grade", "multiclass", "mutation", "survival"]
    with pytest.raises(ValueError, match="unknown MIL task"):
        mil.create_task("regression")


def test_grade_out_of_range_lists_the_rows():
    task = mil.create_task("grade", levels=6)
    with pytest.raises(ValueError, match=r"s2 \(7\).*s4 \(-1\)"):
        task.encode([0, 5, 7, 3, -1], ids=["s0", "s1", "s2", "s3", "s4"])


def test_class_never_seen_in_training():
    task = mil.create_task("multiclass").fit_labels(["luad", "lusc", "luad"])
    with pytest.raises(ValueError, match=r"training classes \['luad', 'lusc'\].*row 1 \('meso'\)"):
        task.encode(["lusc", "meso"])


def test_survival_labels_checked():
    task = mil.create_task("survival")
    with pytest.raises(
        ValueError, match=r"row 1 \(\(-1.0, 1.0\)\), row 2 \(\(nan, 0.0\)\), row 3 \(\(4.0, 2.0\)\)"
    ):
        task.encode([[3.0, 1], [-1.0, 1], [np.nan, 0], [4.0, 2]])


def test_binary_labels_checked():
    with pytest.raises(ValueError, match=r"row 2 \(2\)"):
        mil.create_task("binary").encode([0, 1, 2])


def test_mutation_masks_missing_labels():
    task = mil.create_task("mutation", targets=["tp53", "kras"])
    target = torch.tensor([[1.0, np.nan], [0.0, 1.0]])
    logits = torch.tensor([[2.0, 100.0], [-1.0, 3.0]])
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.tensor([2.0, -1.0, 3.0]), torch.tensor([1.0, 0.0, 1.0])
    )
    torch.testing.assert_close(task.loss(logits, target), expected)
    with pytest.raises(ValueError, match=r"row 0"):
        task.encode([[0.5, 1.0]])


def test_mutation_folds_spread_the_positives_of_every_target_not_only_the_first():
    # As `mil train --target cancer mut_a mut_b`: cancer (known on all) first, mutations known on cancer slides,
    # 4 positives each; 3 folds must each hold a positive of every target (else the fold cannot be scored).
    from mil.train import _grouped_split

    task = mil.create_task("mutation", targets=["cancer", "mut_a", "mut_b"])
    target = np.full((24, 3), np.nan)
    target[:, 0] = np.arange(24) < 12
    target[:12, 1:] = 0
    target[[0, 3, 6, 9], 1] = 1
    target[[1, 4, 7, 10], 2] = 1
    groups = np.arange(24)

    def every_fold_scored(strata, seed):
        return all(
            task.fold_problem(target[test]) is None for _, test in _grouped_split(3, seed, strata, groups)
        )

    strata = task.strata(target)
    assert strata.shape == (24,)
    assert all(every_fold_scored(strata, seed) for seed in range(10))
    # By the first column alone (the former strata), some seeds leave a fold without a mutation's positive.
    assert not all(every_fold_scored(target[:, 0].astype(int), seed) for seed in range(10))
    # A stratum of one slide (here the only positive of mut_a) joins the slides without a positive, so that a
    # stratified train/validation split (at least 2 per stratum) still works.
    target[[3, 6, 9], 1] = 0
    assert np.unique(task.strata(target), return_counts=True)[1].min() >= 2


def test_corn_probabilities():
    task = mil.create_task("grade", levels=["G1", "G2", "G3"])
    p = task.predict(np.array([[5.0, 5.0], [-5.0, 0.0], [5.0, -5.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert task.decide(p).tolist() == ["G3", "G1", "G2"]
    # The CORN loss of the second task only sees slides that reached grade 1.
    logits = torch.tensor([[0.0, 50.0]], requires_grad=True)
    task.loss(logits, torch.tensor([0.0])).backward()
    assert logits.grad[0, 1] == 0


def test_binary_threshold_chosen_on_validation():
    task = mil.create_task("binary")
    task.finalize(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))
    assert 0.2 < task.threshold_ <= 0.3
    assert task.metrics(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.4]))["balanced_accuracy"] == 1.0


def test_balanced_class_weight():
    task = mil.create_task("binary", class_weight="balanced").fit_labels([0, 0, 0, 1])
    assert task.pos_weight_ == 3.0


def test_state_round_trip():
    task = mil.create_task("multiclass", class_weight="balanced").fit_labels(["b", "a", "a"])
    again = mil.tasks.task_from_state(task.state())
    assert again.classes_ == ["a", "b"] and again.weight_ == task.weight_


def test_cumulative_link_loss_is_the_grade_likelihood():
    task = mil.create_task("grade", levels=["G1", "G2", "G3", "G4"], link="cumulative")
    assert task.model_kwargs() == {"head": "cumulative"} and task.n_outputs == 3
    logits = torch.tensor([[2.0, 0.5, -1.0], [1.0, -3.0, -3.5], [0.3, 0.2, -4.0], [9.0, 8.0, 7.0]])
    target = torch.tensor([0.0, 1.0, 2.0, 3.0])
    above = torch.cat([torch.ones(4, 1), torch.sigmoid(logits.double()), torch.zeros(4, 1)], dim=1)
    p = above[:, :-1] - above[:, 1:]  # P(grade = k) = P(grade > k - 1) - P(grade > k)
    expected = -torch.log(p[torch.arange(4), target.long()]).mean()
    torch.testing.assert_close(task.loss(logits, target).double(), expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(task.predict(logits.numpy()), p.numpy(), rtol=1e-6)
    # The grade is the number of P(grade > k) above 0.5.
    assert task.decide(task.predict(logits.numpy())).tolist() == ["G3", "G2", "G3", "G4"]
    with pytest.raises(ValueError, match="head='cumulative'"):
        task.loss(torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([1.0]))
    with pytest.raises(ValueError, match="link must be one of"):
        mil.create_task("grade", link="probit")
    again = mil.tasks.task_from_state(task.state())
    assert again.link == "cumulative" and again.levels == task.levels


def test_grade_regression_rounds_the_position_to_a_level():
    task = mil.create_task("grade", levels=["G1", "G2", "G3", "G4"], link="regression")
    assert task.n_outputs == 1 and task.model_kwargs() == {}
    p = task.predict(np.array([[-3.0], [0.4], [0.6], [2.45], [9.0]]))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    assert (p >= 0).all()
    assert task.decide(p).tolist() == ["G1", "G1", "G2", "G3", "G4"]
    # The loss pulls the position towards the grade's index: zero there, and growing away from it.
    assert float(task.loss(torch.tensor([[2.0]]), torch.tensor([2.0]))) == 0.0
    assert float(task.loss(torch.tensor([[0.0]]), torch.tensor([3.0]))) > float(
        task.loss(torch.tensor([[2.0]]), torch.tensor([3.0]))
    )
    assert mil.tasks.task_from_state(task.state()).link == "regression"

import numpy as np
import pytest

from nuclei.metrics import aggregate, error_counts, merged_predictions, score

TRUE = np.array(
    [
        [1, 1, 0, 0],
        [1, 1, 0, 0],
        [0, 0, 2, 2],
        [0, 0, 2, 2],
    ]
)
PRED = np.array(
    [
        [5, 5, 0, 4],
        [5, 0, 0, 0],
        [0, 0, 0, 3],
        [0, 0, 0, 3],
    ]
)


def test_hand_computed_values():
    s = score(TRUE, PRED)
    # true 1 ~ pred 5: IoU 3/4 (match); true 2 ~ pred 3: IoU 2/4 = 0.5, not > 0.5 (no match); pred 4 unmatched.
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == pytest.approx(1 / 2)
    assert s.f1 == pytest.approx(2 / (2 + 2 + 1))
    assert s.sq == pytest.approx(0.75)
    assert s.pq == pytest.approx(0.4 * 0.75)
    assert s.dice == pytest.approx(2 * 5 / (8 + 6))
    # AJI: (3 + 2) / (4 + 4 + 1 unused pred pixel)
    assert s.aji == pytest.approx(5 / 9)


def test_perfect_and_empty():
    s = score(TRUE, TRUE * 7)  # ids need not agree
    assert (s.f1, s.dice, s.aji, s.pq) == (1.0, 1.0, 1.0, 1.0)
    empty = score(TRUE, np.zeros_like(TRUE))
    assert (empty.tp, empty.fn, empty.fp) == (0, 2, 0)
    assert empty.f1 == 0.0 and empty.aji == 0.0 and empty.pq == 0.0
    both = score(np.zeros_like(TRUE), np.zeros_like(TRUE))
    assert both.f1 == 1.0 and both.aji == 1.0


def test_aggregate_pools_counts():
    a, b = score(TRUE, PRED), score(TRUE, TRUE)
    total = aggregate([a, b])
    assert (total.tp, total.fp, total.fn) == (3, 2, 1)
    assert total.aji == pytest.approx((5 + 8) / (9 + 8))
    assert total.f1 == pytest.approx(6 / (6 + 2 + 1))


def test_bad_input():
    with pytest.raises(ValueError, match="same"):
        score(TRUE, PRED[:3])
    with pytest.raises(ValueError, match="integer"):
        score(TRUE.astype(float), PRED)
    with pytest.raises(ValueError, match="at least one"):
        aggregate([])


def test_error_counts_by_kind():
    true = np.zeros((6, 12), int)
    true[0:2, 0:2], true[0:2, 2:4] = 1, 2  # two touching nuclei ...
    true[3:5, 0:4] = 3  # ... one nucleus ...
    true[0:2, 6:8] = 4  # ... one the model does not see
    pred = np.zeros_like(true)
    pred[0:2, 0:4] = 7  # ... found as one
    pred[3:5, 0:2], pred[3:5, 2:4] = 8, 9  # ... found as two halves
    pred[4:6, 9:12] = 5  # on background
    e = error_counts(true, pred)
    assert e == {"true": 4, "pred": 4, "merged": 2, "split": 1, "missed": 1, "false_positive": 1}
    assert merged_predictions(true, pred).tolist() == [7]
    assert error_counts(true, np.zeros_like(true))["missed"] == 4
    assert error_counts(true, true)["merged"] == error_counts(true, true)["split"] == 0


def test_a_nucleus_split_into_small_pieces_is_split_not_also_missed():
    true = np.zeros((10, 10), int)
    true[:, :] = 1  # 100 px
    pred = np.zeros_like(true)
    pred.flat[:21], pred.flat[50:71] = 2, 3  # two predictions of 21 px each: 42% of it, no holder
    e = error_counts(true, pred)
    assert (e["split"], e["missed"]) == (1, 0)

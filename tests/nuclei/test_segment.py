import numpy as np
import pytest

import nuclei
from nuclei.datasets import synthetic_tiles
from nuclei.postprocess import instances_from_maps
from nuclei.targets import hv_maps
from wsi.synthetic.cells import render_cells

TILE = synthetic_tiles(1, size=128, seed=11)


def test_postprocess_recovers_instances_from_true_maps():
    tiles = synthetic_tiles(3, size=128, seed=21)
    scores = []
    for inst in tiles.instances:
        pred = instances_from_maps((inst > 0).astype(np.float32), hv_maps(inst))
        scores.append(nuclei.metrics.score(inst, pred))
    total = nuclei.metrics.aggregate(scores)
    assert total.f1 > 0.85 and total.pq > 0.75  # touching nuclei are split by the HV maps alone


def test_hv_maps_range_and_sign():
    inst = np.zeros((20, 20), np.int32)
    inst[5:10, 2:12] = 1
    hv = hv_maps(inst)
    assert hv.shape == (2, 20, 20) and hv.min() == -1 and hv.max() == 1
    assert hv[0, 7, 2] == -1 and hv[0, 7, 11] == 1 and hv[1, 5, 5] == -1 and hv[1, 9, 5] == 1
    assert (hv[:, inst == 0] == 0).all()


def test_segment_returns_int32_labels_at_input_size(tiny_model):
    img = TILE.images[0]
    labels = nuclei.segment(img, mpp=0.5, model=tiny_model, device="cpu")
    assert labels.shape == img.shape[:2] and labels.dtype == np.int32 and labels.min() == 0
    # at another resolution the labels come back at the input's size
    labels = nuclei.segment(img[:100, :90], mpp=0.4, model=tiny_model, device="cpu")
    assert labels.shape == (100, 90)


def test_bad_images(tiny_model):
    img = TILE.images[0]
    with pytest.raises(ValueError, match="grayscale"):
        nuclei.segment(img.mean(-1), mpp=0.5, model=tiny_model)
    with pytest.raises(ValueError, match="smaller than its field of view"):
        nuclei.segment(img[:20, :20], mpp=0.5, model=tiny_model)
    with pytest.raises(ValueError, match="mpp must be positive"):
        nuclei.segment(img, mpp=0, model=tiny_model)
    with pytest.raises(ValueError, match="finite and in"):
        nuclei.segment(img.astype(float) * 3, mpp=0.5, model=tiny_model)
    # RGBA (opaque) and float [0, 1] are converted: same result as the uint8 RGB image
    ref = nuclei.segment(img, mpp=0.5, model=tiny_model)
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
    np.testing.assert_array_equal(nuclei.segment(rgba, mpp=0.5, model=tiny_model), ref)
    np.testing.assert_array_equal(nuclei.segment(img / 255.0, mpp=0.5, model=tiny_model), ref)


def test_far_mpp_warns(tiny_model):
    with pytest.warns(UserWarning, match="far from the model's 0.5 um/px"):
        nuclei.segment(np.full((400, 400, 3), 200, np.uint8), mpp=0.2, model=tiny_model)
    with pytest.warns(UserWarning, match="results will be poor"):
        nuclei.segment(np.full((40, 40, 3), 200, np.uint8), mpp=4.0, model=tiny_model)


def test_classical_baseline_finds_synthetic_nuclei():
    # Sparse stroma, what a threshold-and-watershed baseline is for (crowded scenes defeat it: F1 0.14 on one)
    fields = [
        render_cells((192, 192), 0.5, np.random.default_rng(31), scene) for scene in ("loose", "stroma")
    ]
    scores = [nuclei.metrics.score(f.instances, nuclei.segment_classical(f.image, mpp=0.5)) for f in fields]
    total = nuclei.metrics.aggregate(scores)
    assert total.dice > 0.7 and total.f1 > 0.6  # measured 0.92 / 0.89
    with pytest.raises(ValueError, match="grayscale"):
        nuclei.segment_classical(fields[0].image[..., 0], mpp=0.5)

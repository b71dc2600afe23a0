"""The shipped default weights: they load, and find nuclei on held-out synthetic and real tiles."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import nuclei
from nuclei.datasets import rasterize_polygons, read_geojson_polygons, synthetic_tiles
from nuclei.segment import DEFAULT_WEIGHTS

DATA = Path(__file__).resolve().parents[1] / "data" / "nuclei"
HGSC_MPP = 0.45  # estimated from nucleus sizes, see tests/data/nuclei/README.md
# Floors a little under what the shipped weights measured (benchmarks/RESULTS.md): regression guards, not goals.
MIN_SYNTHETIC_F1 = 0.65  # stage 8 measured 1.0 on this tile, stage 6 0.692 (11 nuclei: one moves F1 by ~0.08)
MIN_HGSC_RECALL = (
    0.45  # stage 8 measured 0.530 (F1 0.423: far below the 0.75 target, above the classical 0.323)
)


def test_shipped_weights_are_small_and_documented():
    weights = DEFAULT_WEIGHTS / "model.safetensors"
    assert weights.stat().st_size < 20 * 2**20
    meta = json.loads((DEFAULT_WEIGHTS / "config.json").read_text())
    assert meta["provenance"]["command"].startswith("slidestream nuclei train")
    assert "val" in meta["provenance"]


def test_shipped_weights_find_nuclei_on_a_held_out_synthetic_tile():
    tile = synthetic_tiles(1, size=256, seed=20_001)  # seeds >= 20,000 are never trained or validated on
    labels = nuclei.segment(tile.images[0], mpp=0.5, device="cpu")
    s = nuclei.metrics.score(tile.instances[0], labels)
    assert s.f1 >= MIN_SYNTHETIC_F1, s.as_dict()


@pytest.mark.slow
def test_shipped_weights_on_the_real_hgsc_crop():
    """Evaluation only (never trained or tuned on): the figures README and RESULTS.md report."""
    image = np.asarray(Image.open(DATA / "hgsc_stromal_he.jpg").convert("RGB"))
    truth = rasterize_polygons(
        read_geojson_polygons(DATA / "hgsc_stromal_he.nuclei.geojson"), image.shape[:2]
    )
    cnn = nuclei.metrics.score(truth, nuclei.segment(image, mpp=HGSC_MPP, device="cpu"))
    classical = nuclei.metrics.score(truth, nuclei.segment_classical(image, mpp=HGSC_MPP))
    # The shipped CNN still over-detects real stroma (277 false positives against 233 true with the shipped thresholds): see README, Nuclei.
    assert cnn.recall >= MIN_HGSC_RECALL, cnn.as_dict()
    assert classical.f1 > 0.25, classical.as_dict()

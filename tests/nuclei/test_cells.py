import numpy as np
import pytest
from scipy import ndimage as ndi

from nuclei.datasets import synthetic_tiles
from wsi.synthetic.cells import CELL_TYPES, render_cells


@pytest.mark.parametrize("scene", ["stroma", "nests", "inflamed", "mixed", "loose"])
def test_field_masks_are_consistent(scene):
    f = render_cells((96, 128), mpp=0.5, rng=np.random.default_rng(3), scene=scene)
    assert f.image.shape == (96, 128, 3) and f.image.dtype == np.uint8
    assert f.instances.shape == (96, 128) and f.instances.dtype == np.int32
    n = f.instances.max()
    assert n > 0
    assert set(np.unique(f.instances)) == set(range(n + 1))  # numbered 1..N
    assert ((f.types > 0) == (f.instances > 0)).all()
    assert f.types.max() < len(CELL_TYPES)
    for lab, sl in enumerate(ndi.find_objects(f.instances), start=1):  # each nucleus is one piece
        assert ndi.label(f.instances[sl] == lab)[1] == 1
    # nuclei are darker (hematoxylin) than the rest of the field
    gray = f.image.mean(-1)
    assert gray[f.instances > 0].mean() < gray[f.instances == 0].mean() - 15


def test_same_seed_same_tiles_and_types_vary():
    a, b = synthetic_tiles(3, size=64, seed=5), synthetic_tiles(3, size=64, seed=5)
    for x, y in zip(a.images, b.images, strict=True):
        np.testing.assert_array_equal(x, y)
    many = synthetic_tiles(8, size=96, seed=1)
    seen = set(np.unique(np.concatenate([t.ravel() for t in many.types])))
    assert {2, 3} <= seen  # lymphocytes and fibroblasts at least


def test_bad_arguments():
    with pytest.raises(ValueError, match="scene"):
        render_cells((64, 64), scene="liver")
    with pytest.raises(ValueError, match="size"):
        render_cells((8, 64))
    with pytest.raises(ValueError, match="mpp"):
        render_cells((64, 64), mpp=20)

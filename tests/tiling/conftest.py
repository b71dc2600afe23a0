from __future__ import annotations

import numpy as np
import pytest
import tifffile


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory):
    """A 1024 x 768 tiled TIFF of empty glass with a 0.5 um/px resolution tag."""
    path = tmp_path_factory.mktemp("blank") / "blank.tiff"
    image = np.full((768, 1024, 3), 243, np.uint8)
    image += np.random.default_rng(0).integers(0, 4, image.shape, dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


@pytest.fixture(scope="session")
def plain_synthetic(tmp_path_factory):
    """A 3072 x 2560 synthetic slide without tumor, other seed, 256 px tiles."""
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("plain")
    return write_slide(folder / "plain.svs", SyntheticSpec(3072, 2560, mpp=0.25, seed=21), progress=False)

from __future__ import annotations

import pytest

from tiling import tile_slide


@pytest.fixture(scope="session")
def small_store(synthetic_slide, tmp_path_factory):
    """Patch store of the synthetic slide: 64 px tiles at 1.0 um/px (level 1), all tissue tiles."""
    folder = tmp_path_factory.mktemp("store") / "synthetic"
    return tile_slide(synthetic_slide.path, folder / "patches.zarr", size=64, mpp=1.0, min_tissue=0.5)

from __future__ import annotations

import pytest

from tests.conftest import write_blank_slide


@pytest.fixture(scope="session")
def blank_slide(tmp_path_factory):
    """A 1024 x 768 tiled TIFF of empty glass with a 0.5 um/px resolution tag."""
    return write_blank_slide(tmp_path_factory.mktemp("blank") / "blank.tiff")


@pytest.fixture(scope="session")
def plain_synthetic(tmp_path_factory):
    """A 3072 x 2560 synthetic slide without tumor, other seed, 256 px tiles."""
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("plain")
    return write_slide(folder / "plain.svs", SyntheticSpec(3072, 2560, mpp=0.25, seed=21), progress=False)

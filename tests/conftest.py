"""Shared fixtures: real slides in tests/data and small synthetic slides written once per session."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub lookup must fail fast, never download

DATA = Path(__file__).parent / "data"
CMU = DATA / "CMU-1-Small-Region.svs"
OPENSLIDE_DATA = DATA / "openslide"


def openslide_rgb(path: Path, location, level: int, size) -> np.ndarray:
    """Raw openslide's read_region, transparency composited on white: the reference every reader must match."""
    import openslide

    with openslide.OpenSlide(str(path)) as raw:
        rgba = np.asarray(raw.read_region(location, level, size).convert("RGBA"))
    alpha = rgba[..., 3:4].astype(np.uint16)
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def write_blank_slide(path: Path, width: int = 1024, height: int = 768) -> Path:
    """A tiled TIFF of empty glass (grey 243 with a little noise) with a 0.5 um/px resolution tag: no tissue."""
    import tifffile

    image = np.full((height, width, 3), 243, np.uint8)
    image += np.random.default_rng(0).integers(0, 4, image.shape, dtype=np.uint8)
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tests run tiny torch models (8-dim MIL bags, small CNNs): one intra-op thread is several times faster
    than two, whose synchronisation dominates tensors this small (and collapses when the other core is busy)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def cmu_path() -> Path:
    return CMU


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory):
    """A 2560 x 2048, two-level synthetic slide at 0.25 mpp with tumor, tiles of 128 px."""
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("synthetic")
    spec = SyntheticSpec(2560, 2048, mpp=0.25, seed=7, tumor=True)
    return write_slide(folder / "synthetic.svs", spec, tile_size=128, progress=False)

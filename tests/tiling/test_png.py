"""tiling.png: fast PNG files that any reader decodes to the very pixels given."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tiling.png import encode_png, write_png


@pytest.mark.parametrize("shape", [(1, 1, 3), (1, 9), (7, 1, 3), (37, 53, 3), (64, 48)])
def test_pillow_decodes_the_same_pixels(shape):
    rng = np.random.default_rng(sum(shape))
    image = rng.integers(0, 256, shape, dtype=np.uint8)
    image[: shape[0] // 2] = 255  # runs, and differences that wrap around 256 under the Up filter
    decoded = Image.open(io.BytesIO(encode_png(image)))
    assert decoded.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(decoded), image)


def test_a_picture_is_smaller_than_its_pixels_and_written_to_a_path_or_a_file(tmp_path):
    yy, xx = np.mgrid[:200, :300]
    image = np.stack([xx % 256, yy % 256, (xx + yy) % 256], axis=-1).astype(np.uint8)
    write_png(tmp_path / "a.png", image)
    with open(tmp_path / "b.png", "wb") as f:
        write_png(f, image)
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert (tmp_path / "a.png").stat().st_size < image.nbytes / 10
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "a.png")), image)


@pytest.mark.parametrize("bad", [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4), np.uint16), np.zeros((0, 4, 3), np.uint8),
                                 np.zeros(5, np.uint8)])  # fmt: skip
def test_other_arrays_are_refused_naming_the_shape(bad):
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, 3\) uint8"):
        encode_png(bad)

"""Pictures of a tiled slide: the figure thumbnail (tiles, outline with holes, ROI, scale bar, bands), the tissue
mask and the stitch, on small arrays whose every drawn pixel is known."""

from __future__ import annotations

import numpy as np
import pytest
import shapely
from shapely.geometry import Polygon, box

from tiling.thumbnail import (
    ROI_OUTLINE,
    TILE_FILL,
    TISSUE_OUTLINE,
    Overlay,
    draw_thumbnail,
    stitch_image,
    tissue_mask_image,
)

PINK = (230, 150, 200)
DOWNSAMPLE = 16.0  # level-0 px per image px
SHAPE = (240, 320)  # (H, W) of the slide image: a 5120 x 3840 level-0 slide


def _slide() -> np.ndarray:
    image = np.full((*SHAPE, 3), 245, np.uint8)
    image[40:200, 40:280] = PINK
    return image


# Level-0: tissue with a hole, a ROI, and two tiles of 512 level-0 px (32 image px).
TISSUE = Polygon([(640, 640), (4480, 640), (4480, 3200), (640, 3200)],
                 [[(2560, 1280), (3840, 1280), (3840, 2560), (2560, 2560)]])  # fmt: skip
ROI = box(800, 800, 2400, 3000)
COORDS = np.array([[960, 960], [1600, 1600]])


def _composite(colour, rgba) -> np.ndarray:
    a = rgba[3] / 255
    return np.asarray(colour) * (1 - a) + np.asarray(rgba[:3]) * a


def _near(image: np.ndarray, colour, tol: float = 2) -> np.ndarray:
    return (np.abs(image.astype(float) - np.asarray(colour, float)) <= tol).all(axis=-1)


def test_thumbnail_draws_tiles_outline_with_holes_roi_and_scale_bar():
    overlay = Overlay(coords=COORDS, extent=512, tissue=TISSUE, roi=ROI, slide_mpp=0.5, title="slide-7",
                      subtitle="2 tiles")  # fmt: skip
    drawn = draw_thumbnail(_slide(), DOWNSAMPLE, overlay, min_size=0)
    x0, y0, x1, y1 = drawn.box
    assert (x1 - x0, y1 - y0) == (SHAPE[1], SHAPE[0]) and drawn.scale == pytest.approx(1 / DOWNSAMPLE)
    assert y0 > 20 and drawn.image.shape[0] > y1 + 10  # a title band above, a legend band below
    slide = drawn.image[y0:y1, x0:x1].astype(int)
    # Inside a tile (away from its edge): the tissue under a translucent green fill.
    for x, y in COORDS / DOWNSAMPLE:
        inner = slide[int(y) + 4 : int(y) + 28, int(x) + 4 : int(x) + 28]
        assert np.abs(inner - _composite(PINK, TILE_FILL)).max() <= 1.5
    assert TILE_FILL[3] < 128  # translucent: the stain stays visible
    # The outer ring and the hole's ring of the tissue are drawn in the outline colour.
    for ring in [TISSUE.exterior, *TISSUE.interiors]:
        for px, py in shapely.get_coordinates(ring.segmentize(200)) / DOWNSAMPLE:
            if py > SHAPE[0] - 40 and px < 120:
                continue  # under the scale bar's plate
            patch = slide[max(0, int(py) - 1) : int(py) + 2, max(0, int(px) - 1) : int(px) + 2]
            assert _near(patch, TISSUE_OUTLINE[:3]).any(), (px, py)
    # The ROI's ring, in the ROI colour.
    ring = shapely.get_coordinates(ROI.exterior.segmentize(200)) / DOWNSAMPLE
    hits = [_near(slide[int(py) - 1 : int(py) + 2, int(px) - 1 : int(px) + 2], ROI_OUTLINE[:3]).any()
            for px, py in ring]  # fmt: skip
    assert np.mean(hits) > 0.9
    # Inside the hole nothing is drawn: the slide's own pixels.
    assert (slide[100:140, 180:220] == PINK).all()
    # The scale bar: a black run of a round length in mm near a fifth of the slide's width (2.56 mm), here
    # 0.5 mm = 1,000 level-0 px = 62.5 image px, on the bottom rows (below the tissue's lower edge).
    runs = _near(slide[-20:], (0, 0, 0), tol=0).sum(axis=1)
    assert runs.max() == pytest.approx(62.5, abs=1.5)


def test_without_mpp_there_is_no_scale_bar_and_the_legend_says_so():
    plain = draw_thumbnail(_slide(), DOWNSAMPLE, Overlay(coords=COORDS, extent=512), min_size=0)
    with_bar = draw_thumbnail(
        _slide(), DOWNSAMPLE, Overlay(coords=COORDS, extent=512, slide_mpp=0.5), min_size=0
    )
    x0, y0, x1, y1 = plain.box
    assert not _near(plain.image[y0:y1, x0:x1], (0, 0, 0), tol=0).any()
    assert _near(with_bar.image[y0:y1, x0:x1], (0, 0, 0), tol=0).sum() > 100
    # The legend of the mpp-less figure has one more entry: its band holds more text pixels.
    legend = [(f.image[f.box[3] :] < 128).all(axis=-1).sum() for f in (plain, with_bar)]
    assert legend[0] > legend[1]


def test_a_small_image_is_enlarged_for_a_legible_figure():
    drawn = draw_thumbnail(_slide(), DOWNSAMPLE, Overlay(coords=COORDS, extent=512, title="t"), min_size=800)
    x0, y0, x1, y1 = drawn.box
    assert x1 - x0 == 800 and drawn.scale == pytest.approx(800 / (SHAPE[1] * DOWNSAMPLE))


def test_bad_input_is_refused_with_the_expected_shape():
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8"):
        draw_thumbnail(np.zeros(SHAPE, np.uint8), DOWNSAMPLE, Overlay())
    with pytest.raises(ValueError, match=r"coords must be \(N, 2\)"):
        draw_thumbnail(_slide(), DOWNSAMPLE, Overlay(coords=np.zeros((3, 3)), extent=10))
    with pytest.raises(ValueError, match="downsample must be positive"):
        draw_thumbnail(_slide(), 0, Overlay())


def test_tissue_mask_has_the_holes_as_background():
    mask = tissue_mask_image(SHAPE, DOWNSAMPLE, TISSUE)
    assert mask.shape == SHAPE and mask.dtype == np.uint8
    assert mask[60, 60] == 255 and mask[120, 200] == 0 and mask[10, 10] == 0  # tissue, hole, glass
    expected = TISSUE.area / DOWNSAMPLE**2
    assert (mask == 255).sum() == pytest.approx(expected, rel=0.03)
    assert not tissue_mask_image(SHAPE, DOWNSAMPLE, Polygon()).any()


def test_stitch_puts_each_tile_shrunk_at_its_place_on_black():
    patches = np.zeros((2, 64, 64, 3), np.uint8)
    patches[0] = (200, 30, 30)
    patches[1, :32] = (30, 30, 200)  # top half blue, bottom half black: the shrink keeps the layout
    stitch = stitch_image(SHAPE, DOWNSAMPLE, COORDS, 512, patches=patches, rows=1)
    assert (stitch[60:92, 60:92] == (200, 30, 30)).all()  # 960 / 16 = 60, 512 / 16 = 32 px
    assert (stitch[100:116, 100:132] == (30, 30, 200)).all() and (stitch[116:132, 100:132] == 0).all()
    outside = np.ones(SHAPE, bool)
    outside[60:92, 60:92] = outside[100:132, 100:132] = False
    assert (stitch[outside] == 0).all()
    # A coords-only store: the boxes come from the slide image.
    image = _slide()
    from_image = stitch_image(SHAPE, DOWNSAMPLE, COORDS, 512, fallback=image)
    assert (from_image[60:92, 60:92] == image[60:92, 60:92]).all() and (from_image[outside] == 0).all()
    # A tile past the border is cut at it.
    edge = stitch_image(SHAPE, DOWNSAMPLE, np.array([[5000, 3700]]), 512, patches=patches[:1])
    assert (edge[231:, 313:] == (200, 30, 30)).all()

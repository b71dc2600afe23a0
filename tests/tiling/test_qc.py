"""Tile quality control: blur (variance of the Laplacian) and pen marks on synthetic tiles with drawn strokes and
blur, no false alarm on the real CMU slide, and `tile_slide(qc=...)` dropping flagged tiles with counts."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from PIL import Image, ImageDraw
from scipy import ndimage

import tiling
import wsi
from tiling.qc import QCParams, flag_tiles, measure_tiles, pen_fraction, variance_of_laplacian
from wsi.synthetic import SyntheticSpec
from wsi.synthetic.content import render_region

INKS = {"blue": (30, 70, 190), "green": (40, 150, 80), "black": (25, 25, 30)}


def _blurred(image: np.ndarray, sigma: float) -> np.ndarray:
    return np.stack([ndimage.gaussian_filter(image[..., c], sigma) for c in range(3)], axis=-1)


def _stroke(tile: np.ndarray, colour, width: int) -> np.ndarray:
    """A marker stroke drawn across the tile, with the ink's own texture (pixel noise)."""
    image = Image.fromarray(tile.copy())
    ImageDraw.Draw(image).line([(0, 40), (255, 200)], fill=colour, width=width)
    out = np.asarray(image).astype(np.int16)
    ink = (out == colour).all(axis=-1)
    noise = np.random.default_rng(0).integers(-12, 13, out.shape)
    out[ink] += noise[ink]
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def clean_tiles() -> np.ndarray:
    """256 px tissue tiles of two synthetic slides at 0.5 and 1 um/px."""
    tiles = []
    for seed in (3, 4):
        spec = SyntheticSpec(8192, 8192, mpp=0.25, seed=seed, tumor=seed == 4)
        for downsample in (2, 4):
            for x, y in [(2000, 2000), (4000, 3000), (3000, 5000)]:
                tile, _ = render_region(spec, (x, y), (256, 256), downsample=downsample)
                if (tile.min(axis=-1) < 215).mean() > 0.6:  # mostly tissue
                    tiles.append(tile)
    assert len(tiles) >= 6
    return np.stack(tiles)


def test_sharp_tissue_passes_and_blur_is_flagged(clean_tiles):
    params = QCParams()
    sharp = variance_of_laplacian(clean_tiles)
    assert (sharp > params.min_blur).all(), sharp
    for sigma in (2.0, 3.0):
        blurred = variance_of_laplacian(np.stack([_blurred(t, sigma) for t in clean_tiles]))
        assert (blurred < params.min_blur).all(), (sigma, blurred)
        assert (blurred < sharp / 5).all()


@pytest.mark.parametrize("ink", sorted(INKS))
def test_pen_strokes_are_flagged_and_clean_tissue_is_not(clean_tiles, ink):
    params = QCParams()
    assert (pen_fraction(clean_tiles) <= params.max_pen).all()
    marked = np.stack([_stroke(t, INKS[ink], 40) for t in clean_tiles])
    fraction = pen_fraction(marked)
    assert (fraction > params.max_pen).all(), fraction
    flags = flag_tiles(measure_tiles(marked, ("blur", "pen")))
    assert flags["pen"].all() and not flags["blur"].any()  # ink is sharp: only the pen check fires


def test_a_thin_line_is_not_a_pen_mark(clean_tiles):
    marked = np.stack([_stroke(t, INKS["blue"], 3) for t in clean_tiles])
    assert (pen_fraction(marked) <= QCParams().max_pen).all()


def test_real_slide_has_no_flagged_tile(cmu_path):
    """The CMU crop has teal-stained fibres and dark nuclei: neither is ink, and it is in focus."""
    with wsi.open_slide(cmu_path) as slide:
        grid = tiling.TileGrid.from_slide(slide, size=256, mpp=0.5, min_tissue=0.5)
        tiles = tiling.TileReader(slide.path, grid.spec).read_many(grid.coords)
    flags = flag_tiles(measure_tiles(tiles, ("blur", "pen")))
    assert len(tiles) > 30
    assert not flags["blur"].any() and not flags["pen"].any()


def test_measures_check_their_input():
    with pytest.raises(ValueError, match=r"\(N, S, S, 3\)"):
        variance_of_laplacian(np.zeros((4, 16, 16), np.uint8))
    with pytest.raises(ValueError, match="unknown tile check.*'focus'"):
        measure_tiles(np.zeros((1, 16, 16, 3), np.uint8), ("focus",))
    with pytest.raises(ValueError, match="qc must name checks"):
        tiling.TilingConfig(qc=("blur", "focus"))
    assert tiling.TilingConfig(qc=("pen", "blur", "pen")).qc == ("blur", "pen")


# Level-0 x0, y0, x1, y1 of the slide below (0.5 um/px). The ink patch is small enough for tissue detection to
# fill it as a hole (tissue detection rejects only large marks): tile QC is what finds it.
PEN_BOX = (128, 128, 448, 384)
BLUR_BOX = (832, 64, 1472, 448)


@pytest.fixture(scope="module")
def marked_slide(tmp_path_factory):
    """A 1536 x 1024 tiled TIFF at 0.5 um/px of synthetic tissue with a blue marker patch and a blurred patch."""
    image, _ = render_region(
        SyntheticSpec(4096, 3072, mpp=0.25, seed=5), (0, 0), (1536, 1024), downsample=2.0
    )
    image = image.copy()
    x0, y0, x1, y1 = BLUR_BOX
    image[y0:y1, x0:x1] = _blurred(image[y0:y1, x0:x1], 3.0)
    x0, y0, x1, y1 = PEN_BOX
    noise = np.random.default_rng(1).integers(-10, 11, (y1 - y0, x1 - x0, 3))
    image[y0:y1, x0:x1] = np.clip(np.array(INKS["blue"]) + noise, 0, 255)
    path = tmp_path_factory.mktemp("marked") / "marked.tiff"
    tifffile.imwrite(path, image, tile=(256, 256), photometric="rgb", resolution=(1e4 / 0.5, 1e4 / 0.5),
                     resolutionunit="CENTIMETER")  # fmt: skip
    return path


def _inside(coords: np.ndarray, box, extent: float) -> np.ndarray:
    x0, y0, x1, y1 = box
    return (
        (coords[:, 0] >= x0)
        & (coords[:, 1] >= y0)
        & (coords[:, 0] + extent <= x1)
        & (coords[:, 1] + extent <= y1)
    )


def test_tile_slide_drops_flagged_tiles_and_keeps_the_measures(marked_slide, tmp_path, monkeypatch):
    config = tiling.TilingConfig(size=128, mpp=0.5, min_tissue=0.5, shard_tiles=16)
    plain = tiling.tile_slide(marked_slide, tmp_path / "plain.zarr", config)
    readers = []
    make = tiling.engine.TileReader
    monkeypatch.setattr(
        tiling.engine, "TileReader", lambda *a, **k: readers.append(make(*a, **k)) or readers[-1]
    )
    checked = tiling.tile_slide(marked_slide, tmp_path / "qc.zarr", config, qc=("blur", "pen"))
    assert len(readers) == 1  # the quality checks and the tiles share one reader (its checks run once)
    qc = checked.attrs["qc"]
    assert qc["tiles_measured"] == len(plain)
    assert len(checked) == len(plain) - qc["dropped_total"]
    coords = plain.coords
    in_pen, in_blur = _inside(coords, PEN_BOX, 128), _inside(coords, BLUR_BOX, 128)
    assert in_pen.sum() >= 4 and in_blur.sum() >= 6
    assert qc["dropped"]["pen"] >= in_pen.sum() and qc["dropped"]["blur"] >= in_blur.sum()
    kept = {tuple(c) for c in checked.coords}
    assert not kept & {tuple(c) for c in coords[in_pen | in_blur]}  # every tile inside a mark is gone
    # Tissue tiles well away from both marks stay.
    away = (coords[:, 1] >= 576) & (plain.tissue > 0.9)
    assert away.sum() >= 10 and {tuple(c) for c in coords[away]} <= kept
    # The kept tiles' measures are in the store, one per tile, and pass the thresholds.
    params = QCParams()
    assert checked.qc("blur").shape == (len(checked),) and (checked.qc("blur") >= params.min_blur).all()
    assert (checked.qc("pen") <= params.max_pen).all()
    assert checked.attrs["qc"]["checks"] == ["blur", "pen"]
    with pytest.raises(KeyError, match="no tile quality measure 'focus'"):
        checked.qc("focus")
    assert checked.verify() == []  # the measures are recorded like the other tile arrays


def test_a_store_emptied_by_qc_says_so(marked_slide, tmp_path):
    from shapely.geometry import box

    roi = box(*BLUR_BOX).buffer(-8)  # only blurred tissue
    with pytest.warns(UserWarning, match=r"tile QC \(blur\) flagged all \d+ tiles"):
        store = tiling.tile_slide(marked_slide, tmp_path / "s.zarr", size=128, mpp=0.5, roi=roi, roi_mode="replace",
                                  qc=("blur",))  # fmt: skip
    assert len(store) == 0 and store.is_complete and store.attrs["qc"]["dropped"]["blur"] > 0


def test_describe_says_what_qc_dropped():
    from tiling.qc import describe

    qc = {"dropped": {"blur": 8, "pen": 1_200}, "dropped_total": 1_205, "tiles_measured": 12_000}
    assert describe(qc) == "QC dropped 1,205 of 12,000 (blur 8, pen 1,200)"

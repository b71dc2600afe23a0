"""The `morphometry` encoder: named, finite, deterministic features on real tiles, and measurements that follow
drawn nuclei (size, crowding, lymphocytes, mucin) at any resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mil
import wsi
from mil.encoders import EncoderError
from mil.encoders.morphometry import MORPHOMETRY_FEATURES, MorphometryConfig, feature_names, morphometry
from tiling import PatchStore

# Ruifrok & Johnston stain vectors: what the encoder deconvolves, so drawn stains come out as drawn.
_H, _E = np.array([0.65, 0.70, 0.29]), np.array([0.07, 0.99, 0.11])
_MUCIN = np.array([0.55, 0.35, 0.12])  # pale blue-grey: absorbs red more than blue


def draw(nuclei, size_um=112.0, mpp=0.5, stroma=_E, stroma_od=0.5, nucleus_od=1.2, seed=0) -> np.ndarray:
    """An (H, W, 3) uint8 H&E tile at `mpp`: a stroma of optical density `stroma_od` along `stroma`, and
    ellipses (x_um, y_um, a_um, b_um, angle) of hematoxylin, by Beer-Lambert with a little noise."""
    n = int(round(size_um / mpp))
    yy, xx = (np.mgrid[0:n, 0:n] + 0.5) * mpp
    h = np.zeros((n, n))
    for x, y, a, b, angle in nuclei:
        c, s = np.cos(angle), np.sin(angle)
        u, v = (xx - x) * c + (yy - y) * s, -(xx - x) * s + (yy - y) * c
        h[(u / a) ** 2 + (v / b) ** 2 <= 1] = nucleus_od
    od = h[..., None] * _H + (stroma_od * (h == 0))[..., None] * stroma / np.linalg.norm(stroma)
    noise = np.random.default_rng(seed).normal(0, 1.5, od.shape)
    return np.clip(255 * np.exp(-od) + noise, 0, 255).astype(np.uint8)


def scatter(n, radius_um, rng, size_um=112.0, elongation=1.0, gap_um=1.0):
    """n non-overlapping nuclei of `radius_um` (a = radius * sqrt(elongation), b = radius / sqrt(...))."""
    a, b = radius_um * np.sqrt(elongation), radius_um / np.sqrt(elongation)
    placed = []
    for _ in range(20000):
        if len(placed) == n:
            break
        x, y = rng.uniform(a + 1, size_um - a - 1, 2)
        if all((x - px) ** 2 + (y - py) ** 2 > (2 * a + gap_um) ** 2 for px, py, *_ in placed):
            placed.append((x, y, a, b, rng.uniform(0, np.pi)))
    assert len(placed) == n, "test scene too crowded to place"
    return placed


def column(features: np.ndarray, name: str) -> np.ndarray:
    return features[:, MORPHOMETRY_FEATURES.index(name)]


@pytest.fixture(scope="module")
def cmu_tiles(cmu_path) -> np.ndarray:
    """Nine 224-px tiles at 0.5 um/px from the real CMU slide: stroma, epithelium, a dense dark region, glass."""
    corners = [(x, y) for y in (448, 896, 1344, 1792) for x in (896, 1344)] + [(448, 0)]
    with wsi.open_slide(cmu_path) as slide:
        return np.stack([slide.read(xy, (448, 448), mpp=0.5)[:224, :224] for xy in corners])


def test_registered_with_its_dimension_and_names():
    assert "morphometry" in mil.list_encoders()
    info = {row.name: row for row in mil.list_encoders(details=True)}["morphometry"]
    assert info.dim == len(MORPHOMETRY_FEATURES) == 79
    assert len(set(MORPHOMETRY_FEATURES)) == len(MORPHOMETRY_FEATURES)
    encoder = mil.create_encoder("morphometry")
    assert encoder.feature_names == MORPHOMETRY_FEATURES
    assert encoder.describe()["feature_names"] == list(MORPHOMETRY_FEATURES)
    assert encoder.describe()["arguments"] == {"mpp": 0.5}
    assert len(feature_names(MorphometryConfig(granulometry_um=(3.0,)))) == 75


def test_real_tiles_finite_deterministic_and_batch_independent(cmu_tiles):
    encoder = mil.create_encoder("morphometry")
    batch = torch.from_numpy(cmu_tiles).permute(0, 3, 1, 2)
    with torch.inference_mode():
        first, second = encoder(batch), encoder(batch)
    assert first.shape == (len(cmu_tiles), 79) and first.dtype == torch.float32
    assert torch.isfinite(first).all()
    assert torch.equal(first, second)
    alone = morphometry(cmu_tiles[3:4])  # a tile's features do not depend on its batch
    np.testing.assert_array_equal(alone[0], first[3].numpy())
    features = first.numpy()
    tissue = column(features, "tissue_fraction") > 0.5
    assert tissue.sum() == 8 and not tissue[8], "fixture tiles should hold tissue and glass"
    assert (column(features, "nuclei_count")[tissue] >= 10).all()
    assert (
        (column(features, "area_um2_q50")[tissue] > 5) & (column(features, "area_um2_q50")[tissue] < 100)
    ).all()
    assert (features[tissue].std(0) > 0).sum() > 60, "most features vary between real tissue tiles"


def test_blank_and_flat_tiles_give_finite_neutral_features():
    tiles = np.stack([np.full((224, 224, 3), 255, np.uint8), np.full((224, 224, 3), 242, np.uint8),
                      np.zeros((224, 224, 3), np.uint8), np.full((224, 224, 3), (200, 120, 180), np.uint8)])  # fmt: skip
    features = morphometry(tiles)
    assert np.isfinite(features).all()
    assert (column(features, "nuclei_count") == 0).all()
    assert column(features, "tissue_fraction")[0] == 0 and column(features, "white_fraction")[0] == 1
    assert (column(features, "nnd_um_mean") == 112).all()  # no neighbour: the tile side, in microns
    assert morphometry(np.zeros((0, 64, 64, 3), np.uint8)).shape == (0, 79)
    # Stores keep float16: a large all-dark tile, and nuclei on a speck of tissue, stay finite there.
    dark = draw([(256, 256, 200, 200, 0.0)], size_um=512)[None]  # a dark region of 0.13 mm^2, no nucleus
    speck = np.full((1, 224, 224, 3), 245, np.uint8)  # a 20 x 40 um fragment holding 4 nuclei on glass
    speck[0, 80:120, 80:160] = draw([(50 + 7 * i, 50, 3.0, 3.0, 0.0) for i in range(4)])[80:120, 80:160]
    for f in (morphometry(dark), morphometry(speck)):
        assert np.isfinite(f.astype(np.float16)).all()
    assert column(morphometry(speck), "nuclei_count")[0] == 4
    assert (
        column(morphometry(dark), "nuclei_count")[0] == 0 < column(morphometry(dark), "nuclear_fraction")[0]
    )


def test_larger_nuclei_give_larger_sizes():
    rng = np.random.default_rng(1)
    small = draw(scatter(30, 2.5, rng))
    large = draw(scatter(30, 5.0, rng))
    f = morphometry(np.stack([small, large]))
    assert column(f, "nuclei_count")[0] == pytest.approx(30, abs=3)
    assert column(f, "nuclei_count")[1] == pytest.approx(30, abs=3)
    assert column(f, "area_um2_q50")[0] == pytest.approx(np.pi * 2.5**2, rel=0.35)
    assert column(f, "area_um2_q50")[1] == pytest.approx(np.pi * 5.0**2, rel=0.25)
    assert column(f, "opening_8um_fraction")[1] > 0.5 > 0.05 > column(f, "opening_8um_fraction")[0]


def test_crowded_nuclei_are_denser_and_closer():
    rng = np.random.default_rng(2)
    f = morphometry(np.stack([draw(scatter(12, 3.0, rng)), draw(scatter(80, 3.0, rng, gap_um=0.8))]))
    assert column(f, "nuclei_per_mm2")[1] > 4 * column(f, "nuclei_per_mm2")[0]
    assert column(f, "nnd_um_mean")[1] < 0.5 * column(f, "nnd_um_mean")[0]
    assert column(f, "nnd3_um_mean")[1] < column(f, "nnd3_um_mean")[0]


def test_lymphocyte_rich_tiles_and_elongated_nuclei():
    rng = np.random.default_rng(3)
    # Lymphocytes: small (r 3 um), round and dark; tumour nuclei large, elongated and paler.
    lymph = scatter(40, 3.0, rng)
    tumour = scatter(14, 5.5, rng, elongation=2.5)
    f = morphometry(np.stack([draw(lymph, nucleus_od=1.6), draw(tumour, nucleus_od=0.9)]))
    assert column(f, "nuclei_count")[1] == pytest.approx(14, abs=2)  # elongated nuclei are not cut up
    assert column(f, "lymphocyte_fraction")[0] > 0.9 > 0.1 > column(f, "lymphocyte_fraction")[1]
    assert column(f, "elongation_mean")[1] > 2.0 > 1.3 > column(f, "elongation_mean")[0]
    assert column(f, "eccentricity_mean")[1] > 0.8 > 0.5 > column(f, "eccentricity_mean")[0]
    assert column(f, "nucleus_h_od_mean")[0] > column(f, "nucleus_h_od_mean")[1]
    # Small round nuclei among larger ones count when darker than those, not when as pale.
    mixed = scatter(30, 3.0, rng)
    big = [(x, y, 2 * a, 2 * b, t) for x, y, a, b, t in mixed[:10]]
    dark, pale = draw(big + mixed[10:], nucleus_od=0.8), draw(big + mixed[10:], nucleus_od=0.8)
    small_dark = draw(mixed[10:], nucleus_od=1.6)
    dark = np.where((small_dark < dark).all(-1, keepdims=True), small_dark, dark)
    f = morphometry(np.stack([dark, pale]))
    assert column(f, "lymphocyte_fraction")[0] > 0.4 > 0.05 > column(f, "lymphocyte_fraction")[1]


def test_touching_nuclei_are_split():
    for radius in (3.2, 5.0):  # pairs overlapping by 0.2 um, 25 pairs
        pairs = [(x + dx, y, radius, radius, 0.0) for x in range(12, 100, 20) for y in range(12, 100, 20)
                 for dx in (0, 2 * radius - 0.2)]  # fmt: skip
        assert column(morphometry(draw(pairs)[None]), "nuclei_count")[0] == pytest.approx(50, abs=3)


def test_pale_blue_mucinous_stroma_is_told_from_pink_stroma():
    rng = np.random.default_rng(4)
    nuclei = scatter(10, 3.0, rng)
    f = morphometry(np.stack([draw(nuclei), draw(nuclei, stroma=_MUCIN, stroma_od=0.35)]))
    assert column(f, "mucin_like_fraction")[1] > 0.8 > 0.05 > column(f, "mucin_like_fraction")[0]
    assert column(f, "stroma_blueness")[1] > 0 > column(f, "stroma_blueness")[0]


def test_sizes_are_in_microns_at_any_resolution():
    rng = np.random.default_rng(5)
    nuclei = scatter(25, 4.0, rng)
    at_half = morphometry(draw(nuclei, mpp=0.5)[None], mpp=0.5)
    at_quarter = morphometry(draw(nuclei, mpp=0.25)[None], mpp=0.25)
    at_one = morphometry(draw(nuclei, mpp=1.0)[None], mpp=1.0)
    for f in (at_quarter, at_one):
        assert column(f, "nuclei_count") == pytest.approx(column(at_half, "nuclei_count"), abs=2)
        for name in ("area_um2_mean", "nnd_um_mean", "nuclei_per_mm2"):
            assert column(f, name) == pytest.approx(column(at_half, name), rel=0.15), name
    wrong = morphometry(draw(nuclei, mpp=0.5)[None], mpp=0.25)  # a wrong mpp shows: areas a quarter
    assert column(wrong, "area_um2_mean") < 0.5 * column(at_half, "area_um2_mean")


def test_bad_input_and_arguments_are_named():
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        morphometry(np.zeros((2, 64, 64), np.uint8))
    with pytest.raises(ValueError, match=r"\(N, H, W, 3\) uint8"):
        morphometry(np.zeros((1, 64, 64, 3), np.float32))
    with pytest.raises(ValueError, match="mpp"):
        morphometry(np.zeros((1, 64, 64, 3), np.uint8), mpp=0)
    with pytest.raises(ValueError, match="too small"):
        morphometry(np.zeros((1, 3, 3, 3), np.uint8), mpp=0.5)
    assert morphometry(np.zeros((1, 4, 4, 3), np.uint8), mpp=np.float32(0.5)).shape == (1, 79)
    with pytest.raises(EncoderError, match="no weights"):
        mil.create_encoder("morphometry", weights="x.safetensors")
    with pytest.raises(EncoderError, match="mpp"):
        mil.create_encoder("morphometry", mpp=-1)
    with pytest.raises(ValueError, match=r"\(B, 3, H, W\)"):
        mil.create_encoder("morphometry")(torch.zeros(2, 64, 64, 3, dtype=torch.uint8))


def test_features_into_a_store(small_store):
    encoder = mil.create_encoder("morphometry", mpp=1.0)  # the fixture's tiles are at 1.0 um/px
    array = mil.extract_features(small_store, encoder, batch_size=16, device="cpu", overwrite=True)
    assert array.shape == (len(small_store), 79)
    values = np.asarray(array[:]).astype(np.float32)
    assert np.isfinite(values).all()
    assert mil.features_done(small_store, encoder)
    assert not mil.features_done(small_store, mil.create_encoder("morphometry", mpp=0.5))


def test_features_command_with_the_tiles_mpp(synthetic_slide, tmp_path, capsys):
    from slidestream.cli import main

    out = tmp_path / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "2.0", "--size", "64", "-q"]) == 0
    )
    args = [
        "features",
        str(out),
        "--encoder",
        "morphometry",
        "--encoder-arg",
        "mpp=2.0",
        "--workers",
        "0",
        "-q",
    ]
    assert main(args) == 0
    assert "synthetic: features/morphometry" in capsys.readouterr().out
    store = PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")
    array = store.features("morphometry")
    assert array.shape == (len(store), 79)
    description = array.attrs["description"]
    assert description["arguments"] == {"mpp": 2.0}
    assert description["feature_names"] == list(MORPHOMETRY_FEATURES)
    assert main(args) == 0 and "skipped (already computed" in capsys.readouterr().out


def test_features_follow_the_stores_tile_mpp_unless_told(synthetic_slide, tmp_path, capsys):
    """Without --encoder-arg mpp, morphometry measures each store's tiles at the mpp they were tiled at."""
    from slidestream.cli import main

    out = tmp_path / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "2.0", "--size", "64", "-q"]) == 0
    )
    assert main(["features", str(out), "--encoder", "morphometry", "--workers", "0", "-q"]) == 0
    store = PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")
    assert store.features("morphometry").attrs["description"]["arguments"] == {"mpp": 2.0}
    assert mil.encoder_arguments("morphometry", store) == {"mpp": 2.0}
    assert mil.encoder_arguments("morphometry", store, {"mpp": 0.5}) == {"mpp": 0.5}  # as given
    assert mil.encoder_arguments("stain_stats", store) == {}  # takes no mpp

"""Nuclei over whole slides: halo tiles, centroid ownership (each nucleus once and whole), outputs, resume."""

from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest
import shapely
from scipy import ndimage as ndi
from skimage.color import rgb2hed

import nuclei
import wsi
from nuclei.segmenters import TileWork
from nuclei.slide import SlideNucleiConfig, plan_slide
from wsi.synthetic import SyntheticSpec, nuclei_in_box, write_slide

SPEC = SyntheticSpec(1024, 768, mpp=0.5, seed=3, tissue_fraction=0.7)


class ThresholdSegmenter:
    """Hematoxylin above a fixed threshold, connected components: the same pixels give the same nuclei in
    every tile, so the slide result must equal segmenting the whole slide at once."""

    kind = "threshold"
    classes = ()
    postprocess = None

    def __init__(self, mpp: float = 0.5, fail_after: int | None = None):
        self.mpp, self.fail_after, self.calls = mpp, fail_after, 0

    def describe(self) -> dict:
        return {"kind": self.kind, "mpp": self.mpp}

    def maps(self, images: np.ndarray) -> list[TileWork]:
        self.calls += 1
        if self.fail_after is not None and self.calls > self.fail_after:
            raise KeyboardInterrupt("interrupted")
        return [TileWork("labels", im, labels=label_image(im)) for im in images]


def label_image(image: np.ndarray) -> np.ndarray:
    return ndi.label(rgb2hed(image)[..., 0] > 0.02)[0].astype(np.int32)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory):
    return write_slide(tmp_path_factory.mktemp("ns") / "n.svs", SPEC, tile_size=128, progress=False).path


@pytest.fixture(scope="module")
def stitched(slide_path):
    """Nuclei of the whole slide in 128 px tiles with a 32 px halo (many borders)."""
    with wsi.open_slide(slide_path) as slide:
        config = SlideNucleiConfig(tile=128, halo=32, workers=0)
        return nuclei.segment_slide(slide, model=ThresholdSegmenter(), tissue=False, config=config)


def _areas(table: pd.DataFrame) -> np.ndarray:
    return shapely.area(shapely.from_wkb(table["geometry"].to_numpy()))


def test_stitched_equals_the_whole_slide_at_once(slide_path, stitched):
    with wsi.open_slide(slide_path) as slide:
        image = slide.read_region((0, 0), 0, slide.meta.dimensions)
    labels = label_image(image)
    centres = np.array(ndi.center_of_mass(labels > 0, labels, np.arange(1, labels.max() + 1)))
    sizes = np.bincount(labels.ravel())[1:]
    assert len(stitched) == len(centres) > 300
    found = np.stack([stitched["y"] - 0.5, stitched["x"] - 0.5], axis=1)
    order_a, order_b = np.lexsort(found.T[::-1]), np.lexsort(centres.T[::-1])
    np.testing.assert_allclose(found[order_a], centres[order_b], atol=1e-6)
    np.testing.assert_allclose(stitched["area_um2"].to_numpy()[order_a], sizes[order_b] * 0.25)


def test_truth_nuclei_across_tile_borders_come_out_once_and_whole(stitched):
    truth = nuclei_in_box(SPEC, (0, 0, SPEC.width, SPEC.height))
    outlines = [shapely.Polygon(p) for p in truth.polygons(64)]
    tree = shapely.STRtree(outlines)
    found = shapely.from_wkb(stitched["geometry"].to_numpy())
    checked = 0
    for i, outline in enumerate(outlines):
        x0, y0, x1, y1 = outline.bounds
        across = (np.floor(x0 / 128) != np.floor(x1 / 128)) or (np.floor(y0 / 128) != np.floor(y1 / 128))
        near = [j for j in tree.query(outline.buffer(3.0)) if j != i]
        if not across or near or min(x0, y0) < 4 or x1 > SPEC.width - 4 or y1 > SPEC.height - 4:
            continue  # isolated nuclei across a border only: touching ones merge under a plain threshold
        hits = np.flatnonzero(shapely.intersects(found, shapely.Point(truth.cx[i], truth.cy[i])))
        assert len(hits) == 1, f"truth nucleus {truth.ids[i]} found {len(hits)} times"
        # A nucleus cut at the border would have about half its area; this threshold draws outlines ~9 %
        # wide of the truth on every nucleus (JPEG blur), inside tiles as across borders.
        assert found[hits[0]].area == pytest.approx(outline.area, rel=0.2)
        checked += 1
    assert checked > 40


def test_no_duplicates(stitched):
    polygons = shapely.from_wkb(stitched["geometry"].to_numpy())
    tree = shapely.STRtree(polygons)
    pairs = tree.query(polygons, predicate="intersects")
    others = pairs[:, pairs[0] != pairs[1]]
    overlap = shapely.area(shapely.intersection(polygons[others[0]], polygons[others[1]]))
    assert not np.any(overlap > 1.0)


def test_write_slide_nuclei_outputs_and_resume(slide_path, stitched, tmp_path):
    config = SlideNucleiConfig(tile=128, halo=32, workers=0, shard_tiles=10)
    with wsi.open_slide(slide_path) as slide:
        with pytest.raises(KeyboardInterrupt):
            nuclei.write_slide_nuclei(slide, tmp_path, model=ThresholdSegmenter(fail_after=6), tissue=False,
                                      config=config)  # fmt: skip
        # Interrupted: finished shards are kept, nothing looks complete.
        assert sorted(p.name for p in (tmp_path / "nuclei.parts").glob("shard_*")) == [
            "shard_00000.parquet", "shard_00001.parquet", "shard_00002.parquet"]  # fmt: skip
        assert not any(
            (tmp_path / name).exists() for name in ("nuclei.json", "nuclei.geojson.gz", "nuclei.parquet")
        )
        coords = np.array([[0, 0], [256, 0], [512, 256]])
        result = nuclei.write_slide_nuclei(slide, tmp_path, model=ThresholdSegmenter(), tissue=False,
                                           config=config, object_type="detection",
                                           store_tiles=(coords, 256, 256))  # fmt: skip
    assert result.shards_resumed == 3 and result.nuclei == len(stitched)
    assert not (tmp_path / "nuclei.parts").exists()
    table = nuclei.read_parquet(tmp_path / "nuclei.parquet")
    assert list(table.columns) == list(nuclei.TABLE_COLUMNS) and len(table) == len(stitched)
    import pyarrow.parquet as pq

    geo = json.loads(pq.read_schema(tmp_path / "nuclei.parquet").metadata[b"geo"])
    assert geo["primary_column"] == "geometry" and geo["columns"]["geometry"]["encoding"] == "WKB"
    with gzip.open(tmp_path / "nuclei.geojson.gz", "rt") as f:
        features = json.load(f)["features"]
    assert len(features) == len(stitched)
    assert all(f["properties"]["objectType"] == "detection" for f in features)
    summary = json.loads((tmp_path / "nuclei.json").read_text())
    assert summary["nuclei"] == len(stitched)
    assert summary["region_mm2"] == pytest.approx(1024 * 768 * 0.25 / 1e6)
    # Per-tile features: nuclei whose centroid lies in each 256 px store tile.
    x, y = table["x"].to_numpy(), table["y"].to_numpy()
    for row, (tx, ty) in enumerate(coords):
        inside = (x >= tx) & (x < tx + 256) & (y >= ty) & (y < ty + 256)
        assert result.tile_values[row, 0] == inside.sum()
        assert result.tile_values[row, 1] == pytest.approx(inside.sum() / (256 * 0.5 / 1000) ** 2, rel=1e-5)
        assert result.tile_values[row, 2] == pytest.approx(table["area_um2"][inside].mean(), rel=1e-5)


def test_other_options_restart_and_foreign_files_are_refused(slide_path, tmp_path):
    config = SlideNucleiConfig(tile=128, halo=32, workers=0, shard_tiles=10)
    (tmp_path / "nuclei.parquet").write_text("someone else's")
    with wsi.open_slide(slide_path) as slide:
        with pytest.raises(FileExistsError, match="did not"):
            nuclei.write_slide_nuclei(
                slide, tmp_path, model=ThresholdSegmenter(), tissue=False, config=config
            )
    assert (tmp_path / "nuclei.parquet").read_text() == "someone else's"


def test_slide_without_tissue_gives_an_empty_complete_result(tmp_path):
    import tifffile

    path = tmp_path / "blank.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 245, np.uint8), tile=(128, 128), photometric="rgb")
    with wsi.open_slide(path, slide_mpp=0.5) as slide:
        with pytest.warns(UserWarning, match="no tissue"):
            result = nuclei.write_slide_nuclei(slide, tmp_path / "out", model="classical",
                                               config=SlideNucleiConfig(workers=0))  # fmt: skip
    assert result.nuclei == 0 and result.tiles == 0
    with gzip.open(tmp_path / "out" / "nuclei.geojson.gz", "rt") as f:
        assert json.load(f) == {"type": "FeatureCollection", "features": []}
    assert len(nuclei.read_parquet(tmp_path / "out" / "nuclei.parquet")) == 0
    assert json.loads((tmp_path / "out" / "nuclei.json").read_text())["nuclei"] == 0


def test_slide_without_mpp_is_refused_naming_the_option():
    from tests.conftest import OPENSLIDE_DATA

    with wsi.open_slide(OPENSLIDE_DATA / "boxes.tiff") as slide:
        with pytest.raises(wsi.MissingMppError, match="--slide-mpp"):
            plan_slide(slide, 0.5)


def test_cnn_and_classical_on_a_slide_in_process_workers(slide_path, tiny_model):
    """The CNN path end to end (batched forward, post-processing in a process pool) with an untrained model:
    plumbing and types, not quality."""
    with wsi.open_slide(slide_path) as slide:
        roi = shapely.box(0, 0, 300, 300)
        config = SlideNucleiConfig(tile=128, halo=32, workers=1, batch_size=4)
        table = nuclei.segment_slide(
            slide, model=tiny_model, roi=roi, tissue=False, config=config, device="cpu"
        )
        classical = nuclei.segment_slide(slide, model="classical", roi=roi, tissue=False, config=config)
    assert list(table.columns) == list(nuclei.TABLE_COLUMNS)
    assert set(table["type"]) <= set(tiny_model.config.classes[1:])
    assert len(classical) > 10 and (classical["type"] == "").all()
    # Tiles cover 0..384; each keeps centroids up to its guard band (4 px) past its core.
    assert classical["x"].between(0, 388).all() and classical["y"].between(0, 388).all()


def test_tile_stats_count_each_nucleus_in_every_tile_holding_it():
    rng = np.random.default_rng(0)
    coords = np.array([[x, y] for y in range(0, 1024, 128) for x in range(0, 1024, 128)])[::3]  # gaps
    table = pd.DataFrame({"x": rng.uniform(0, 1200, 500), "y": rng.uniform(0, 1200, 500),
                          "area_um2": rng.uniform(10, 50, 500), "type": rng.choice(["a", "b", ""], 500)})  # fmt: skip
    stats = nuclei.TileStats(coords, 128, 256, slide_mpp=0.5, classes=("background", "a", "b"))
    stats.add(table.iloc[:200])
    stats.add(table.iloc[200:])
    values = stats.values()
    assert stats.columns == ["count", "density_mm2", "mean_area_um2", "fraction_a", "fraction_b"]
    for row, (x, y) in enumerate(coords):
        inside = table["x"].between(x, x + 256, inclusive="left") & table["y"].between(
            y, y + 256, inclusive="left"
        )
        assert values[row, 0] == inside.sum()
        if inside.any():
            assert values[row, 2] == pytest.approx(table["area_um2"][inside].mean(), rel=1e-5)
            assert values[row, 3] == pytest.approx((table["type"][inside] == "a").mean(), rel=1e-5)


def test_measurements_of_an_ellipse():
    from skimage.draw import ellipse
    from skimage.measure import regionprops

    from nuclei.measure import Placement, measure_instances

    labels = np.zeros((64, 64), np.int32)
    labels[ellipse(30, 33, 10, 5, rotation=0.4)] = 1
    image = np.full((64, 64, 3), 255, np.uint8)
    image[labels > 0] = (80, 40, 140)
    cols = measure_instances(labels, image, Placement(1000.0, 2000.0, 2.0, 0.5))
    region = regionprops(labels)[0]
    assert cols["x"][0] == pytest.approx(1000 + (region.centroid[1] + 0.5) * 2)
    assert cols["y"][0] == pytest.approx(2000 + (region.centroid[0] + 0.5) * 2)
    assert cols["area_um2"][0] == pytest.approx(region.area * 0.25)
    assert cols["eccentricity"][0] == pytest.approx(region.eccentricity, abs=1e-6)
    assert cols["solidity"][0] == pytest.approx(region.solidity, abs=0.05)
    assert cols["perimeter_um"][0] == pytest.approx(region.perimeter * 0.5, rel=0.1)
    assert (
        cols["hematoxylin_od"][0] > 0.05 and np.isnan(cols["type_probability"][0]) and cols["type"][0] == ""
    )
    polygon = shapely.from_wkb(cols["geometry"][0])
    assert polygon.is_valid and polygon.area == pytest.approx(region.area * 4, rel=0.1)


def test_seam_copies_are_removed_once():
    from nuclei.stitch import near_seam, seam_duplicates

    cores = np.array([[0, 0, 100, 100], [100, 0, 200, 100]], dtype=float)
    disc = shapely.Point(100, 50).buffer(5)
    table = pd.DataFrame({
        "x": [99.8, 100.3, 50.0, 101.0], "y": [50.0, 50.1, 50.0, 80.0], "tile": [0, 1, 0, 1],
        "geometry": [shapely.to_wkb(disc), shapely.to_wkb(shapely.affinity.translate(disc, 0.5, 0.1)),
                     shapely.to_wkb(shapely.Point(50, 50).buffer(5)), shapely.to_wkb(shapely.Point(101, 80).buffer(4))],
    })  # fmt: skip
    near = near_seam(table, cores, margin=4)
    assert near.tolist() == [True, True, False, True]
    candidates = table[near].reset_index(drop=True)
    # The copy of tile 0 (centroid 0.2 px inside its core) goes; tile 1's (0.3 px inside) stays.
    assert seam_duplicates(candidates, cores).tolist() == [0]


class ShiftingSegmenter(ThresholdSegmenter):
    """The threshold segmenter with every other tile's labels moved `shift` px to the right: two tiles see one
    nucleus at centroids `shift` px apart, as a CNN's outlines of one nucleus differ with the context."""

    def __init__(self, shift: int):
        super().__init__()
        self.shift, self.seen = shift, 0

    def maps(self, images: np.ndarray) -> list[TileWork]:
        out = []
        for im in images:
            labels = label_image(im)
            if self.seen % 2:
                labels = np.pad(labels, ((0, 0), (self.shift, 0)))[:, : labels.shape[1]]
            self.seen += 1
            out.append(TileWork("labels", im, labels=labels))
        return out


def test_seam_copies_deeper_than_the_guard_band_are_removed(slide_path):
    # Copies 6 px apart: one lies beyond the 4 px guard band inside its core, the other within its own core's
    # guard band. Comparing only centroids within the guard band (before the seam-margin fix) kept both.
    with wsi.open_slide(slide_path) as slide:
        config = SlideNucleiConfig(tile=128, halo=32, workers=0, guard=4)
        plan = plan_slide(slide, 0.5, config, tissue=False)
        assert plan.seam_margin0 == pytest.approx(12) and plan.guard0 == pytest.approx(4)
        table = nuclei.segment_slide(slide, model=ShiftingSegmenter(6), tissue=False, config=config)
    polygons = shapely.from_wkb(table["geometry"].to_numpy())
    left, right = shapely.STRtree(polygons).query(polygons, predicate="intersects")
    pair = left < right
    inter = shapely.area(shapely.intersection(polygons[left[pair]], polygons[right[pair]]))
    union = shapely.area(polygons[left[pair]]) + shapely.area(polygons[right[pair]]) - inter
    assert len(table) > 300 and not np.any(inter / union > 0.3)


def test_tta_on_a_slide_runs_four_flips_and_is_never_resumed_into(slide_path, tiny_model, tmp_path):
    """`segment_slide(tta=)` runs the four flips; `write_slide_nuclei(tta=)` records it in the plan, and shards
    written with it are redone, not resumed, by a run without it."""
    import torch

    from nuclei.slide_results import read_summary

    blank = nuclei.create_model(decoder_channels=(16, 16, 8, 8)).eval()
    blank.load_state_dict(tiny_model.state_dict())
    with torch.no_grad():  # no foreground: an untrained net's specks are not what this tests
        blank.np_head.weight.zero_()
        blank.np_head.bias.fill_(-10.0)
    calls, stop = [], [None]

    def hook(module, inputs, output):
        calls.append(len(inputs[0]))
        if stop[0] is not None and len(calls) > stop[0]:
            raise KeyboardInterrupt("interrupted")

    blank.register_forward_hook(hook)
    roi = shapely.box(0, 0, 300, 300)  # 3 x 3 tiles of 128 px: 3 shards of 3, one batch each
    config = SlideNucleiConfig(tile=128, halo=32, workers=0, batch_size=3, shard_tiles=3)
    kw = {"model": blank, "roi": roi, "tissue": False, "config": config, "device": "cpu"}
    with wsi.open_slide(slide_path) as slide:
        nuclei.segment_slide(slide, **kw, batch_size=3)
        assert sum(calls) == 9 and len(calls) == 3
        calls.clear()
        nuclei.segment_slide(slide, **kw, batch_size=3, tta=True)
        assert sum(calls) == 4 * 9 and len(calls) == 12
        calls.clear()
        stop[0] = 4  # the first shard written (its four flips), interrupted in the second
        with pytest.raises(KeyboardInterrupt):
            nuclei.write_slide_nuclei(slide, tmp_path, **kw, tta=True)
        assert len(list((tmp_path / "nuclei.parts").glob("shard_*"))) == 1
        calls.clear()
        stop[0] = None
        plain = nuclei.write_slide_nuclei(slide, tmp_path, **kw)  # the TTA shard is not taken
        assert plain.shards_resumed == 0 and len(calls) == 3
        assert "tta" not in read_summary(tmp_path)["plan"]["segmenter"]
        calls.clear()
        # A finished plain result: redone.
        flipped = nuclei.write_slide_nuclei(slide, tmp_path, **kw, tta=True)
        assert flipped.shards_resumed == 0 and len(calls) == 12
        assert read_summary(tmp_path)["plan"]["segmenter"]["tta"] is True


def test_outlines_clipped_to_nothing_at_the_slide_edge_are_dropped():
    """An outline past the slide's edge is clipped; one with nothing left inside (an untrained net's sprawling
    speck did this) is dropped rather than written as an empty geometry QuPath cannot read."""
    from nuclei.slide import _table

    inside, edge, outside = (
        shapely.box(10, 10, 20, 20),
        shapely.box(90, 10, 110, 20),
        shapely.box(120, 10, 130, 20),
    )
    columns = {name: [] for name in nuclei.TABLE_COLUMNS if name != "tile"}
    for k, polygon in enumerate((inside, edge, outside)):
        for name in columns:
            columns[name].append(
                shapely.to_wkb(polygon) if name == "geometry" else k if name != "type" else ""
            )
    table = _table(columns, tile=3, dimensions=(100, 100))
    assert table["x"].tolist() == [0, 1] and (table["tile"] == 3).all()
    shapes = shapely.from_wkb(table["geometry"].to_numpy())
    assert shapes[0].equals(inside) and shapes[1].equals(shapely.box(90, 10, 100, 20))

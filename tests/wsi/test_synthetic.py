"""Synthetic slides: deterministic, realistic enough to score against, with ground truth that matches pixels."""

from __future__ import annotations

import json
import tracemalloc

import numpy as np
import pytest

import wsi
from wsi.synthetic import SyntheticSpec, load_truth, nuclei_in_box, render_region, write_slide
from wsi.synthetic.truth import read_spec


def test_same_seed_same_pixels():
    spec = SyntheticSpec(4000, 3000, seed=3, tumor=True)
    a, _ = render_region(spec, (1000, 1000), (200, 200))
    b, _ = render_region(spec, (1000, 1000), (200, 200))
    np.testing.assert_array_equal(a, b)
    c, _ = render_region(SyntheticSpec(4000, 3000, seed=4, tumor=True), (1000, 1000), (200, 200))
    assert np.abs(a.astype(int) - c).mean() > 5


def test_stain_varies_between_slides():
    h1, e1, s1 = SyntheticSpec(1000, 1000, seed=1).stains()
    h2, e2, s2 = SyntheticSpec(1000, 1000, seed=2).stains()
    assert not np.allclose(h1, h2) and not np.allclose(e1, e2)
    assert np.linalg.norm(h1) == pytest.approx(1)


def test_slide_has_glass_tissue_and_nuclei(synthetic_slide):
    truth = load_truth(synthetic_slide.path)
    assert 0.15 < truth.tissue_mask.mean() < 0.85
    assert truth.tumor_mask.any() and not (truth.tumor_mask & ~truth.tissue_mask).any()
    with wsi.open_slide(synthetic_slide.path) as slide:
        thumb = slide.read_region((0, 0), 1, slide.meta.level_dimensions[1]).astype(float)
    d = truth.mask_downsample // 4  # mask pixel -> level-1 pixels
    mask = np.kron(truth.tissue_mask, np.ones((d, d), bool))[: thumb.shape[0], : thumb.shape[1]]
    glass, tissue = thumb[~mask].mean(axis=0), thumb[mask].mean(axis=0)
    assert glass.min() > 225  # bright glass
    assert tissue[1] < glass[1] - 40  # eosin/hematoxylin absorb green


def test_tumor_nuclei_are_larger_and_denser():
    spec = SyntheticSpec(20000, 20000, seed=5, tumor=True)
    nuc = nuclei_in_box(spec, (0, 0, 20000, 20000))
    area = np.pi * nuc.ra * nuc.rb
    assert nuc.tumor.sum() > 100 and (~nuc.tumor).sum() > 100
    assert area[nuc.tumor].mean() > 1.5 * area[~nuc.tumor].mean()
    assert len(np.unique(nuc.ids)) == len(nuc.ids)


def test_labels_match_nucleus_polygons():
    from shapely.geometry import Point, Polygon

    spec = SyntheticSpec(4000, 4000, seed=2, tumor=True)
    box = (1500, 1500, 2012, 2012)
    _, labels = render_region(spec, box[:2], (512, 512), with_labels=True)
    nuclei = nuclei_in_box(spec, box, margin=200)
    polygons = {int(i): Polygon(p) for i, p in zip(nuclei.ids, nuclei.polygons(64), strict=True)}
    ids = [i for i in np.unique(labels) if i]
    assert len(ids) > 10
    for i in ids:
        rows, cols = np.nonzero(labels == i)
        poly = polygons[int(i)]
        centre = Point(box[0] + cols.mean() + 0.5, box[1] + rows.mean() + 0.5)
        assert poly.buffer(2).contains(centre)
        # Pixel area agrees with the polygon area where the nucleus is not clipped by the box or a neighbour.
        if poly.bounds[0] > box[0] + 2 and poly.bounds[2] < box[2] - 2 and poly.bounds[1] > box[1] + 2:
            assert len(rows) == pytest.approx(poly.area, rel=0.3)


def test_truth_files(synthetic_slide):
    record = json.loads(synthetic_slide.truth.read_text())
    assert record["format"] == "slidestream.synthetic/1"
    assert record["mask_downsample"] == 8
    truth = load_truth(synthetic_slide.path)
    assert truth.tissue_mask.shape == (2048 // 8, 2560 // 8)
    objects = wsi.qupath.read_geojson(truth.nuclei)
    assert len(objects) == record["nuclei_count"] > 50
    classes = {o.classification for o in objects}
    assert {"Tumor", "Stroma", "Epithelial"} <= classes <= {"Tumor", "Stroma", "Epithelial", "Immune cells"}


def test_missing_truth_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="truth.json"):
        load_truth(tmp_path / "x.svs")
    with pytest.raises(FileNotFoundError, match="truth.json"):
        read_spec(tmp_path / "x.svs")


def test_read_spec_is_the_spec_load_truth_reads(synthetic_slide, tmp_path):
    assert read_spec(synthetic_slide.path) == load_truth(synthetic_slide.path).spec == synthetic_slide.spec
    for text in ("not json", '{"format": "slidestream.synthetic/1"}', '{"spec": {"width": 1, "colour": 2}}'):
        (tmp_path / "x.truth.json").write_text(text)
        with pytest.raises(ValueError, match="x.truth.json: not the ground truth of a synthetic slide"):
            read_spec(tmp_path / "x.svs")


def test_spec_rejects_bad_sizes():
    with pytest.raises(ValueError, match="at least 64"):
        SyntheticSpec(10, 1000)


def test_writing_streams_with_bounded_memory(tmp_path):
    """Peak Python-heap use is the same for a slide with four times the pixels (tiles, not whole levels)."""

    def peak(width: int) -> int:
        spec = SyntheticSpec(width, 1024, seed=1)
        tracemalloc.start()
        write_slide(tmp_path / f"w{width}.svs", spec, tile_size=256, render_workers=1, progress=False)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    small, large = peak(1536), peak(6144)
    with pytest.warns(DeprecationWarning, match="'workers' is deprecated.*'render_workers'"):
        write_slide(
            tmp_path / "old.svs", SyntheticSpec(256, 256, seed=1), tile_size=256, workers=1, progress=False
        )
    assert large < 1.5 * small + 4e6, (small, large)
    assert large < 150e6


def _tumor_nuclei(grade: int, **traits):
    spec = SyntheticSpec(6000, 6000, mpp=0.5, seed=11, tumor=True, grade=grade, tumor_threshold=0.3, **traits)
    return spec, nuclei_in_box(spec, (1000, 1000, 5000, 5000))


def test_grade_is_nuclear_size_pleomorphism_crowding_and_fading_lumina():
    from wsi.synthetic.glands import grade_traits

    sizes, spreads, vesicular = [], [], []
    for grade in (1, 3, 5):
        _, nuc = _tumor_nuclei(grade)
        tumor = nuc.kind == 2
        assert tumor.sum() > 200
        area = np.pi * nuc.ra[tumor] * nuc.rb[tumor]
        sizes.append(area.mean())
        spreads.append(np.std(np.log(nuc.ra[tumor])))
        vesicular.append(nuc.vesicular[tumor].mean())
    assert sizes[0] < sizes[1] < sizes[2] and sizes[2] > 2 * sizes[0]
    assert spreads[0] < spreads[1] < spreads[2]
    assert vesicular[0] < vesicular[1] < vesicular[2]
    lumen = [grade_traits(g)["lumen"] for g in range(1, 6)]
    assert lumen == sorted(lumen, reverse=True) and lumen[-1] == 0  # grade 5: solid nests


def test_benign_glands_are_orderly_and_small():
    spec = SyntheticSpec(6000, 6000, mpp=0.5, seed=11)
    nuc = nuclei_in_box(spec, (1000, 1000, 5000, 5000))
    epithelial = nuc.kind == 1
    assert epithelial.sum() > 100 and not nuc.tumor.any()
    _, tumor = _tumor_nuclei(1)
    t = tumor.kind == 2
    benign_area = np.pi * nuc.ra[epithelial] * nuc.rb[epithelial]
    assert np.pi * np.mean(tumor.ra[t] * tumor.rb[t]) > 1.3 * benign_area.mean()
    assert np.std(np.log(nuc.ra[epithelial])) < 0.08


def test_mutation_traits_are_visible_around_the_tumor():
    _, plain = _tumor_nuclei(3)
    _, inflamed = _tumor_nuclei(3, lymphocytes=1.0)
    assert (inflamed.kind == 3).sum() > 3 * max(1, (plain.kind == 3).sum())
    spec = SyntheticSpec(6000, 6000, mpp=0.5, seed=11, tumor=True, grade=3, tumor_threshold=0.3)
    from dataclasses import replace

    from wsi.synthetic.content import field_values

    xs, ys = np.meshgrid(np.arange(1000, 5000, 250.0), np.arange(1000, 5000, 250.0))
    tissue, tumor = field_values(spec, xs, ys)
    inside = np.argwhere(tumor > 0.02)[0]
    x, y = xs[tuple(inside)], ys[tuple(inside)]
    plain_px = render_region(spec, (x, y), (256, 256))[0].astype(float)
    mucinous = render_region(replace(spec, mucin=1.0), (x, y), (256, 256))[0].astype(float)
    assert mucinous[..., 1].mean() > plain_px[..., 1].mean() + 5  # pale stroma absorbs less green


def test_cohort_plan_ties_labels_to_traits():
    from wsi.synthetic.cohort import _tumor_fraction, cohort_labels, plan_cohort

    patients, traits, specs = plan_cohort(16, seed=2, dimensions=(1024, 1024), slide_mpp=0.5)
    fractions = np.array([_tumor_fraction(s) for s in specs])
    labels = cohort_labels(fractions, patients, traits, seed=2)
    cancer = labels.cancer == 1
    assert 0 < cancer.sum() < 16 and (cancer == (fractions > 0)).all()
    assert labels.loc[~cancer, ["grade", "mut_a", "mut_b"]].isna().all().all()
    for spec, row in zip(specs, labels.itertuples(), strict=True):
        t = traits[patients[int(row.Index)]]
        assert spec.tumor == t.cancer
        if t.cancer:
            assert spec.grade == row.grade == t.grade
            assert (spec.lymphocytes >= 0.7) == bool(t.mut_a) and (spec.mucin >= 0.7) == bool(t.mut_b)
    burden = fractions[fractions > 0]
    assert burden.min() < 0.08 and burden.max() < 0.45
    # Slides of one patient share the patient's labels (one tumor); only the noisy mutation labels may differ.
    assert (labels.groupby("patient_id")[["cancer", "grade"]].nunique(dropna=False) == 1).all().all()


def test_cohort_workers_write_the_same_cohort(tmp_path):
    import tifffile

    from wsi.synthetic.cohort import write_cohort

    one = write_cohort(tmp_path / "one", n=3, seed=4, dimensions=(256, 256), slide_mpp=0.5, tile_size=128)
    two = write_cohort(tmp_path / "two", n=3, seed=4, dimensions=(256, 256), slide_mpp=0.5, tile_size=128,
                       workers=2)  # fmt: skip
    assert one.labels.equals(two.labels)
    for a, b in zip(one.slides, two.slides, strict=True):
        np.testing.assert_array_equal(tifffile.imread(a), tifffile.imread(b))


@pytest.mark.parametrize("kwargs", [{"tile_size": 0}, {"tile_size": 100}, {"tile_size": 256.0}, {"quality": 0},
                                    {"quality": 101}])  # fmt: skip
def test_write_slide_refuses_bad_tile_size_and_quality(tmp_path, kwargs):
    spec = SyntheticSpec(width=512, height=512, seed=0)
    with pytest.raises(ValueError, match="tile_size|quality"):
        write_slide(tmp_path / "bad.svs", spec, render_workers=1, progress=False, **kwargs)
    assert not any(tmp_path.iterdir())  # refused before anything is written


def test_lookalikes_exist_and_are_benign_in_the_truth_masks(tmp_path):
    """Crowded glands and lymphoid aggregates are drawn, outside the tumour mask; aggregates keep off the tumour."""
    from wsi.synthetic.content import _PERI_BAND, _fields, lookalike_values
    from wsi.synthetic.glands import CROWDED_NUCLEUS_UM

    spec = SyntheticSpec(1024, 1024, mpp=0.5, seed=7, tumor=True, tumor_threshold=0.55, lookalikes=1.0)
    truth = load_truth(write_slide(tmp_path / "s.svs", spec, tile_size=256, progress=False).path)
    d = truth.mask_downsample
    ys, xs = np.mgrid[0 : truth.tumor_mask.shape[0], 0 : truth.tumor_mask.shape[1]]
    x, y = (xs + 0.5) * d, (ys + 0.5) * d
    crowded, aggregate = lookalike_values(spec, x, y)
    assert truth.tumor_mask.any()
    for zone in (crowded > 0.01, aggregate > 0.01):
        assert zone.sum() > 20  # present, on a slide with tumour too
        assert truth.tissue_mask[zone].all() and not truth.tumor_mask[zone].any()
    _, _, raw = _fields(spec, x, y)
    assert (raw[aggregate > 0] < -_PERI_BAND).all()  # away from the tumour: not the mut_a trait
    # The look-alike nuclei are benign (epithelial in crowded glands, lymphocytes in aggregates), small and
    # uniform; a slide without look-alikes has none of them.
    nuc = nuclei_in_box(spec, (0, 0, 1024, 1024))
    plain = nuclei_in_box(SyntheticSpec(1024, 1024, mpp=0.5, seed=7, tumor=True, tumor_threshold=0.55), (0, 0, 1024, 1024))  # fmt: skip
    in_crowded = lookalike_values(spec, nuc.cx, nuc.cy)[0] > 0
    in_aggregate = lookalike_values(spec, nuc.cx, nuc.cy)[1] > 0
    # (A tumour nest centred inside the tumour may reach past the mask's edge into a crowded zone.)
    assert not nuc.tumor[in_aggregate].any() and nuc.tumor[in_crowded].mean() < 0.1
    crowded_epi = in_crowded & (nuc.kind == 1)
    assert crowded_epi.sum() > 3 * max(
        1, ((lookalike_values(spec, plain.cx, plain.cy)[0] > 0) & (plain.kind == 1)).sum()
    )
    assert np.median(nuc.ra[crowded_epi]) * spec.mpp < 1.1 * CROWDED_NUCLEUS_UM
    assert np.std(np.log(nuc.ra[crowded_epi])) < 0.08
    plain_aggregate = lookalike_values(spec, plain.cx, plain.cy)[1] > 0
    assert (nuc.kind[in_aggregate] == 3).mean() > 0.8
    assert (nuc.kind[in_aggregate] == 3).sum() > 3 * max(1, (plain.kind[plain_aggregate] == 3).sum())


def test_lookalikes_darken_benign_tiles_like_tumour():
    """Benign tiles in look-alike zones absorb about as much light as tumour tiles (colour alone cannot tell)."""
    from wsi.synthetic.content import field_values, lookalike_values

    spec = SyntheticSpec(
        4096, 4096, mpp=0.5, seed=3, tumor=True, grade=3, tumor_threshold=0.5, lookalikes=1.0
    )
    od = {"tumour": [], "lookalike": [], "other benign": []}
    for ty in range(0, 4096, 128):
        for tx in range(0, 4096, 128):
            xs, ys = np.meshgrid(np.arange(tx + 8, tx + 128, 16.0), np.arange(ty + 8, ty + 128, 16.0))
            tissue, tumor = field_values(spec, xs, ys)
            crowded, aggregate = lookalike_values(spec, xs, ys)
            if (
                (tissue > 0).mean() < 1
                or len(od["lookalike"]) > 12
                and len(od["other benign"]) > 12
                and (tumor <= 0).all()
            ):
                continue
            kind = (
                "tumour"
                if (tumor > 0).all()
                else "lookalike"
                if ((crowded > 0) | (aggregate > 0)).mean() > 0.7
                else "other benign"
                if ((crowded <= 0) & (aggregate <= 0) & (tumor <= 0)).all()
                else None
            )
            if kind is not None:
                tile = render_region(spec, (tx, ty), (128, 128))[0].astype(float)
                od[kind].append(-np.log(np.clip(tile, 1, 255) / 255).sum(-1).mean())
    assert all(len(v) >= 4 for v in od.values()), {k: len(v) for k, v in od.items()}
    tumour, lookalike, other = (np.median(od[k]) for k in ("tumour", "lookalike", "other benign"))
    assert lookalike > other and lookalike > 0.9 * tumour, (tumour, lookalike, other)


def test_cohort_slides_keep_their_labels_when_n_changes():
    from wsi.synthetic.cohort import cohort_labels, plan_cohort

    small = plan_cohort(9, seed=5, dimensions=(512, 512), slide_mpp=0.5)
    large = plan_cohort(30, seed=5, dimensions=(512, 512), slide_mpp=0.5)
    assert small[2] == large[2][:9] and small[0] == large[0][:9]
    fractions = [0.1 if s.tumor else 0.0 for s in large[2]]
    a = cohort_labels(np.array(fractions[:9]), small[0], small[1], seed=5)
    b = cohort_labels(np.array(fractions), large[0], large[1], seed=5)
    assert a.equals(b.iloc[:9])
    cancer = b[b.cancer == 1].drop_duplicates("patient_id")
    assert abs(int(b.drop_duplicates("patient_id").cancer.sum()) - b.patient_id.nunique() / 2) <= 1
    # Grades are balanced: every block of five cancer patients takes each grade once.
    counts = cancer.grade.value_counts()
    assert counts.max() - counts.min() <= 1 and len(counts) == 5

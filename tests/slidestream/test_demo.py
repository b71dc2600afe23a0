"""`slidestream demo`, the README's first command, in its quick form: real outputs, a true summary."""

from __future__ import annotations

import csv

import pytest

from slidestream.cli import main
from tiling import PatchStore
from wsi.synthetic import load_truth


def test_demo_runs_every_step_and_says_where_to_look(cluster_address, tmp_path, capsys):
    out = tmp_path / "demo"
    # One small synthetic slide beside the bundled real one, on the tests' shared cluster.
    assert main(["demo", "-o", str(out), "--slides", "1", "--dimensions", "2048x1536",
                 "--scheduler-address", cluster_address, "-q"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "running tile, features on 2 slides" in printed and "2 of 2 slide(s) processed" in printed
    assert "Where to look:" in printed and str(out / "summary.csv") in printed
    with open(out / "summary.csv") as f:
        rows = {row["slide_id"]: row for row in csv.DictReader(f)}
    assert set(rows) == {"CMU-1-Small-Region", "synthetic-0"}
    assert rows["CMU-1-Small-Region"]["mpp"] == "0.499" and rows["synthetic-0"]["mpp"] == "0.25"
    for slide_id, row in rows.items():
        folder = out / "slides" / slide_id
        store = PatchStore.open(folder / "patches.zarr")
        assert row["status"] == "done" and int(row["tiles"]) == len(store) > 0
        assert store.features("stain_stats").shape[0] == len(store)
        assert row["encoder"] == "stain_stats"
        assert int(row["feature_dim"]) == store.features("stain_stats").shape[1]
        assert (folder / "thumbnail.png").stat().st_size > 0 and (folder / "tissue.geojson").exists()
    # The synthetic slide's tissue area agrees with its ground truth.
    truth = load_truth(out / "input" / "synthetic-0.svs")
    true_mm2 = truth.tissue_mask.mean() * 2048 * 1536 * 0.25**2 / 1e6
    assert abs(float(rows["synthetic-0"]["tissue_mm2"]) - true_mm2) < 0.2 * true_mm2
    # Every path the printed guide names is there.
    nuclei = out / "input" / "synthetic-0.nuclei.geojson"
    assert f"also import {nuclei}:" in printed and nuclei.exists()
    example = out / "slides" / "CMU-1-Small-Region"
    assert f"{example}/thumbnail.png" in printed and f"{example}/tissue.geojson" in printed


def test_a_demo_with_other_dimensions_is_refused_not_run_on_the_earlier_slides(tmp_path, capsys):
    """The README's quick demo, then the full one in the same folder: the full one used to run silently on the
    quick one's small slide (kept because its name was there), and on every other slide left in input/."""
    from slidestream.demo import DemoConfig, demo_slides, prepare_demo_slides

    out = tmp_path / "demo"
    small = DemoConfig(out=out, synthetic_slides=2, synthetic_dimensions=(512, 384), progress=False)
    folder = prepare_demo_slides(small)
    slide = folder / "synthetic-0.svs"
    before = slide.stat().st_mtime_ns
    assert prepare_demo_slides(small) == folder and slide.stat().st_mtime_ns == before  # same spec: kept
    one = DemoConfig(out=out, synthetic_slides=1, synthetic_dimensions=(512, 384))
    assert demo_slides(one) == [folder / "CMU-1-Small-Region.svs", slide]  # synthetic-1 is not this demo's
    assert main(["demo", "-o", str(out), "--dimensions", "640x384", "-q"]) == 2
    err = capsys.readouterr().err
    assert "written by an earlier demo as 512x384 px, not the 640x384 asked for" in err and "-o DIR" in err
    # Nothing touched, not run.
    assert slide.stat().st_mtime_ns == before and not (out / "summary.csv").exists()
    (folder / "synthetic-0.truth.json").unlink()  # a slide of the user's under the demo's name
    assert main(["demo", "-o", str(out), "--dimensions", "512x384", "-q"]) == 2
    assert "is not a slide the demo wrote (no ground truth synthetic-0.truth.json" in capsys.readouterr().err


def test_a_demo_interrupted_while_it_writes_the_ground_truth_runs_again(tmp_path, monkeypatch):
    """Ctrl-C while a synthetic slide's ground truth is written: the re-run the hint asks for writes it again
    (the slide is moved into place after its truth, so it is never left without one and refused as not the
    demo's)."""
    import wsi.synthetic.writer as writer
    from slidestream.demo import DemoConfig, prepare_demo_slides

    config = DemoConfig(
        out=tmp_path / "demo", synthetic_slides=1, synthetic_dimensions=(512, 384), progress=False
    )
    write_truth = writer._write_truth

    def interrupted(*args, **kwargs):
        monkeypatch.setattr(writer, "_write_truth", write_truth)  # once
        raise KeyboardInterrupt

    monkeypatch.setattr(writer, "_write_truth", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare_demo_slides(config)
    folder = prepare_demo_slides(config)
    assert (folder / "synthetic-0.svs").exists() and (folder / "synthetic-0.truth.json").exists()


def test_a_demo_failing_inside_is_no_folder_refusal(tmp_path, monkeypatch):
    """Only the folder's refusals are the one-line error; any other ValueError (a bug, a tifffile error) is
    raised as it is, with its traceback."""
    import slidestream.demo as demo

    def broken(*args, **kwargs):
        raise ValueError("tifffile could not write")

    monkeypatch.setattr(demo, "write_slide", broken)
    config = demo.DemoConfig(
        out=tmp_path / "demo", synthetic_slides=1, synthetic_dimensions=(512, 384), progress=False
    )
    with pytest.raises(ValueError, match="tifffile could not write"):
        demo.run_demo(config)

"""The nuclei pipeline step and `slidestream nuclei slides RESULTS`: outputs, store scores, summary, bad input."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from slidestream.cli import main
from slidestream.discovery import SlideInput
from slidestream.pipeline import load_config, process_slide
from tests.conftest import OPENSLIDE_DATA
from tiling import PatchStore
from wsi.qupath_check import check_feature, check_geojson


@pytest.fixture(scope="module")
def small_slide(tmp_path_factory):
    from wsi.synthetic import SyntheticSpec, write_slide

    spec = SyntheticSpec(1024, 768, mpp=0.5, seed=5, tumor=True, tissue_fraction=0.6)
    return write_slide(tmp_path_factory.mktemp("nuc") / "small.svs", spec, tile_size=128, progress=False).path


def _config(tmp_path, **kw):
    kw = {"steps": ("tile", "nuclei"), **kw}
    return load_config(out=tmp_path / "out", progress=False,
                       **{"tiling.mpp": 1.0, "tiling.size": 128, "nuclei.classical": True, "nuclei.workers": 0,
                          **kw})  # fmt: skip


def test_nuclei_step_writes_every_output(small_slide, tmp_path):
    config = _config(tmp_path)
    records = process_slide(SlideInput("alpha", small_slide), config)
    assert [(r.step, r.status) for r in records] == [("tile", "done"), ("nuclei", "done")], records
    folder = config.out / "slides" / "alpha"
    m = records[1].measurements
    assert m["nuclei"] > 100 and m["nuclei_segmenter"] == "classical"
    assert m["nuclei_density_mm2"] == pytest.approx(m["nuclei"] / m["nuclei_region_mm2"], rel=1e-3)
    assert check_geojson(folder / "nuclei.geojson.gz") == []
    assert (folder / "heatmap_nuclei.png").stat().st_size > 1000
    store = PatchStore.open(folder / "patches.zarr")
    scores = store.scores("nuclei")
    assert scores.shape[0] == len(store) and scores.attrs["columns"][:3] == [
        "count",
        "density_mm2",
        "mean_area_um2",
    ]
    assert store.rows_intact("scores", "nuclei")
    # Store tiles cover the tissue: (almost) every nucleus lies in one of them.
    assert 0.8 * m["nuclei"] <= np.asarray(scores[:, 0]).sum() <= m["nuclei"]
    again = process_slide(SlideInput("alpha", small_slide), config)
    assert [r.status for r in again] == ["skipped", "skipped"] and again[1].measurements["nuclei"] == m[
        "nuclei"
    ]


def test_check_feature_names_what_is_wrong():
    feature = {"type": "Feature", "id": "x", "geometry": {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1]]]},
               "properties": {"objectType": "cell", "classification": {"name": "Tumor"},
                              "measurements": {"a": "1"}}}  # fmt: skip
    problems = " | ".join(check_feature(feature))
    for expected in ("not a UUID", "not closed", "nucleusGeometry", "colour", "'a'"):
        assert expected in problems


def test_missing_mpp_fails_the_nuclei_step_naming_the_option(tmp_path):
    records = process_slide(
        SlideInput("boxes", OPENSLIDE_DATA / "boxes.tiff"), _config(tmp_path, steps=("nuclei",))
    )
    assert records[0].status == "failed" and "--slide-mpp" in records[0].error


def test_nuclei_slides_command_over_a_results_folder(small_slide, tmp_path, cluster_address, capsys):
    config = _config(tmp_path, steps=("tile",))
    process_slide(SlideInput("alpha", small_slide), config)
    folder = config.out / "slides" / "alpha"
    (config.out / "slides" / "empty").mkdir()  # a slide folder without a store is not a slide of the results
    args = ["nuclei", "slides", str(config.out), "--classical", "--detections", "--scheduler-address", cluster_address,
            "-q"]  # fmt: skip
    assert main(args) == 0
    summary = json.loads((folder / "nuclei.json").read_text())
    assert summary["object_type"] == "detection" and summary["nuclei"] > 100
    totals = next(line for line in capsys.readouterr().out.splitlines() if "slide(s) processed" in line)
    assert f"1 of 1 slide(s) processed, {summary['nuclei']:,} nuclei, " in totals and "tiles" not in totals
    assert check_geojson(folder / "nuclei.geojson.gz") == []
    with open(config.out / "summary.csv") as f:
        rows = {row["slide_id"]: row for row in csv.DictReader(f)}
    assert list(rows) == ["alpha"] and int(rows["alpha"]["nuclei"]) == summary["nuclei"]
    assert float(rows["alpha"]["nuclei_density_mm2"]) > 0 and rows["alpha"]["status"] == "done"
    assert main(args) == 0  # finished: skipped, the files untouched
    assert json.loads((folder / "nuclei.json").read_text()) == summary
    # Other options (cells, not detections) redo the step instead of skipping it as finished.
    assert main([a for a in args if a != "--detections"]) == 0
    assert json.loads((folder / "nuclei.json").read_text())["object_type"] == "cell"
    assert main(["nuclei", "slides", str(tmp_path / "nothing"), "-q"]) == 2
    assert "no patch stores" in capsys.readouterr().err


def test_nuclei_table_in_the_run_config(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[run]\nsteps = ["tile", "nuclei"]\n[nuclei]\nclassical = true\nobject_type = "detection"\n'
    )
    config = load_config(toml, **{"nuclei.batch_size": 4})
    assert (
        config.nuclei.classical and config.nuclei.object_type == "detection" and config.nuclei.batch_size == 4
    )
    toml.write_text('[nuclei]\nclassical = true\nmodel = "m"\n')
    with pytest.raises(ValueError, match="exclude each other"):
        load_config(toml)
    toml.write_text('[nuclei]\nobject_type = "cells"\n')
    with pytest.raises(ValueError, match="object_type"):
        load_config(toml)


def test_weights_digest_is_read_once_per_weights_file(tmp_path, monkeypatch):
    """`is_current` asks for the weights' digest for every finished slide: one model load per weights file."""
    import os
    import shutil
    from pathlib import Path

    import nuclei
    from slidestream.pipeline.config import NucleiOptions
    from slidestream.pipeline.nuclei_step import NucleiStep

    folder = tmp_path / "model"
    shutil.copytree(Path(nuclei.__file__).parent / "weights", folder)
    calls = []
    real = nuclei.load_model
    monkeypatch.setattr(nuclei, "load_model", lambda d, *a, **k: calls.append(d) or real(d, *a, **k))
    options = NucleiOptions(model=str(folder))
    first = NucleiStep._weights(options)
    assert NucleiStep._weights(options) == first and len(calls) == 1
    os.utime(folder / "model.safetensors", ns=(10**9, 10**9))  # rewritten weights are read again
    assert NucleiStep._weights(options) == first and len(calls) == 2


def test_tta_reaches_the_step_and_is_part_of_what_it_skips(tmp_path, cluster_address, capsys):
    """A slide segmented with TTA is not taken as current by a run without it, nor the reverse."""
    import torch

    import nuclei
    from wsi.synthetic import SyntheticSpec, write_slide

    spec = SyntheticSpec(384, 256, mpp=0.5, seed=5, tumor=True, tissue_fraction=0.8)
    slide = SlideInput("alpha", write_slide(tmp_path / "s.svs", spec, tile_size=128, progress=False).path)
    torch.manual_seed(0)
    tiny = nuclei.create_model(decoder_channels=(16, 16, 8, 8)).eval()  # untrained: plumbing, not quality
    with torch.no_grad():  # no foreground anywhere: an untrained net's specks are not what this tests
        tiny.np_head.weight.zero_()
        tiny.np_head.bias.fill_(-10.0)
    model = str(nuclei.save_model(tiny, tmp_path / "m"))
    cnn = {"nuclei.classical": False, "nuclei.model": model, "nuclei.device": "cpu"}
    process_slide(slide, _config(tmp_path, steps=("tile",)))
    folder = tmp_path / "out" / "slides" / "alpha"

    def segmenter():
        return json.loads((folder / "nuclei.json").read_text())["plan"]["segmenter"]

    for tta, expected in ((True, "done"), (True, "skipped"), (False, "done"), (False, "skipped")):
        config = _config(tmp_path, steps=("nuclei",), **cnn, **{"nuclei.tta": tta})
        assert config.nuclei.tta is tta
        records = process_slide(slide, config)
        assert [r.status for r in records] == [expected], (tta, records)
        assert segmenter().get("tta", False) is tta
    args = ["nuclei", "slides", str(tmp_path / "out"), "--model", model, "--device", "cpu", "--tta",
            "--scheduler-address", cluster_address, "-q"]  # fmt: skip
    assert main(args) == 0 and segmenter()["tta"] is True  # `nuclei slides --tta` redoes the plain slide
    assert main(["nuclei", "slides", str(tmp_path / "out"), "--classical", "--tta", "-q"]) == 2
    assert "tta applies to the CNN, not to the classical baseline" in capsys.readouterr().err
    with pytest.raises(ValueError, match="tta applies to the CNN"):
        load_config(**{"nuclei.classical": True, "nuclei.tta": True})

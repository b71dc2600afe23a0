"""The batch pipeline: steps, manifest, summary, resume, failure isolation, config, dask local and distributed."""

from __future__ import annotations

import csv
import json
import os
import shutil
from dataclasses import replace

import pytest

from slidestream.cli import main
from slidestream.discovery import SlideInput, find_slides
from slidestream.pipeline import (
    STEPS,
    StepOutcome,
    load_config,
    plan,
    process_slide,
    read_manifest,
    run_batch,
)
from tests.conftest import OPENSLIDE_DATA
from tiling import PatchStore


@pytest.fixture
def slide_folder(synthetic_slide, plain_synthetic_small, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(synthetic_slide.path, folder / "alpha.svs")
    shutil.copy(plain_synthetic_small, folder / "beta.svs")
    shutil.copy(OPENSLIDE_DATA / "unreadable.svs", folder / "corrupt.svs")
    (folder / "readme.txt").write_text("not a slide")
    return folder


@pytest.fixture(scope="session")
def plain_synthetic_small(tmp_path_factory):
    from wsi.synthetic import SyntheticSpec, write_slide

    return write_slide(
        tmp_path_factory.mktemp("p") / "p.svs", SyntheticSpec(2048, 1536, seed=4), progress=False
    ).path


def _config(tmp_path, **kw):
    return load_config(out=tmp_path / "out", progress=False, **{"tiling.mpp": 1.0, "tiling.size": 64, **kw})


def test_process_slide_runs_steps_in_order(synthetic_slide, tmp_path):
    config = _config(tmp_path)
    records = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert [(r.step, r.status) for r in records] == [("tile", "done"), ("features", "done")]
    folder = config.out / "slides" / "alpha"
    assert (folder / "thumbnail.png").exists() and (folder / "tissue.geojson").exists()
    store = PatchStore.open(folder / "patches.zarr")
    assert store.features("stain_stats").shape[0] == len(store) == records[0].measurements["tiles"]
    again = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert [r.status for r in again] == ["skipped", "skipped"]
    forced = process_slide(SlideInput("alpha", synthetic_slide.path), replace(config, overwrite=True))
    assert [r.status for r in forced] == ["done", "done"]


def test_failed_step_stops_that_slide_only(tmp_path):
    records = process_slide(SlideInput("corrupt", OPENSLIDE_DATA / "unreadable.svs"), _config(tmp_path))
    assert records[0].status == "failed" and "Bogus marker length" in records[0].error
    assert records[1].status == "not-run"


def test_partial_store_is_redone(synthetic_slide, tmp_path):
    config = _config(tmp_path)
    process_slide(SlideInput("alpha", synthetic_slide.path), config)
    store = PatchStore.open(config.out / "slides" / "alpha" / "patches.zarr", mode="r+")
    store._group.attrs["complete"] = False
    store._group["shards_done"][0] = 0
    records = process_slide(SlideInput("alpha", synthetic_slide.path), config)
    assert records[0].status == "done"
    assert PatchStore.open(store.path).is_complete


def test_a_new_step_plugs_in(synthetic_slide, tmp_path):
    class CountTiles:
        name = "count"

        def outputs(self, ctx):
            return [ctx.folder / "count.txt"]

        def run(self, ctx):
            n = len(PatchStore.open(ctx.store_path))
            (ctx.folder / "count.txt").write_text(str(n))
            return StepOutcome("done", {"counted": n})

    STEPS["count"] = CountTiles()
    try:
        config = _config(tmp_path, steps=("tile", "count"))
        records = process_slide(SlideInput("alpha", synthetic_slide.path), config)
        assert [r.step for r in records] == ["tile", "count"] and records[1].measurements["counted"] > 0
    finally:
        del STEPS["count"]


def test_batch_with_a_bad_slide(slide_folder, cluster_address, tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["run", str(slide_folder), "-o", str(out), "--mpp", "1.0", "--size", "64",
                 "--scheduler-address", cluster_address, "-q"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    assert (
        "readme.txt" in captured.err and "1 slide(s) failed: corrupt" in captured.err.strip().splitlines()[-1]
    )
    with open(out / "summary.csv") as f:
        rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"alpha", "beta", "corrupt"}
    assert (
        rows["alpha"]["status"] == "done"
        and int(rows["alpha"]["tiles"]) > 0
        and rows["alpha"]["mpp"] == "0.25"
    )
    assert rows["corrupt"]["status"] == "failed" and "Bogus marker" in rows["corrupt"]["error"]
    manifest = read_manifest(out / "manifest.jsonl")
    assert {(r["slide_id"], r["step"]) for r in manifest} >= {("alpha", "tile"), ("beta", "features")}
    assert all("versions" in r and r["versions"]["slidestream"] for r in manifest)
    assert "corrupt tile failed" in (out / "run.log").read_text()
    # Re-running resumes: finished steps are skipped.
    assert main(["run", str(slide_folder / "alpha.svs"), "-o", str(out), "--mpp", "1.0", "--size", "64",
                 "--scheduler-address", cluster_address, "-q"]) == 0  # fmt: skip
    latest = [r for r in read_manifest(out / "manifest.jsonl") if r["slide_id"] == "alpha"][-2:]
    assert [r["status"] for r in latest] == ["skipped", "skipped"]


def test_dry_run_and_config(slide_folder, tmp_path, capsys):
    toml = tmp_path / "run.toml"
    toml.write_text(
        '[run]\nsteps = ["tile"]\n[tiling]\nmpp = 2.0\nsize = 32\n[features]\nencoder = "stain_stats"\n'
    )
    assert main(["run", str(slide_folder), "-o", str(tmp_path / "o"), "--config", str(toml), "--size", "48",
                 "--dry-run"]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "3 slide(s)" in out and "steps: tile" in out and "48 px at 2.0 um/px" in out and "alpha" in out
    assert not (tmp_path / "o" / "slides").exists()
    toml.write_text("[tiling]\nmpp_target = 1\n")
    assert main(["run", str(slide_folder), "-o", str(tmp_path / "o"), "--config", str(toml)]) == 2
    assert "[tiling] mpp_target: unknown key (did you mean 'mpp'?)" in capsys.readouterr().err
    assert (
        main(["run", str(slide_folder), "-o", str(tmp_path / "o"), "--steps", "tile,mitoses", "--dry-run"])
        == 2
    )
    assert "unknown step(s) ['mitoses']" in capsys.readouterr().err


def test_find_slides(slide_folder, tmp_path):
    slides, skipped = find_slides([slide_folder])
    assert [s.slide_id for s in slides] == ["alpha", "beta", "corrupt"]
    assert [(s.path.name, s.reason) for s in skipped] == [("readme.txt", "not a slide file (.txt)")]
    with pytest.raises(ValueError, match="no such file"):
        find_slides([tmp_path / "nope"])
    (tmp_path / "other").mkdir()
    shutil.copy(slide_folder / "alpha.svs", tmp_path / "other" / "alpha.svs")
    with pytest.raises(ValueError, match="share the id 'alpha'"):
        find_slides([slide_folder, tmp_path / "other"])


def test_existing_cluster_runs_the_batch_elsewhere(slide_folder, cluster_address, tmp_path):
    """A cluster reached by address (as `--scheduler-address tcp://...`) runs the slides in its own processes."""
    slides, _ = find_slides([slide_folder / "alpha.svs", slide_folder / "beta.svs"])
    result = run_batch(slides, replace(_config(tmp_path), scheduler_address=cluster_address))
    assert result.ok and {r.slide_id for r in result.records} == {"alpha", "beta"}
    assert all(r.status == "done" for r in result.records)
    workers = {r.worker for r in result.records}
    assert all(w and not w.endswith(f":{os.getpid()}") for w in workers)  # ran elsewhere
    summary = (tmp_path / "out" / "summary.csv").read_text()
    assert "alpha" in summary and "beta" in summary
    first = json.loads((tmp_path / "out" / "manifest.jsonl").read_text().splitlines()[0])
    assert first["slide_id"] in {"alpha", "beta"}


def test_plan_lists_done_steps(synthetic_slide, tmp_path):
    """Also the one test of run_batch starting a local cluster of worker processes of its own."""
    config = _config(tmp_path)
    slides = [SlideInput("alpha", synthetic_slide.path)]
    result = run_batch(slides, replace(config, slide_workers=1, executor="processes"))
    assert result.ok and all(not r.worker.endswith(f":{os.getpid()}") for r in result.records)
    lines = plan(slides, config)
    assert "tile: done before" in lines[-1] and "features: done before" in lines[-1]

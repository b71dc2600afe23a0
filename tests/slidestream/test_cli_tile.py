"""`slidestream tile` over a folder with good and bad slides."""

from __future__ import annotations

import csv
import json
import shutil

import pytest

from slidestream.cli import main
from tests.conftest import OPENSLIDE_DATA
from tiling import PatchStore


def test_tile_folder_isolates_failures(synthetic_slide, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(synthetic_slide.path, folder / "good.svs")
    shutil.copy(OPENSLIDE_DATA / "unopenable.tiff", folder / "broken.tiff")
    (folder / "notes.txt").write_text("not a slide")
    out = tmp_path / "out"
    code = main(["tile", str(folder), "-o", str(out), "--mpp", "0.5", "--size", "128", "--quiet"])
    captured = capsys.readouterr()
    assert code == 1
    assert "notes.txt: not a slide file (.txt)" in captured.err
    assert "1 of 2 slide(s) failed: broken" in captured.err
    store = PatchStore.open(out / "slides" / "good" / "patches.zarr")
    assert store.is_complete and len(store) > 10 and store.tile_size == 128
    tissue = json.loads((out / "slides" / "good" / "tissue.geojson").read_text())
    assert tissue["features"][0]["properties"]["objectType"] == "annotation"
    # A second run skips the complete store.
    assert (
        main(["tile", str(folder / "good.svs"), "-o", str(out), "--mpp", "0.5", "--size", "128", "-q"]) == 0
    )
    assert "good: skipped" in capsys.readouterr().out


def test_tile_needs_slide_mpp_for_slides_without_it(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["tile", str(OPENSLIDE_DATA / "boxes.tiff"), "-o", str(out), "-q"]) == 1
    assert "--slide-mpp" in capsys.readouterr().err
    assert main(["tile", str(OPENSLIDE_DATA / "boxes.tiff"), "-o", str(out), "--slide-mpp", "2", "--min-tissue", "0",
                 "--size", "32", "--mpp", "4", "-q"]) == 0  # fmt: skip
    assert len(PatchStore.open(out / "slides" / "boxes" / "patches.zarr")) > 0


def test_tile_writes_the_pictures_and_reports_quality_control(synthetic_slide, tmp_path, capsys):
    out = tmp_path / "out"
    args = ["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "1", "--size", "64", "-q"]
    assert main([*args, "--qc", "blur,pen"]) == 0
    store = PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")
    qc = store.attrs["qc"]
    line = capsys.readouterr().out
    assert (
        f"QC dropped {qc['dropped_total']} of {qc['tiles_measured']} (blur {qc['dropped']['blur']}, pen "
        in line
    )
    assert store.qc("pen").shape == (len(store),)
    for name in ("thumbnail.png", "tissue_mask.png", "stitch.png"):
        assert (out / "slides" / "synthetic" / name).stat().st_size > 0
    # A re-run with the store complete writes pictures that are missing, and only those are touched.
    (out / "slides" / "synthetic" / "stitch.png").unlink()
    assert main([*args, "--qc", "blur,pen"]) == 0
    assert "skipped" in capsys.readouterr().out and (out / "slides" / "synthetic" / "stitch.png").exists()


def test_qc_option_is_checked(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["tile", "x.svs", "-o", str(tmp_path), "--qc", "blur,focus"])
    assert exit_info.value.code == 2
    assert "--qc takes checks among blur, pen" in capsys.readouterr().err
    from slidestream.commands import _quality
    from tiling.config import QC_CHECKS

    assert _quality.QC_CHECKS == QC_CHECKS


def test_run_takes_qc_and_reports_the_count_in_the_summary(synthetic_slide, cluster_address, tmp_path):
    out = tmp_path / "run"
    assert main(["run", str(synthetic_slide.path), "-o", str(out), "--mpp", "1", "--size", "64", "--steps", "tile",
                 "--qc", "pen", "--min-fragment-um2", "0", "--scheduler-address", cluster_address, "-q"]) == 0  # fmt: skip
    store = PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")
    assert store.attrs["qc"]["checks"] == ["pen"] and store.attrs["inputs"]["min_fragment_um2"] == 0.0
    with open(out / "summary.csv") as f:
        (row,) = csv.DictReader(f)
    assert row["qc_dropped"] == str(store.attrs["qc"]["dropped_total"])
    assert (out / "slides" / "synthetic" / "stitch.png").exists()


def test_a_coords_only_store_is_said_to_hold_coordinates_only(tmp_path, capsys):
    """The README's `tile scan.tiff --slide-mpp 0.5 --coords-only`: it used to name a codec for pixels not kept."""
    out = tmp_path / "out"
    assert main(["tile", str(OPENSLIDE_DATA / "boxes.tiff"), "-o", str(out), "--slide-mpp", "2", "--min-tissue", "0",
                 "--size", "32", "--mpp", "4", "--coords-only", "-q"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert "tiles (coordinates only)" in said and "lz4" not in said, said
    assert PatchStore.open(out / "slides" / "boxes" / "patches.zarr").patches is None

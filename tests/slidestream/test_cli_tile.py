"""`slidestream tile` over a folder with good and bad slides."""

from __future__ import annotations

import json
import shutil

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

"""Odd inputs to `tile`, `run` and `info` (issue 14): names, file kinds, DICOM folders, empty input, and one batch
over a folder holding every bad file beside two good slides."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from slidestream.cli import main
from slidestream.discovery import NoSlidesFound, SlideInput, find_slides, slide_id_for
from slidestream.pipeline import load_config, process_slide, read_manifest
from tests.conftest import CMU, OPENSLIDE_DATA
from tests.wsi import bad_files


@pytest.mark.parametrize(
    ("name", "slide_id"),
    [
        ("...svs", "___svs"),
        (".svs", "svs"),
        ("..x.svs", "x"),
        ("a b.svs", "a b"),
        ("x.qptiff", "x"),
        ("a\\b.svs", "a_b"),
    ],
)
def test_slide_ids_are_single_folder_names(name, slide_id):
    assert slide_id_for(f"/data/{name}") == slide_id


@pytest.mark.parametrize("bad", ["", ".", "..", "../up", "a/b"])
def test_slide_input_refuses_ids_that_leave_out_slides(bad, tmp_path):
    with pytest.raises(ValueError, match="not a usable folder name under OUT/slides/"):
        SlideInput(bad, tmp_path / "x.svs")


def test_named_dotted_file_gets_a_safe_id(tmp_path):
    path = tmp_path / "...svs"
    path.write_bytes(b"x")
    slides, _ = find_slides([path])
    assert [s.slide_id for s in slides] == ["___svs"]


def test_dicom_folders_and_lone_dicom_files(tmp_path, monkeypatch):
    case = tmp_path / "in" / "case-7"
    case.mkdir(parents=True)
    for i in range(3):
        bad_files.lone_dicom(case / f"instance{i}.dcm")
    mixed = tmp_path / "in" / "mixed"
    mixed.mkdir()
    shutil.copy(CMU, mixed / "cmu.svs")
    bad_files.lone_dicom(mixed / "stray.dcm")
    alone = tmp_path / "in" / "alone"
    alone.mkdir()
    bad_files.lone_dicom(alone / "single.dcm")
    slides, _ = find_slides([tmp_path / "in"])
    by_id = {s.slide_id: s.path for s in slides}
    # A folder of instances is one slide named after its folder; a .dcm beside other slides, or alone, is named
    # after its file (never after the folder it sits in).
    assert by_id == {"cmu": mixed / "cmu.svs", "case-7": case / "instance0.dcm", "stray": mixed / "stray.dcm",
                     "single": alone / "single.dcm"}  # fmt: skip
    monkeypatch.chdir(case)  # a bare file name: its id is its own name, never empty
    assert [s.slide_id for s in find_slides(["instance1.dcm"])[0]] == ["instance1"]
    assert [s.slide_id for s in find_slides(["."])[0]] == ["case-7"]


def test_every_skipped_file_is_listed_with_why(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CMU, folder / "cmu.svs")
    bad_files.dangling_link(folder / "notes.txt")
    bad_files.fifo(folder / "pipe.txt")
    (folder / "._cmu.svs").write_bytes(b"\0" * 10)  # macOS resource fork beside a copied slide
    (folder / "empty.svs").mkdir()
    slides, skipped = find_slides([folder])
    assert [s.slide_id for s in slides] == ["cmu"]
    reasons = {s.path.name: s.reason for s in skipped}
    assert reasons["notes.txt"].startswith("dangling symbolic link to ")
    assert reasons["pipe.txt"] == "a named pipe (FIFO), not a slide file"
    assert reasons["._cmu.svs"].startswith("hidden file")
    assert reasons["empty.svs"] == "an empty folder named like a slide file"


def test_unreadable_folders_are_reported(tmp_path, monkeypatch):
    import slidestream.discovery as discovery

    locked = tmp_path / "in" / "locked"
    locked.mkdir(parents=True)
    shutil.copy(CMU, tmp_path / "in" / "cmu.svs")
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads anything: simulate what another user sees
        monkeypatch.setattr(discovery, "_readable_folder", lambda folder: folder.name != "locked")
    try:
        slides, skipped = find_slides([tmp_path / "in"])
        assert [s.slide_id for s in slides] == ["cmu"]
        assert [(s.path, s.reason) for s in skipped] == [(locked, "a folder this user cannot read (permission denied): "
                                                                   "not searched")]  # fmt: skip
        with pytest.raises(ValueError, match="locked: permission denied: this user cannot read the folder"):
            find_slides([locked])
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("command", ["tile", "run", "info"])
def test_empty_input_says_no_slides_found_and_fails(tmp_path, capsys, command):
    empty = tmp_path / "empty"
    empty.mkdir()
    folder_svs = tmp_path / "x.svs"
    folder_svs.mkdir()
    (tmp_path / "x.svs" / "notes.txt").write_text("no slide here")
    for given in (empty, folder_svs):
        argv = [command, str(given)] + ([] if command == "info" else ["-o", str(tmp_path / "out")])
        assert main(argv) != 0
        err = capsys.readouterr().err
        assert f"no slides found in {given} (extensions searched: .svs .tif" in err and ".qptiff" in err
    with pytest.raises(
        NoSlidesFound, match=r"1 file\(s\) skipped: .*notes\.txt \(not a slide file \(\.txt\)\)"
    ):
        find_slides([folder_svs])
    assert not (tmp_path / "out" / "slides").exists()


def _bad_folder(tmp_path, synthetic_slide):
    """Every bad file of issue 14 beside two good slides; returns the folder and the expected reason of each."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(CMU, folder / "cmu.svs")
    shutil.copy(synthetic_slide.path, folder / "synthetic.svs")
    bad_files.gray16_tiff(folder / "gray16.tif")
    bad_files.qptiff(folder / "multiplex.qptiff")
    bad_files.truncated_copy(folder / "cut.svs")
    bad_files.fifo(folder / "pipe.svs")
    bad_files.dangling_link(folder / "gone.svs")
    (folder / "...svs").write_bytes(CMU.read_bytes()[:4096])
    bad_files.lone_dicom(folder / "lone.dcm")
    (folder / "empty.svs").mkdir()
    locked = folder / "locked.svs"
    shutil.copy(OPENSLIDE_DATA / "unreadable.svs", locked)
    locked.chmod(0)
    failed = {
        "multiplex": "ModalityError: .*fluorescence slide \\(3 channels: DAPI, CD8, PanCK\\)",
        "cut": "UnreadableSlideError: .*cut.svs: looks truncated",
        "pipe": "UnsupportedSlideError: .*pipe.svs: is a named pipe \\(FIFO\\)",
        "gone": "SlideNotFoundError: .*gone.svs: dangling symbolic link",
        "lone": "UnsupportedSlideError: .*lone.dcm: not a supported slide",
        # root reads anything: then its corrupt tiles are what fails it
        "locked": "permission denied"
        if not os.access(locked, os.R_OK)
        else "UnreadableSlideError: .*Bogus marker",
    }
    ignored = {"...svs": "hidden file", "empty.svs": "an empty folder named like a slide file"}
    return folder, failed, ignored


def test_batch_over_every_bad_file(tmp_path, synthetic_slide, cluster_address, capsys):
    """Done-when of issue 14: the good slides finish, each bad one is listed with its reason."""
    import re

    folder, failed, ignored = _bad_folder(tmp_path, synthetic_slide)
    out = tmp_path / "run"
    code = main(["run", str(folder), "-o", str(out), "--mpp", "2", "--size", "64", "--min-tissue", "0.2", "--min-fragment-um2", "0",
                 "--scheduler-address", cluster_address, "-q"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 1
    with open(out / "summary.csv") as f:
        rows = {r["slide_id"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"cmu", "synthetic", "gray16", *failed}
    for good in ("cmu", "synthetic", "gray16"):  # gray16: 16-bit grey, read through the intensity window
        assert rows[good]["status"] == "done", rows[good]
    assert all(int(rows[good]["tiles"]) > 0 for good in ("cmu", "synthetic", "gray16"))
    for slide_id, reason in failed.items():
        assert rows[slide_id]["status"] == "failed" and re.search(reason, rows[slide_id]["error"]), rows[
            slide_id
        ]
        assert f"FAILED {slide_id} (tile)" in captured.err
    manifest = read_manifest(out / "manifest.jsonl")
    inputs = {os.path.basename(r["path"]): r for r in manifest if r["step"] == "input"}
    assert set(inputs) == set(ignored)
    for name, reason in ignored.items():
        assert inputs[name]["status"] == "ignored" and inputs[name]["error"].startswith(reason)
        assert f"skipped: {folder / name}: {reason}" in captured.err
    assert "2 input file(s) not processed" in captured.out
    assert "tifffile" not in captured.err and "Traceback" not in captured.err
    assert sorted(p.name for p in (out / "slides").iterdir()) == sorted(
        rows
    )  # nothing outside OUT/slides/<id>

    # `tile` over the same folder: the same slides done, the same reasons, the batch goes on.
    tiles = tmp_path / "tiles"
    assert main(["tile", str(folder), "-o", str(tiles), "--mpp", "2", "--size", "64", "--min-tissue", "0.2", "--min-fragment-um2", "0",
                 "-q"]) == 1  # fmt: skip
    captured = capsys.readouterr()
    for good in ("cmu", "synthetic", "gray16"):
        assert re.search(rf"^{good}: done, \d+ tiles", captured.out, re.M), captured.out
    for slide_id, reason in failed.items():
        assert re.search(rf"failed: {slide_id}: .*{reason.split(': ', 1)[-1]}", captured.err), slide_id
    assert f"{len(failed)} of {len(failed) + 3} slide(s) failed" in captured.err
    assert "tifffile" not in captured.err and "Traceback" not in captured.err


def test_info_json_lists_channels_and_reasons(tmp_path, capsys):
    bad_files.qptiff(tmp_path / "multiplex.qptiff")
    bad_files.gray16_tiff(tmp_path / "gray16.tif")
    bad_files.fifo(tmp_path / "pipe.svs")
    (tmp_path / "notes.txt").write_text("not a slide")
    assert main(["info", "--json", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert f"skipped: {tmp_path / 'notes.txt'}: not a slide file (.txt)" in captured.err
    lines = {os.path.basename(d["path"]): d for d in map(json.loads, captured.out.splitlines())}
    assert lines["multiplex.qptiff"]["modality"] == "fluorescence"
    assert lines["multiplex.qptiff"]["channel_names"] == list(bad_files.CHANNELS)
    assert lines["gray16.tif"]["channels"] == 1 and lines["gray16.tif"]["intensity"].startswith("uint16")
    assert "named pipe" in lines["pipe.svs"]["error"]


def test_tifffile_complaints_reach_the_manifest_once(tmp_path, caplog):
    path = bad_files.complaining_tiff(tmp_path / "odd.tif")
    config = load_config(out=tmp_path / "out", progress=False, steps=("tile",),
                         **{"tiling.mpp": 2.0, "tiling.size": 64})  # fmt: skip
    (record,) = process_slide(SlideInput("odd", path), config)
    assert record.status == "done" and record.measurements["tiles"] > 0
    said = [w for w in record.warnings if "tifffile" in w]
    assert len(said) == 1 and "invalid value offset" in said[0]  # once; the record names the slide
    assert not [r for r in caplog.records if r.name == "tifffile"]  # never reaches a handler (the console)

"""CLI: info and synth, through the same entry point users call."""

from __future__ import annotations

import json

from slidestream.cli import main
from tests.conftest import OPENSLIDE_DATA


def test_help_lists_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "info" in out and "synth" in out


def test_info_table(cmu_path, capsys):
    assert main(["info", str(cmu_path)]) == 0
    out = capsys.readouterr().out
    assert "2220 x 2967" in out and "0.499" in out and "aperio" in out and "openslide" in out


def test_info_json_and_failures(cmu_path, capsys):
    code = main(["info", "--json", str(cmu_path), str(OPENSLIDE_DATA / "unopenable.tiff")])
    assert code == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[0]["dimensions"] == [2220, 2967] and lines[0]["mpp"] == 0.499
    assert "52479" in lines[1]["error"]


def test_info_reports_missing_mpp(capsys):
    assert main(["info", str(OPENSLIDE_DATA / "boxes.tiff")]) == 0
    assert "missing (pass --mpp)" in capsys.readouterr().out


def test_synth_writes_a_slide(tmp_path, capsys):
    out = tmp_path / "s.svs"
    assert main(["synth", str(out), "--size", "1200x900", "--seed", "2", "--tumor", "--quiet"]) == 0
    assert out.exists() and (tmp_path / "s.truth.json").exists()
    assert main(["info", "--json", str(out), "--backend", "tiffslide"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert info["dimensions"] == [1200, 900] and info["mpp"] == 0.25 and info["vendor"] == "aperio"

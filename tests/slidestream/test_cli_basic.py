"""CLI: info and synth, through the same entry point users call."""

from __future__ import annotations

import json

import pytest

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
    assert "missing (pass --slide-mpp)" in capsys.readouterr().out
    assert main(["info", "--json", "--slide-mpp", "0.5", str(OPENSLIDE_DATA / "boxes.tiff")]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == 0.5
    assert main(["info", "--slide-mpp", "0.5", str(OPENSLIDE_DATA / "boxes.tiff")]) == 0
    assert "mpp          0.5 (--slide-mpp)" in capsys.readouterr().out  # not the file's own


def test_info_shows_the_files_own_mpp_when_it_has_one(cmu_path, capsys):
    """--slide-mpp stands in only for a missing mpp (as tiling uses it): a file's own is shown, and used."""
    assert main(["info", "--slide-mpp", "0.3", str(cmu_path)]) == 0
    out = capsys.readouterr().out
    assert "mpp          0.499 (the file's; --slide-mpp 0.3 is for files without one)" in out
    assert main(["info", "--json", "--slide-mpp", "0.3", str(cmu_path)]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == 0.499


def test_synth_writes_a_slide(tmp_path, capsys):
    out = tmp_path / "s.svs"
    assert main(["synth", str(out), "--dimensions", "1200x900", "--slide-mpp", "0.5", "--seed", "2", "--tumor",
                 "--quiet"]) == 0  # fmt: skip
    assert out.exists() and (tmp_path / "s.truth.json").exists()
    assert main(["info", "--json", str(out), "--backend", "tiffslide"]) == 0
    info = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert info["dimensions"] == [1200, 900] and info["mpp"] == 0.5 and info["vendor"] == "aperio"


def test_old_option_names_work_once_with_a_warning(tmp_path, capsys):
    """synth --size/--mpp, info --mpp and run --scheduler keep working, and say what replaced them."""
    out = tmp_path / "old.svs"
    with pytest.warns(DeprecationWarning) as caught:
        assert main(["synth", str(out), "--size", "640x512", "--mpp", "0.5", "-q"]) == 0
    assert sorted(str(w.message).split()[0] for w in caught) == ["--mpp", "--size"]
    err = capsys.readouterr().err
    assert "--size is deprecated and will be removed; use --dimensions" in err
    assert "--mpp is deprecated and will be removed; use --slide-mpp" in err
    with pytest.warns(DeprecationWarning, match="--mpp is deprecated"):
        assert main(["info", "--json", "--mpp", "0.5", str(OPENSLIDE_DATA / "boxes.tiff")]) == 0
    assert json.loads(capsys.readouterr().out)["mpp"] == 0.5
    assert main(["info", "--json", str(out)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["dimensions"] == [640, 512] and info["mpp"] == 0.5
    with pytest.warns(DeprecationWarning, match="--scheduler is deprecated"):
        code = main(
            ["run", str(out), "-o", str(tmp_path / "o"), "--scheduler", "tcp://127.0.0.1:1", "--dry-run"]
        )
    assert code == 0 and "scheduler: tcp://127.0.0.1:1" in capsys.readouterr().out


def test_bad_dimensions_are_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["synth", str(tmp_path / "x.svs"), "--dimensions", "12x"])
    assert exit_.value.code == 2 and "dimensions must look like 20000x15000" in capsys.readouterr().err


def test_cli_choices_are_tilings():
    from slidestream.commands import tile
    from tiling.config import CODEC_CHOICES, ROI_MODES

    assert tile.CODEC_CHOICES == CODEC_CHOICES and tile.ROI_MODES == ROI_MODES


def test_output_piped_into_a_reader_that_stops_early_is_no_traceback(cmu_path):
    """`slidestream info slides/ | head -1`: head leaves after its line; the command stops without a traceback."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    # stdout buffered, as in a terminal's pipe: the write fails at the flush.
    env.pop("PYTHONUNBUFFERED", None)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the command writes anything
    try:
        done = subprocess.run([sys.executable, "-m", "slidestream", "info", str(cmu_path)], stdout=write,
                              stderr=subprocess.PIPE, text=True, env=env, timeout=120)  # fmt: skip
    finally:
        os.close(write)
    assert done.returncode == 1 and done.stderr == "", done.stderr


# A command that itself meets a broken pipe (a worker's, a FIFO it writes) while stdout is healthy.
BROKEN_COMMAND = """
import os
import sys

import slidestream.commands.info as info
from slidestream import cli

registered = info.register


def register(sub):
    registered(sub)
    sub.choices["info"].set_defaults(func=lambda args: print("partial") or os.write(WRITE, b"x"))


info.register = register
READ, WRITE = os.pipe()
os.close(READ)
sys.exit(cli.main(["info", "nothing.svs"]))
"""


def test_a_broken_pipe_that_is_not_stdout_is_an_error(monkeypatch, capsys):
    """Only stdout's own reader leaving is exit 1 without a word; a command's other broken pipe is reported
    (its traceback, exit 1 from Python), and an in-process caller (capsys, a notebook) gets the error itself."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    import slidestream.commands.info as info

    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}
    env.pop("PYTHONUNBUFFERED", None)
    done = subprocess.run(
        [sys.executable, "-c", BROKEN_COMMAND], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 1 and "BrokenPipeError" in done.stderr, done.stderr
    assert done.stdout == "partial\n"  # stdout, healthy, got what was printed

    def broken(args):
        raise BrokenPipeError(32, "Broken pipe")

    registered = info.register
    monkeypatch.setattr(
        info, "register", lambda sub: registered(sub) or sub.choices["info"].set_defaults(func=broken)
    )
    with pytest.raises(BrokenPipeError):
        main(["info", "nothing.svs"])
    assert capsys.readouterr().err == ""

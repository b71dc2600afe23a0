"""What a run says: a newcomer's runs show every quality-control warning on screen and in summary.csv, end with
totals, and never print a library's noise (dashboard port, tracebacks on Ctrl-C)."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slidestream.cli import main
from tests.conftest import write_blank_slide

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def newcomer(tmp_path_factory):
    """A folder as a newcomer has it: a slide scanned at 0.5 um/px, a blank slide and a text file."""
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("newcomer") / "slides"
    folder.mkdir()
    write_slide(folder / "scan.svs", SyntheticSpec(1024, 768, mpp=0.5, seed=4), progress=False)
    write_blank_slide(folder / "blank.tiff", width=768, height=512)
    (folder / "notes.txt").write_text("not a slide")
    return folder


def _summary(out: Path) -> dict[str, dict]:
    with open(out / "summary.csv") as f:
        return {row["slide_id"]: row for row in csv.DictReader(f)}


def _block(stdout: str, slide_id: str) -> list[str]:
    """The console lines of one slide: its line and the indented warnings below it."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"{slide_id}: "))
    block = [lines[start]]
    for line in lines[start + 1 :]:
        if not line.startswith("  "):
            break
        block.append(line)
    return block


def test_a_newcomers_runs_say_every_warning(newcomer, cluster_address, tmp_path, capsys):
    out = tmp_path / "out"
    common = ["--size", "128", "--scheduler-address", cluster_address, "-q"]
    # 1. 0.25 um/px asked of a slide scanned at 0.5 um/px, beside a blank slide.
    assert main(["run", str(newcomer), "-o", str(out), "--mpp", "0.25", *common]) == 0
    said = capsys.readouterr()
    assert "notes.txt" in said.err
    blank, scan = _block(said.out, "blank"), _block(said.out, "scan")
    assert blank[0].startswith("blank: tile done, features done; 0 tiles")
    assert "  warning: no tissue found" in blank and any("store is empty" in line for line in blank)
    assert any("upsampled 2.0x from the slide's 0.5 um/px" in line for line in scan)
    assert "tiles (128 px at 0.25 um/px)" in scan[0]
    totals = next(line for line in said.out.splitlines() if "slide(s) processed" in line)
    assert totals.startswith("2 of 2 slide(s) processed, ") and "slides/hour" in totals and "mm2" in totals
    assert "2 slide(s) with warnings: blank, scan" in said.out
    rows = _summary(out)
    assert set(rows) == {"blank", "scan"}
    assert rows["blank"]["tiles"] == "0" and "no tissue found" in rows["blank"]["warnings"]
    assert "upsampled 2.0x" in rows["scan"]["warnings"] and "upsampled 2.0x" in rows["blank"]["warnings"]
    assert (
        rows["scan"]["tile_mpp"] == "0.25"
        and rows["scan"]["tile_size"] == "128"
        and rows["scan"]["mpp"] == "0.5"
    )
    assert Path(rows["scan"]["path"]).is_absolute() and rows["scan"]["path"] == str(
        (newcomer / "scan.svs").resolve()
    )
    assert len(rows["scan"]["tissue_mm2"].partition(".")[2]) <= 3
    assert rows["scan"]["encoder"] == "stain_stats" and rows["scan"]["feature_dim"] == "53"
    assert not rows["scan"]["warnings"].startswith(str(newcomer))  # the row names the slide already

    # 2. The same command again: nothing to do, said so, and the warnings are still there.
    assert main(["run", str(newcomer), "-o", str(out), "--mpp", "0.25", *common]) == 0
    again = capsys.readouterr().out
    assert "scan: tile skipped (already computed), features skipped (already computed)" in again
    assert "  warning: no tissue found" in _block(again, "blank")
    assert "no tissue found" in _summary(out)["blank"]["warnings"]
    assert main(["features", str(out)]) == 0
    assert "skipped (already computed" in capsys.readouterr().out

    # 3. A ROI run into the same folder's sibling: one slide's ROI reaches outside it, the other has none.
    rois = tmp_path / "rois"
    rois.mkdir()
    square = [[0, 0], [1500, 0], [1500, 600], [0, 600], [0, 0]]  # the slide is 1024 px wide
    (rois / "scan.geojson").write_text(json.dumps({"type": "FeatureCollection", "features": [{
        "type": "Feature", "geometry": {"type": "Polygon", "coordinates": [square]},
        "properties": {"objectType": "annotation"}}]}))  # fmt: skip
    roi_out = tmp_path / "roi"
    assert main(["run", str(newcomer), "-o", str(roi_out), "--mpp", "0.5", "--roi", str(rois), *common]) == 0
    said = capsys.readouterr().out
    assert any("ROI reaches outside the slide (1024 x 768 px" in line for line in _block(said, "scan"))
    assert any("no ROI file" in line and "tiled without a ROI" in line for line in _block(said, "blank"))
    rows = _summary(roi_out)
    assert "ROI reaches outside" in rows["scan"]["warnings"] and "no ROI file" in rows["blank"]["warnings"]
    assert "upsampled" not in rows["scan"]["warnings"]
    # And `tile` says the same as `run`.
    assert (
        main(["tile", str(newcomer), "-o", str(tmp_path / "tiled"), "--mpp", "0.25", "--size", "128", "-q"])
        == 0
    )
    tiled = capsys.readouterr().out
    assert "  warning: no tissue found" in _block(tiled, "blank")
    assert any("upsampled 2.0x" in line for line in _block(tiled, "scan"))


def test_info_takes_folders_and_shows_tile_size_and_compression(newcomer, capsys):
    assert main(["info", str(newcomer)]) == 0
    said = capsys.readouterr()
    assert "notes.txt" in said.err and "is a directory" not in said.err
    assert said.out.count("backend") == 2
    scan = said.out[said.out.index("scan.svs") :]
    assert "tile size" in said.out and "256 x 256    JPEG" in scan
    assert main(["info", "--json", str(newcomer / "blank.tiff")]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["level_tile_size"] == [[256, 256]] and data["level_compression"] == ["NONE"]


def test_features_on_a_missing_folder_says_so(tmp_path, capsys):
    assert main(["features", str(tmp_path / "nonexist")]) == 2
    assert "nonexist: no such folder" in capsys.readouterr().err


def test_upsampling_warning_threshold():
    from tiling.engine import upsampling_warning

    assert upsampling_warning("s.svs", 0.499, 0.25).startswith(
        "s.svs: tiles at 0.25 um/px are upsampled 2.0x"
    )
    assert upsampling_warning("s.svs", 0.5, 0.46) is None  # within 10%
    assert upsampling_warning("s.svs", 0.5, 0.45) is not None
    assert upsampling_warning("s.svs", 0.25, 0.5) is None  # downsampling is fine
    assert upsampling_warning("s.svs", None, 0.5) is None


def _interrupted_run(folder: Path, out: Path, ready, executor: str = "threads") -> tuple[int, str]:
    """`slidestream run` in a process group of its own, sent SIGINT (as a terminal's Ctrl-C: to every process of
    the group, dask's workers too) once `ready(process)` returns; port 8787 taken meanwhile. Its exit status
    and stderr."""
    taken = socket.socket()
    try:
        taken.bind(("", 8787))  # the default dashboard port in use (here, or already by someone else)
        taken.listen()
    except OSError:
        pass
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [sys.executable, "-m", "slidestream", "run", str(folder), "-o", str(out), "--mpp", "0.25", "--size",
               "64", "--workers", "1", "--executor", executor]  # fmt: skip
    # A terminal's default (a test run in the background of a shell starts with SIGINT ignored, and its children).
    proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=_default_sigint)  # fmt: skip
    try:
        ready(proc)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
    finally:
        taken.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    return proc.returncode, err


def _quiet_interrupt(code: int, err: str) -> None:
    assert code == 130, err
    assert err.strip().splitlines()[-1] == "interrupted; re-run the same command to resume", err
    for noise in ("Traceback", "KeyboardInterrupt", "8787", "unclosed file", "ResourceWarning", "leaked"):
        assert noise not in err, err


def _children(pid: int) -> list[tuple[int, bytes]]:
    """(pid, command line) of the processes whose parent is `pid`, from /proc."""
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parent = int(stat.read_text().rsplit(")", 1)[1].split()[1])
            if parent == pid:
                children.append((int(stat.parent.name), (stat.parent / "cmdline").read_bytes()))
        except (OSError, IndexError, ValueError):  # a process that ended meanwhile
            continue
    return children


def _cluster_worker_forked(pid: int) -> bool:
    """Whether the run `pid` has forked a worker of its local cluster: a child of multiprocessing's fork server,
    which the run starts (with Ctrl-C ignored there, for the workers' sake) just before the cluster."""
    servers = [child for child, command in _children(pid) if b"multiprocessing.forkserver" in command]
    return any(_children(server) for server in servers)


@pytest.mark.skipif(
    not Path("/proc/self/stat").exists(), reason="finds the cluster's processes through /proc"
)
def test_ctrl_c_while_the_cluster_starts(newcomer, tmp_path):
    """Interrupted while the local cluster starts: once its first worker process is forked (LocalCluster returns
    only after the worker has joined the scheduler), found by the processes themselves, not a guessed delay.
    Before, each worker printed a traceback; and a Ctrl-C a moment earlier, while dask imported, ended the run
    with the raw signal (exit status -2: tests/slidestream/test_interrupts.py)."""

    def cluster_starting(proc) -> None:
        deadline = time.monotonic() + 120
        while not _cluster_worker_forked(proc.pid) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None and _cluster_worker_forked(proc.pid), "no cluster worker was started"

    _quiet_interrupt(*_interrupted_run(newcomer, tmp_path / "out", cluster_starting, executor="processes"))


def test_ctrl_c_with_forked_workers_stops_the_slide_being_tiled(newcomer, synthetic_slide, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(newcomer / "blank.tiff", folder / "blank.tiff")
    shutil.copy(
        synthetic_slide.path, folder / "big.svs"
    )  # first (by name), with many 64 px tiles at 0.25 um/px
    out = tmp_path / "out"

    def tiling_big(proc) -> None:
        deadline = time.monotonic() + 60
        while not (out / "slides" / "big" / "patches.zarr").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)

    _quiet_interrupt(*_interrupted_run(folder, out, tiling_big, executor="forks"))
    manifest = out / "manifest.jsonl"
    records = [json.loads(line) for line in manifest.read_text().splitlines()] if manifest.exists() else []
    assert not [r for r in records if r["status"] == "failed"]  # a stopped slide is not a failed one


@pytest.mark.slow
def test_ctrl_c_while_a_slide_is_worked_on(newcomer, synthetic_slide, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(newcomer / "blank.tiff", folder / "blank.tiff")
    shutil.copy(synthetic_slide.path, folder / "big.svs")
    first = []

    def one_slide_done(
        proc,
    ) -> None:  # the cluster is up; with one worker, the other slide is being worked on
        first.append(proc.stdout.readline())
        time.sleep(0.5)

    _quiet_interrupt(*_interrupted_run(folder, tmp_path / "out", one_slide_done))
    assert first[0].split(":")[0] in ("blank", "big"), first


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)

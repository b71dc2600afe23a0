"""Data safety of a results folder: users' files survive, other options are refused, damage is found and
repaired exactly, moved inputs redo nothing, a full disk ends cleanly, concurrent runs share a folder."""

from __future__ import annotations

import csv
import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import pytest

from slidestream.cli import main
from slidestream.discovery import find_slides
from slidestream.pipeline import load_config, plan, run_batch, verify_results
from slidestream.pipeline import runner as runner_module
from slidestream.pipeline.lock import LockBusy, SlideLock
from slidestream.pipeline.manifest import DiskFull, ManifestWriter, read_manifest, write_summary
from tiling import PatchStore

ROOT = Path(__file__).resolve().parents[2]
OPTIONS = ["--mpp", "1.0", "--size", "64", "-q"]


def _tree(path: Path) -> dict[str, str]:
    return {p.relative_to(path).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}  # fmt: skip


def _stores(out: Path) -> dict[str, dict[str, str]]:
    return {p.parent.name: _tree(p) for p in sorted(out.glob("slides/*/patches.zarr"))}


@pytest.fixture(scope="module")
def inputs(synthetic_slide, tmp_path_factory):
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = tmp_path_factory.mktemp("in")
    shutil.copy(synthetic_slide.path, folder / "alpha.svs")
    write_slide(folder / "beta.svs", SyntheticSpec(2048, 1536, seed=4), progress=False)
    return folder


@pytest.fixture(scope="module")
def finished_run(inputs, cluster_address, tmp_path_factory):
    """A finished run of both slides (once per module, on the session's cluster); tests work on copies."""
    out = tmp_path_factory.mktemp("run") / "out"
    assert main(["run", str(inputs), "-o", str(out), "--scheduler-address", cluster_address, *OPTIONS]) == 0
    return out


@pytest.fixture
def run_copy(finished_run, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(finished_run, out)
    return out


def _no_cluster(monkeypatch):
    def refuse(config):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(runner_module, "_client", refuse)
    monkeypatch.setattr(runner_module, "_pool", refuse)  # nor threads


# -- never delete what we did not write --------------------------------------------------------------------
def test_run_never_replaces_a_users_files(inputs, tmp_path, capsys):
    a_file = tmp_path / "results"
    a_file.write_text("my notes")
    with pytest.raises(SystemExit) as refused:  # refused by the parser: -o must name a folder
        main(["run", str(inputs / "alpha.svs"), "-o", str(a_file), *OPTIONS])
    assert refused.value.code == 2
    assert "exists and is not a folder" in capsys.readouterr().err and a_file.read_text() == "my notes"
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.csv").write_text("patient,grade\np1,3\n")
    assert main(["run", str(inputs / "alpha.svs"), "-o", str(out), *OPTIONS]) == 2
    assert "summary.csv exists and was not written by slidestream" in capsys.readouterr().err
    assert (out / "summary.csv").read_text() == "patient,grade\np1,3\n"


def test_run_tile_and_features_never_replace_a_users_folder(inputs, cluster_address, tmp_path, capsys):
    out = tmp_path / "out"
    precious = out / "slides" / "alpha" / "patches.zarr"
    precious.mkdir(parents=True)
    (precious / "thesis.docx").write_bytes(b"weeks of work")
    assert (
        main(["tile", str(inputs / "alpha.svs"), "-o", str(out), "--mpp", "1.0", "--size", "64", "-q"]) == 1
    )
    assert "patches.zarr exists and is not a slidestream patch store" in capsys.readouterr().err
    assert main(["features", str(out), "-q"]) == 1
    assert "not a slidestream patch store" in capsys.readouterr().err
    assert main(["run", str(inputs / "alpha.svs"), "-o", str(out), "--scheduler-address", cluster_address,
                 *OPTIONS]) == 1  # fmt: skip
    assert "patches.zarr exists and is not a slidestream patch store" in capsys.readouterr().err
    assert (precious / "thesis.docx").read_bytes() == b"weeks of work" and len(list(precious.iterdir())) == 1


# -- other options -------------------------------------------------------------------------------------------
def test_other_options_are_told_and_refused(inputs, run_copy, capsys, monkeypatch):
    before = _stores(run_copy)
    _no_cluster(monkeypatch)
    assert main(["run", str(inputs), "-o", str(run_copy), "--mpp", "2.0", "--size", "64", "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert "tile: done with other options: mpp 1.0 -> 2.0, would be rewritten (needs --overwrite)" in said
    assert "done before" not in said
    assert main(["run", str(inputs), "-o", str(run_copy), "--mpp", "2.0", "--size", "64", "-q"]) == 2
    err = capsys.readouterr().err
    assert "alpha (mpp 1.0 -> 2.0)" in err and "--overwrite" in err and "another output folder (-o)" in err
    assert _stores(run_copy) == before  # before: every store silently rewritten at the new mpp
    config = load_config(out=run_copy, overwrite=True, **{"tiling.mpp": 2.0, "tiling.size": 64})
    dry = "\n".join(plan(find_slides([inputs])[0], config))
    assert "tile: done with other options: mpp 1.0 -> 2.0, would be rewritten," in dry and "needs" not in dry


# -- never trust a store blindly -----------------------------------------------------------------------------
def test_damaged_stores_are_verified_and_repaired_exactly(inputs, run_copy, cluster_address, capsys):
    pristine = _stores(run_copy)
    assert main(["verify", str(run_copy), "--deep"]) == 0
    shard = sorted((run_copy / "slides" / "alpha" / "patches.zarr" / "patches" / "c").iterdir())[-1]
    shutil.rmtree(shard)
    (run_copy / "slides" / "beta" / "patches.zarr" / "features" / "stain_stats" / "c" / "0" / "0").unlink()
    capsys.readouterr()
    assert main(["verify", str(run_copy)]) == 1
    said = capsys.readouterr().out
    assert "alpha: DAMAGED: patches: 1 of" in said and "beta: DAMAGED: features/stain_stats: 1 of 1" in said
    assert main(["run", str(inputs), "-o", str(run_copy), *OPTIONS[:-1], "--dry-run"]) == 0
    said = capsys.readouterr().out
    assert (
        "tile: repair (damaged: 1 chunk(s) missing in patches), features: done before" in said
    )  # before: done
    assert "features: repair (damaged: features/stain_stats has chunk(s) missing)" in said
    assert (
        main(["run", str(inputs), "-o", str(run_copy), "--scheduler-address", cluster_address, *OPTIONS]) == 0
    )
    assert _stores(run_copy) == pristine
    assert all(check.ok for check in verify_results(run_copy, deep=True))
    latest = {(r["slide_id"], r["step"]): r["status"] for r in read_manifest(run_copy / "manifest.jsonl")}
    assert latest[("alpha", "tile")] == "done" and latest[("alpha", "features")] == "skipped"
    assert latest[("beta", "tile")] == "skipped" and latest[("beta", "features")] == "done"


# -- identity by content; re-running a finished batch -----------------------------------------------------------
def test_moved_inputs_redo_nothing_and_start_no_cluster(inputs, run_copy, tmp_path, capsys, monkeypatch):
    moved = tmp_path / "moved" / "slides"
    moved.mkdir(parents=True)
    shutil.copyfile(inputs / "alpha.svs", moved / "alpha.svs")  # copied without its times
    before = _stores(run_copy)
    with open(run_copy / "summary.csv") as f:
        took = {r["slide_id"]: float(r["seconds"]) for r in csv.DictReader(f)}
    _no_cluster(monkeypatch)
    start = time.perf_counter()
    assert main(["run", str(moved), "-o", str(run_copy), *OPTIONS]) == 0
    seconds = time.perf_counter() - start
    said = capsys.readouterr().out
    assert "no cluster started" in said and _stores(run_copy) == before
    assert "1 slide folder(s)" in said and "not in this input (kept, not in this summary): beta" in said
    with open(run_copy / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["slide_id"] for r in rows] == ["alpha"] and rows[0]["path"] == str(moved / "alpha.svs")
    assert int(rows[0]["tiles"]) > 0 and rows[0]["status"] == "done"  # measurements carried over
    assert float(rows[0]["seconds"]) == took["alpha"] > 0  # the time of the run that did the work, not 0.0
    assert (run_copy / "slides" / "beta" / "patches.zarr").is_dir()  # kept
    print(f"re-run of a finished, moved slide: {seconds:.2f} s")


def test_summary_seconds_of_a_skipped_step_are_those_of_the_run_that_did_it(tmp_path):
    def record(slide, step, status, seconds=0.0):
        return {"slide_id": slide, "path": f"{slide}.svs", "step": step, "status": status, "seconds": seconds,
                "error": "boom" if status == "failed" else None}  # fmt: skip

    records = [record("a", "tile", "done", 3.5), record("a", "features", "done", 1.25),
               record("a", "tile", "skipped", 0.01), record("a", "features", "skipped"),  # a re-run
               record("b", "tile", "done", 9.0), record("b", "tile", "done", 2.0),  # --overwrite: the latest
               record("b", "tile", "skipped"),
               record("c", "tile", "skipped", 0.02)]  # a store made outside the run: no done record  # fmt: skip
    with open(write_summary(tmp_path / "summary.csv", records)) as f:
        seconds = {r["slide_id"]: float(r["seconds"]) for r in csv.DictReader(f)}
    assert seconds == {"a": 4.75, "b": 2.0, "c": 0.0}
    # a later failed attempt counts its own seconds, as before
    with open(
        write_summary(tmp_path / "summary.csv", [*records, record("a", "features", "failed", 0.5)])
    ) as f:
        assert {r["slide_id"]: float(r["seconds"]) for r in csv.DictReader(f)}["a"] == 4.0


# -- full disk ---------------------------------------------------------------------------------------------------
def test_manifest_keeps_finished_records_when_the_disk_fills(tmp_path, monkeypatch):
    path = tmp_path / "manifest.jsonl"
    with ManifestWriter(path) as sink:
        sink.append(json.dumps({"slide_id": "a", "path": "a.svs", "step": "tile", "status": "done"}))
        real_write = os.write

        def full_after_10_bytes(fd, data):  # a filesystem that takes 10 more bytes, then ENOSPC
            real_write(fd, data[:10])
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "write", full_after_10_bytes)
        with pytest.raises(DiskFull, match=r"disk full at .*manifest.jsonl \(\d+ bytes free\)"):
            sink.append(json.dumps({"slide_id": "b", "path": "b.svs", "step": "tile", "status": "done"}))
        monkeypatch.setattr(os, "write", real_write)
        sink.append(json.dumps({"slide_id": "c", "path": "c.svs", "step": "tile", "status": "done"}))
    assert [r["slide_id"] for r in read_manifest(path)] == ["a", "c"]  # no torn line merged into the next

    write_summary(tmp_path / "summary.csv", read_manifest(path))
    before = (tmp_path / "summary.csv").read_bytes()
    monkeypatch.setattr(
        "csv.DictWriter.writerow", lambda *a: (_ for _ in ()).throw(OSError(errno.ENOSPC, "full"))
    )
    with pytest.raises(DiskFull, match="disk full at"):
        write_summary(tmp_path / "summary.csv", read_manifest(path))
    assert (tmp_path / "summary.csv").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "manifest.jsonl",
        "summary.csv",
    ]  # no temp file left


@pytest.mark.parametrize("executor", ["threads", "forks", "processes"])
def test_disk_full_in_a_slide_ends_the_batch_and_a_rerun_completes(
    executor, inputs, tmp_path, monkeypatch, capsys
):
    """A filesystem shim: shard writes of beta raise ENOSPC (the slides see the shim: in threads, in processes
    forked after it was set, or on a dask cluster of threads standing in for the local cluster of processes)."""
    import contextlib

    from dask.distributed import Client, LocalCluster

    from tiling.shards import ShardWriter

    @contextlib.contextmanager
    def in_process(config):
        with LocalCluster(
            n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
        ) as cluster:
            with Client(cluster) as client:
                yield client

    real = ShardWriter.write_encoded

    def full_for_beta(self, shard, chunks):
        if "beta" in str(self.path):
            raise OSError(errno.ENOSPC, "No space left on device", str(self.path / "c" / str(shard)))
        return real(self, shard, chunks)

    monkeypatch.setattr(runner_module, "_client", in_process)
    monkeypatch.setattr(ShardWriter, "write_encoded", full_for_beta)
    out = tmp_path / "out"
    assert main(["run", str(inputs), "-o", str(out), "--workers", "1", "--executor", executor, *OPTIONS]) == 3
    err = capsys.readouterr().err
    assert "error: disk full at " in err and "beta/patches.zarr/patches/c/" in err and "bytes free)" in err
    records = [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]
    assert ("beta", "tile", "failed") in {(r["slide_id"], r["step"], r["status"]) for r in records}
    assert (out / "summary.csv").exists()
    monkeypatch.setattr(ShardWriter, "write_encoded", real)  # space freed
    assert main(["run", str(inputs), "-o", str(out), "--workers", "1", "--executor", executor, *OPTIONS]) == 0
    assert all(check.ok for check in verify_results(out, deep=True)) and len(verify_results(out)) == 2


def _can_mount_tmpfs() -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt 2>/dev/null || "
                            "mount -t tmpfs -o size=1m none /tmp"], capture_output=True)  # fmt: skip
    return probe.returncode == 0


@pytest.mark.slow
def test_a_full_disk_ends_the_run_cleanly_and_a_rerun_completes(inputs, tmp_path):
    """A real small filesystem (tmpfs in a private mount namespace): the first slide fits, the second does not."""
    if not _can_mount_tmpfs():
        pytest.skip("needs unshare to mount a small tmpfs")
    disk, copy = tmp_path / "disk", tmp_path / "copy"
    disk.mkdir()
    run = f"{sys.executable} -m slidestream run --workers 1 {' '.join(OPTIONS)} -o {disk}/out"
    script = textwrap.dedent(f"""\
        set -u
        mount -t tmpfs -o size=64m none {disk}
        {run} {inputs}/alpha.svs > {tmp_path}/1.out 2> {tmp_path}/1.err; echo $? > {tmp_path}/1.rc
        used=$(du -sk {disk} | cut -f1)
        mount -o remount,size=$((used + 120))k {disk}
        {run} {inputs} > {tmp_path}/2.out 2> {tmp_path}/2.err; echo $? > {tmp_path}/2.rc
        cp -r {disk}/out {copy}.full
        mount -o remount,size=64m {disk}
        {run} {inputs} > {tmp_path}/3.out 2> {tmp_path}/3.err; echo $? > {tmp_path}/3.rc
        cp -r {disk}/out {copy}
    """)  # fmt: skip
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    subprocess.run(["unshare", "-rm", "sh", "-c", script], cwd=ROOT, env=env, check=True, timeout=300)
    rc = {i: int((tmp_path / f"{i}.rc").read_text()) for i in (1, 2, 3)}
    err2 = (tmp_path / "2.err").read_text()
    assert rc[1] == 0 and rc[2] == 3, (tmp_path / "2.err").read_text()
    assert "error: disk full at " in err2 and "bytes free)" in err2 and "Traceback" not in err2
    manifest = (Path(f"{copy}.full") / "manifest.jsonl").read_text()
    records = [json.loads(line) for line in manifest.splitlines()]  # every line whole
    assert {(r["slide_id"], r["status"]) for r in records if r["step"] == "tile"} >= {("alpha", "done")}
    assert rc[3] == 0, (tmp_path / "3.err").read_text()
    assert all(check.ok for check in verify_results(copy, deep=True))
    assert {p.parent.name for p in copy.glob("slides/*/patches.zarr")} == {"alpha", "beta"}
    assert all(PatchStore.open(p).is_complete for p in copy.glob("slides/*/patches.zarr"))


# -- concurrent runs -------------------------------------------------------------------------------------------
def test_lock_says_who_holds_it_and_takes_over_a_dead_holders(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""\
        import sys, time
        from slidestream.pipeline.lock import SlideLock
        with SlideLock({str(tmp_path)!r}):
            print("held", flush=True)
            time.sleep(60)
    """)], cwd=ROOT, stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockBusy, match=rf"in progress in another run \(.* PID {holder.pid}, started "):
            with SlideLock(tmp_path, wait=0):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with SlideLock(tmp_path, wait=0) as lock:  # the dead process left its lock file: stale, taken over
        assert lock.took_over and f"PID {holder.pid}" in lock.took_over
    assert not (tmp_path / ".slidestream.lock").exists()


def _process_when_all_ready(barrier, item, config, results) -> None:
    from slidestream.pipeline import process_slide

    barrier.wait()  # imports done: all three start on the slide at the same moment
    try:
        records = process_slide(item, config)
        results.put([(r.step, r.status, r.error, r.warnings) for r in records])
    except Exception as exc:
        results.put(f"raised {type(exc).__name__}: {exc}")


def test_three_processes_on_one_slide_at_once(inputs, tmp_path):
    """Before: KeyError 'coords', OSError directory not empty, ContainsArrayError; stores without coordinates."""
    import multiprocessing

    from slidestream.discovery import SlideInput

    # Fresh processes (not forks of this one), with the libraries imported once for all three.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["slidestream.pipeline", "mil", __name__])
    barrier, results = context.Barrier(3), context.Queue()
    config = load_config(out=tmp_path / "out", progress=False, **{"tiling.mpp": 0.5, "tiling.size": 64})
    item = SlideInput("alpha", inputs / "alpha.svs")
    procs = [
        context.Process(target=_process_when_all_ready, args=(barrier, item, config, results))
        for _ in range(3)
    ]
    for proc in procs:
        proc.start()
    outcomes = [results.get(timeout=240) for _ in procs]
    for proc in procs:
        proc.join(timeout=60)
    assert all(isinstance(o, list) for o in outcomes), outcomes
    tile = sorted((o[0][1], o[0][2]) for o in outcomes)
    assert tile == [("done", None), ("skipped", None), ("skipped", None)], outcomes  # written once
    waited = [w for o in outcomes for w in o[0][3] if "for another run working on this slide" in w]
    assert len(waited) == 2  # and said so
    store = PatchStore.open(tmp_path / "out" / "slides" / "alpha" / "patches.zarr")
    assert store.is_complete and len(store.coords) > 0 and store.verify(deep=True) == []


@pytest.mark.slow
def test_three_runs_at_once_on_one_folder(inputs, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    command = [
        sys.executable,
        "-m",
        "slidestream",
        "run",
        str(inputs),
        "-o",
        str(out),
        "--workers",
        "1",
        *OPTIONS,
    ]
    procs = [subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(3)]  # fmt: skip
    results = [(*p.communicate(timeout=300), p.returncode) for p in procs]
    for _, err, _ in results:  # before: KeyError 'coords', directory not empty, ContainsArrayError
        assert "Traceback" not in err and "Error" not in err, err
    assert any(code == 0 for _, _, code in results), results
    assert all(check.ok for check in verify_results(out, deep=True))
    stores = {p.parent.name: PatchStore.open(p) for p in out.glob("slides/*/patches.zarr")}
    assert set(stores) == {"alpha", "beta"} and all(s.is_complete and len(s.coords) for s in stores.values())
    assert all(s.feature_names() == ["stain_stats"] for s in stores.values())
    tiled = [
        r for r in read_manifest(out / "manifest.jsonl") if r["step"] == "tile" and r["status"] == "done"
    ]
    assert sorted(r["slide_id"] for r in tiled) == ["alpha", "beta"]  # nothing written twice
    assert not list(out.glob("slides/*/.slidestream.lock"))


def test_run_batch_result_reports_no_cluster_for_a_finished_batch(inputs, run_copy, monkeypatch):
    _no_cluster(monkeypatch)
    slides, _ = find_slides([inputs])
    config = replace(load_config(out=run_copy, progress=False, **{"tiling.mpp": 1.0, "tiling.size": 64}))
    result = run_batch(slides, config)
    assert result.ok and not result.started_cluster and {r.status for r in result.records} == {"skipped"}


def test_synth_never_replaces_an_existing_file(tmp_path, capsys):
    slide = tmp_path / "patient-7.svs"
    slide.write_bytes(b"a real scan")
    assert (
        main(["synth", str(slide), "--dimensions", "300x200", "--quiet"]) == 2
    )  # before: replaced by a synthetic slide
    assert "patient-7.svs exists; it was left as it is" in capsys.readouterr().err
    assert slide.read_bytes() == b"a real scan" and sorted(p.name for p in tmp_path.iterdir()) == [
        "patient-7.svs"
    ]

"""Per-slide and start-up costs of `slidestream run` on small slides: what a tile-only run must not pay."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask

from slidestream.pipeline.runner import LOCAL_WORKER_CONFIG

_TILE_ONLY = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from slidestream.discovery import SlideInput
    from slidestream.pipeline import load_config, process_slide

    config = load_config(out=Path(sys.argv[2]), steps=("tile",), progress=False)
    (record,) = process_slide(SlideInput("cmu", Path(sys.argv[1])), config)
    assert record.status == "done", record
    print("torch imported:", "torch" in sys.modules)
    """
)


def test_a_tile_only_run_never_imports_torch(cmu_path, tmp_path):
    """Importing torch costs each worker seconds and hundreds of MB; tiling does not need it."""
    done = subprocess.run([sys.executable, "-c", _TILE_ONLY, str(cmu_path), str(tmp_path / "out")],
                          capture_output=True, text=True, check=True)  # fmt: skip
    assert "torch imported: False" in done.stdout
    assert (tmp_path / "out" / "slides" / "cmu" / "thumbnail.png").stat().st_size > 0


def test_local_workers_config_names_dask_settings_that_exist():
    """The overrides for the local cluster's workers must name dask's own keys (a renamed key would silently
    do nothing): the profiler switch, and the spawn environment less only MALLOC_TRIM_THRESHOLD_."""
    import distributed  # noqa: F401  (loads its configuration defaults)

    assert dask.config.get("distributed.worker.profile.enabled") is True  # the default we turn off
    default = dask.config.get("distributed.nanny.pre-spawn-environ")
    ours = LOCAL_WORKER_CONFIG["distributed.nanny.pre-spawn-environ"]
    assert set(default) - set(ours) == {"MALLOC_TRIM_THRESHOLD_"} and set(ours) <= set(default)
    assert LOCAL_WORKER_CONFIG["distributed.worker.profile.enabled"] is False


def test_the_command_line_starts_without_pandas():
    """Every command's parser is built at start: a command that needs pandas (0.3 s to import) imports it when
    it runs, not when `slidestream run` starts."""
    code = (
        "import sys; from slidestream.cli import build_parser; build_parser(); print('pandas' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

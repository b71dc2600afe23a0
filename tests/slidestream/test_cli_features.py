"""`slidestream features` over a run folder."""

from __future__ import annotations

from slidestream.cli import main
from tiling import PatchStore


def test_features_for_every_store(synthetic_slide, tmp_path, capsys):
    out = tmp_path / "run"
    assert (
        main(["tile", str(synthetic_slide.path), "-o", str(out), "--mpp", "1.0", "--size", "64", "-q"]) == 0
    )
    assert main(["features", str(out), "--encoder", "stain_stats", "--workers", "0", "-q"]) == 0
    assert "synthetic: features/stain_stats" in capsys.readouterr().out
    store = PatchStore.open(out / "slides" / "synthetic" / "patches.zarr")
    assert store.features("stain_stats").shape == (len(store), 53)


def test_features_errors(tmp_path, capsys):
    assert main(["features", str(tmp_path)]) == 2
    assert "no patch stores" in capsys.readouterr().err
    (tmp_path / "slides" / "x" / "patches.zarr").mkdir(parents=True)
    assert main(["features", str(tmp_path), "--encoder", "nope_net"]) == 2
    assert "unknown encoder" in capsys.readouterr().err

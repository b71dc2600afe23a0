"""Atomic writes: a result appears whole under its name or not at all."""

from __future__ import annotations

import pytest

from wsi.atomic import atomic_file, replace_dir


def test_atomic_file_replaces_only_when_the_block_succeeds(tmp_path):
    target = tmp_path / "sub" / "table.csv"
    with atomic_file(target) as tmp:
        tmp.write_text("a\n1\n")
        assert not target.exists()  # nothing under the name until the block ends
    assert target.read_text() == "a\n1\n"
    with pytest.raises(RuntimeError), atomic_file(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "a\n1\n"  # the old content survives a failed write
    assert sorted(p.name for p in target.parent.iterdir()) == ["table.csv"]  # no temporary left behind


def test_replace_dir_swaps_a_whole_folder(tmp_path):
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "weights").write_text("2")
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "weights").write_text("1")
    (tmp_path / "model" / "stale").write_text("old file")
    replace_dir(tmp_path / "new", tmp_path / "model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    assert sorted(p.name for p in (tmp_path / "model").iterdir()) == ["weights"]
    assert (tmp_path / "model" / "weights").read_text() == "2"


def test_an_atomic_file_is_readable_by_others_like_any_result(tmp_path):
    import stat

    from wsi.atomic import atomic_file

    with atomic_file(tmp_path / "result.geojson") as tmp:
        tmp.write_text("{}")
    assert stat.S_IMODE((tmp_path / "result.geojson").stat().st_mode) == 0o644

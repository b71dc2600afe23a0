"""TilingConfig: the one place tiling options live; values checked once; overrides checked; old names warn."""

from __future__ import annotations

import dataclasses

import pytest

import tiling
from tiling import TilingConfig, tile_slide_result
from tiling.inputs import OptionsChanged


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", 0), ("size", 1.5), ("stride", -1), ("mpp", 0), ("mpp", "0.5"), ("min_tissue", 1.5),
     ("roi_mode", "replcae"), ("codec", "zstd9"), ("scheduler", "tcp://host:8786"), ("shard_tiles", 0),
     ("shard_workers", 0), ("slide_mpp", 352.8), ("backend", "bioformats")],
)  # fmt: skip
def test_bad_values_are_refused_where_the_config_is_built(field, value):
    with pytest.raises(ValueError, match=rf"TilingConfig\.{field}.*{value!r}"[:40].replace("(", r"\(")):
        TilingConfig(**{field: value})


def test_equal_values_give_equal_configs():
    import numpy as np

    assert TilingConfig(mpp=1, min_tissue=0) == TilingConfig(mpp=1.0, min_tissue=0.0)
    numpy_values = TilingConfig(size=np.int64(128), mpp=np.float32(0.5), shard_tiles=np.uint8(8))
    assert numpy_values == TilingConfig(size=128, mpp=0.5, shard_tiles=8)
    assert type(numpy_values.size) is int and type(numpy_values.mpp) is float
    assert isinstance(TilingConfig(mpp=1).mpp, float)
    with pytest.raises(dataclasses.FrozenInstanceError):
        TilingConfig().size = 128


def test_overrides_are_checked_against_the_fields(synthetic_slide, tmp_path):
    with pytest.raises(TypeError, match=r"unknown tiling option\(s\) \['tile_size'\]"):
        tiling.tile_slide(synthetic_slide.path, tmp_path / "x.zarr", tile_size=128)
    with pytest.raises(TypeError, match="config must be a TilingConfig"):
        tiling.tile_slide(synthetic_slide.path, tmp_path / "x.zarr", 128)
    assert not (tmp_path / "x.zarr").exists()
    assert TilingConfig(size=64).with_overrides(mpp=2.0) == TilingConfig(size=64, mpp=2.0)


def test_a_roi_mode_typo_fails_before_anything_is_written(synthetic_slide, tmp_path):
    with pytest.raises(ValueError, match="roi_mode.*'replcae'"):
        tiling.tile_slide(synthetic_slide.path, tmp_path / "t.zarr", roi_mode="replcae")
    assert not (tmp_path / "t.zarr").exists()


def test_config_and_overrides_make_the_same_store(synthetic_slide, tmp_path):
    config = TilingConfig(size=128, mpp=1.0, codec="zstd")
    first = tile_slide_result(synthetic_slide.path, tmp_path / "s.zarr", config)
    assert first.status == "done" and first.store.attrs["tiling"]["size"] == 128
    # The same options as keywords, and options that change only how the work runs: the store is kept.
    again = tile_slide_result(synthetic_slide.path, tmp_path / "s.zarr", size=128, mpp=1.0, codec="zstd",
                              shard_workers=1, scheduler="synchronous")  # fmt: skip
    assert again.status == "skipped"
    # A content option changed: the complete store is kept unless overwrite is asked for (issue 15).
    with pytest.raises(OptionsChanged, match=r"min-tissue 0.5 -> 0.0"):
        tile_slide_result(synthetic_slide.path, tmp_path / "s.zarr", config, min_tissue=0.0)
    changed = tile_slide_result(
        synthetic_slide.path, tmp_path / "s.zarr", config, min_tissue=0.0, overwrite=True
    )
    assert changed.status == "done" and changed.tiles > first.tiles


def test_old_workers_keyword_warns_and_still_works(synthetic_slide, tmp_path):
    with pytest.warns(DeprecationWarning, match="'workers' is deprecated.*'shard_workers'") as caught:
        store = tiling.tile_slide(synthetic_slide.path, tmp_path / "w.zarr", size=128, mpp=1.0, workers=1)
    assert store.is_complete and len(store) > 0
    assert caught[0].filename == __file__  # the warning points at the caller's line
    with pytest.raises(TypeError, match="both 'workers'"):
        tiling.tile_slide(synthetic_slide.path, tmp_path / "w.zarr", workers=1, shard_workers=1)


def test_old_keywords_of_readers_warn(synthetic_slide):
    from tiling.grid import TileSpec
    from tiling.tissue import TissueParams, detect_tissue_mask
    from wsi.synthetic import SyntheticSpec

    spec = TileSpec(size=64, stride=64, mpp=1.0, slide_mpp=0.25, level=1, downsample=4.0)
    with pytest.warns(DeprecationWarning, match="'mpp' is deprecated"):
        reader = tiling.TileReader(synthetic_slide.path, spec, mpp=0.25)
    assert reader.slide_mpp == 0.25
    with pytest.warns(DeprecationWarning, match="'mpp' is deprecated"):
        assert reader.mpp == 0.25
    import numpy as np

    image = np.full((64, 64, 3), 240, np.uint8)
    with pytest.warns(DeprecationWarning, match="'um_per_px' is deprecated"):
        mask = detect_tissue_mask(image, um_per_px=8.0, params=TissueParams())
    assert mask.shape == (64, 64) and not mask.any()
    with pytest.warns(DeprecationWarning, match="'um' is deprecated.*'px_per_um'"):
        assert SyntheticSpec(128, 128, mpp=0.25).um == 4.0
    assert SyntheticSpec(128, 128, mpp=0.25).px_per_um == 4.0


def test_other_options_are_named_as_a_user_reads_them():
    """What `slidestream tile` says when the README's next example meets the last one's store: no None, no
    False, no ROI hash."""
    from shapely.geometry import box

    from tiling.inputs import changes, tiling_inputs

    slide = {"size": 1, "sha256": "x"}
    old = tiling_inputs("s.svs", TilingConfig(), None, identity=slide)
    new = tiling_inputs("s.svs", TilingConfig(size=512, stride=448, magnification=40, coords_only=True),
                        box(0, 0, 10, 10), identity=slide)  # fmt: skip
    said = "; ".join(changes(old, new))
    assert "stride default -> 448" in said and "magnification default -> 40" in said, said
    assert "coords-only off -> on" in said and "no ROI -> a ROI" in said, said
    assert "None" not in said and "False" not in said and "True" not in said, said

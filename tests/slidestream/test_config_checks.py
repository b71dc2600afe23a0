"""The run's TOML config: every key's type and allowed values checked, the file, table, key, value and what is
allowed named; unknown keys named with the closest known one."""

from __future__ import annotations

import pytest

from slidestream.pipeline import load_config


@pytest.mark.parametrize(
    ("toml", "said"),
    [
        ('[run]\noverwrite = "false"\n', "[run] overwrite = 'false': must be true or false"),
        ('[run]\nworkers = "two"\n', "[run] workers = 'two': must be an integer"),
        ("[run]\nslide_workers = 0\n", "[run] slide_workers = 0: must be more than 0"),
        ('[run]\nsteps = "tile"\n', "[run] steps = 'tile': must be a list of strings"),
        ("[run]\nscheduler_timeout = -1\n", "[run] scheduler_timeout = -1: must be more than 0"),
        ('[tiling]\nroi_mode = "restirct"\n',
         "[tiling] roi_mode = 'restirct' is not allowed (did you mean 'restrict'?); allowed: 'restrict', 'replace'"),
        ('[tiling]\nroi_mode = "replace"\n', "roi_mode 'replace' tiles a ROI instead of the tissue, but no roi"),
        ('[tiling]\ncodec = "jpg"\n', "allowed: 'auto', 'jpeg', 'lz4', 'zstd', 'zstd3', 'none'"),
        ("[tiling]\nmin_tissue = 2\n", "[tiling] min_tissue = 2: must be a fraction between 0 and 1"),
        ('[tiling]\nsize = "256"\n', "[tiling] size = '256': must be an integer"),
        ("[tiling]\nsize = 256.0\n", "[tiling] size = 256.0: must be an integer"),
        ("[tiling]\nmpp = 20\n", "[tiling] mpp = 20: 20 um/px is coarser than 4 um/px (2.5x) and looks like a "
                                 "magnification"),
        ("[tiling]\ncoords_only = 1\n", "[tiling] coords_only = 1: must be true or false"),
        ("[tiling]\nmpp = 0.5\nmagnification = 20\n", "[tiling] gives both mpp and magnification"),
        ("[tiling]\nsize = 64\noverlap = 64\n", "overlap (64 px) must be smaller than the tile size (64 px)"),
        ("[tiling]\nstride = 32\noverlap = 8\n", "give a stride or an overlap, not both"),
        ('[features]\ndevice = "gpu"\n', "[features] device = 'gpu': must be auto, cpu, cuda or cuda:N"),
        ("[features]\nbatch_size = 0\n", "[features] batch_size = 0: must be more than 0"),
        ('[features]\nencoder_args = "x"\n', "[features] encoder_args = 'x': must be a table"),
        ("[run]\nslide_worker = 2\n", "[run] slide_worker: unknown key (did you mean 'slide_workers'?)"),
        ("[tiling]\nmpp_target = 1\n", "[tiling] mpp_target: unknown key (did you mean 'mpp'?)"),
        ("[tilling]\nmpp = 1\n", "unknown table [tilling] (did you mean 'tiling'?)"),
        ("run = 3\n", "run = 3 must be a table"),
    ],
)  # fmt: skip
def test_bad_config_values_name_the_file_key_value_and_what_is_allowed(toml, said, tmp_path):
    path = tmp_path / "run.toml"
    path.write_text(toml)
    with pytest.raises(ValueError) as exc:
        load_config(path)
    assert str(exc.value).startswith(str(path)) and said in str(exc.value)


def test_good_config_values_and_their_command_line_overrides(tmp_path):
    path = tmp_path / "run.toml"
    roi = tmp_path / "rois"  # a folder of <slide_id>.geojson
    roi.mkdir()
    path.write_text('[run]\noverwrite = false\nslide_workers = 2\nscheduler_timeout = 5\n'
                    f'[tiling]\nmagnification = 40\nsize = 128\noverlap = 16\nroi_mode = "replace"\nroi = "{roi}"\n'
                    '[features]\ndevice = "cuda:1"\n')  # fmt: skip
    config = load_config(path)
    assert config.overwrite is False and config.slide_workers == 2 and config.scheduler_timeout == 5
    assert (
        config.tiling.magnification == 40
        and config.tiling.stride == 112
        and config.tiling.roi_mode == "replace"
    )
    # The command line wins: --mpp replaces the file's magnification, --stride its overlap.
    config = load_config(path, **{"tiling.mpp": 0.25, "tiling.stride": 100})
    assert config.tiling.magnification is None and config.tiling.mpp == 0.25 and config.tiling.stride == 100
    config = load_config(path, **{"tiling.overlap": 8, "tiling.size": 64})
    assert config.tiling.stride == 56


def test_a_bad_roi_file_is_refused_once_when_the_config_is_built(tmp_path):
    bad = tmp_path / "roi.geojson"
    bad.write_text("[1, 2, 3]")
    with pytest.raises(ValueError, match=r"roi.geojson: item 0 is 1, not a GeoJSON Feature; a ROI file is"):
        load_config(**{"tiling.roi": str(bad)})
    with pytest.raises(ValueError, match="no such file or folder"):
        load_config(**{"tiling.roi": str(tmp_path / "missing.geojson")})

"""Arguments: bad values refused by the parser (exit status 2, the option named) before any slide is opened;
the tiling options shared by `tile` and `run`; --magnification and --overlap; every --help with defaults and
examples that parse as written."""

from __future__ import annotations

import argparse
import shlex

import pytest

from slidestream.cli import build_parser, main
from slidestream.commands._help import EXAMPLES


def _refused(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("command", ["tile", "run"])
@pytest.mark.parametrize(
    ("option", "value", "said"),
    [
        ("--mpp", "0", "positive resolution"),
        ("--mpp", "-0.5", "positive resolution"),
        ("--mpp", "nan", "finite"),
        ("--size", "-5", "positive integer"),
        ("--size", "0", "positive integer"),
        ("--size", "2.5", "integer"),
        ("--min-tissue", "2", "between 0 and 1"),
        ("--stride", "0", "positive integer"),
        ("--overlap", "-1", "0 or more"),
        ("--magnification", "0", "magnification"),
        ("--slide-mpp", "0", "scan resolution"),
        ("--workers", "0", "positive integer"),
    ],
)
def test_bad_values_are_refused_by_the_parser(command, option, value, said, tmp_path, capsys):
    missing = tmp_path / "never-opened.svs"  # the parser refuses first: the slide is never looked for
    err = _refused([command, str(missing), "-o", str(tmp_path / "out"), option, value], capsys)
    assert f"argument {option}" in err and said in err
    assert not (tmp_path / "out").exists()


def test_mpp_that_looks_like_a_magnification_gets_a_hint(tmp_path, capsys):
    err = _refused(["tile", "x.svs", "-o", str(tmp_path / "o"), "--mpp", "20"], capsys)
    assert "argument --mpp" in err and "looks like a magnification" in err and "--magnification 20" in err


def test_out_naming_an_existing_file_is_refused_and_left_alone(tmp_path, capsys):
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    for command in ("tile", "run"):
        err = _refused([command, "x.svs", "-o", str(target)], capsys)
        assert "argument -o/--out" in err and "not a folder" in err
    assert target.read_text() == "keep me"


def test_synth_refuses_a_tile_size_that_would_never_end(tmp_path, capsys):
    for value in ("0", "-16", "100"):
        err = _refused(["synth", str(tmp_path / "s.svs"), "--tile-size", value], capsys)
        assert "argument --tile-size" in err and "multiple of 16" in err
    assert not (tmp_path / "s.svs").exists()
    assert "argument --quality" in _refused(["synth", str(tmp_path / "s.svs"), "--quality", "0"], capsys)


def test_stride_and_overlap_and_mpp_and_magnification_exclude_each_other(tmp_path, capsys):
    assert "not allowed with" in _refused(["tile", "x", "-o", "o", "--stride", "8", "--overlap", "8"], capsys)
    assert "not allowed with" in _refused(
        ["run", "x", "-o", "o", "--mpp", "1", "--magnification", "20"], capsys
    )


def _option_strings(parser, title="tiling"):
    group = next(g for g in parser._action_groups if g.title == title)
    return sorted(s for a in group._group_actions for s in a.option_strings)


def test_run_takes_the_tiling_options_tile_takes():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    tile, run = _option_strings(sub["tile"]), _option_strings(sub["run"])
    assert tile == run
    for option in (
        "--stride",
        "--overlap",
        "--codec",
        "--coords-only",
        "--roi-mode",
        "--magnification",
        "--exact",
    ):
        assert option in run


def test_tile_magnification_and_overlap(cmu_path, tmp_path, capsys):
    """CMU-1-Small-Region records 20x at 0.499 um/px: --magnification 20 tiles at 0.499, 10 at 0.998."""
    from tiling import PatchStore

    out = tmp_path / "o"
    assert main(["tile", str(cmu_path), "-o", str(out), "--magnification", "10", "--size", "128", "--overlap",
                 "32", "--coords-only", "-q"]) == 0  # fmt: skip
    spec = PatchStore.open(out / "slides" / cmu_path.stem / "patches.zarr").attrs["tiling"]
    assert spec["mpp"] == pytest.approx(0.499 * 2) and spec["stride"] == 96 and spec["size"] == 128
    capsys.readouterr()
    assert main(["tile", str(cmu_path), "-o", str(out), "--size", "128", "--overlap", "128", "-q"]) == 2
    assert "overlap (128 px) must be smaller than the tile size (128 px)" in capsys.readouterr().err


def test_magnification_without_objective_power_uses_the_convention():
    from tiling import TilingConfig
    from wsi.meta import SlideMeta

    def meta(power):
        return SlideMeta(path=None, dimensions=(10, 10), level_dimensions=((10, 10),), level_downsamples=(1.0,),
                         mpp=0.25, objective_power=power, vendor="x", backend="x")  # fmt: skip

    config = TilingConfig(magnification=20)
    assert config.target_mpp(meta(40)) == pytest.approx(0.5)
    assert config.target_mpp(meta(None)) == pytest.approx(10 / 20)
    assert TilingConfig(mpp=0.3).target_mpp(meta(40)) == 0.3
    assert "magnification" not in TilingConfig().content()  # stores made before it keep their fingerprints
    with pytest.raises(ValueError, match="magnification"):
        TilingConfig(magnification=-1)


def _parsers(parser, path=""):
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _parsers(sub, f"{path} {name}".strip())


def test_every_help_shows_defaults_and_ends_with_examples_that_parse():
    parser = build_parser()
    for path, sub in _parsers(parser):
        text = sub.format_help()
        assert text.rstrip().splitlines()[-1].strip().startswith("slidestream"), path
        assert "examples:" in text, path
        for action in sub._actions:
            if action.option_strings and action.default not in (None, False, argparse.SUPPRESS) and action.help \
                    != argparse.SUPPRESS:  # fmt: skip
                assert "default" in sub._get_formatter()._expand_help(action), (path, action.option_strings)
    for path, lines in EXAMPLES.items():
        for line in lines:
            argv = shlex.split(line, comments=True)
            assert argv[0] == "slidestream"
            args = build_parser().parse_args(argv[1:])
            assert path == "" or getattr(args, "func", None), line


def test_every_argument_of_every_command_says_what_it_is():
    """`--help` explains each option and positional argument of every subcommand, found by walking the parser's
    subparsers (synth's OUT.svs, survival fit's TABLE.csv, synth-cohort's OUT and mil train's --task had none), in
    words of its own rather than only the "(default: ...)" filled in for an option without help."""
    missing = []
    paths = []
    for path, sub in _parsers(build_parser()):
        paths.append(path)
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction | argparse._SubParsersAction):
                continue
            # "(default: ...)" alone is what finish_help fills in for an option without help: it says no meaning
            if not action.help or action.help.startswith("(default"):
                missing.append((path, action.option_strings or action.metavar or action.dest))
    assert {"synth-cohort", "nuclei train", "nuclei segment", "mil train", "survival fit"} <= set(paths)
    assert not missing, missing


def test_unreachable_scheduler_is_named_with_its_timeout(cmu_path, tmp_path, capsys):
    code = main(["run", str(cmu_path), "-o", str(tmp_path / "o"), "--steps", "tile",
                 "--scheduler-address", "tcp://127.0.0.1:9", "--scheduler-timeout", "1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert "could not reach the dask scheduler at tcp://127.0.0.1:9 within 1 s" in err
    assert "Traceback" not in err


def test_every_cluster_command_takes_the_scheduler_timeout(cmu_path, tmp_path, capsys):
    """`nuclei slides` and `demo` share run's --scheduler-address / --scheduler-timeout (one declaration)."""
    out = tmp_path / "o"
    assert main(["tile", str(cmu_path), "-o", str(out), "--mpp", "4", "--size", "64", "-q"]) == 0
    code = main(["nuclei", "slides", str(out), "--classical", "-q", "--scheduler-address", "tcp://127.0.0.1:9",
                 "--scheduler-timeout", "1"])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert (
        "could not reach the dask scheduler at tcp://127.0.0.1:9 within 1 s" in err and "Traceback" not in err
    )
    args = build_parser().parse_args(["demo", "--scheduler-address", "tcp://h:1", "--scheduler-timeout", "5"])
    assert (args.scheduler_address, args.scheduler_timeout) == ("tcp://h:1", 5.0)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["demo", "--scheduler-timeout", "0"])


def test_run_dry_run_with_the_tiling_options(cmu_path, tmp_path, capsys):
    code = main(["run", str(cmu_path), "-o", str(tmp_path / "o"), "--magnification", "20", "--size", "128",
                 "--overlap", "16", "--codec", "zstd", "--coords-only", "--dry-run"])  # fmt: skip
    assert code == 0
    said = capsys.readouterr().out
    assert (
        "tiling: 128 px at 20x (the mpp from each slide's objective power), stride 112 (16 px overlap)"
        in said
    )
    # The options given are all shown (only size, mpp and tissue were).
    assert "coordinates only" in said, said
    roi = tmp_path / "roi.geojson"
    roi.write_text('{"type": "Polygon", "coordinates": [[[0, 0], [500, 0], [500, 500], [0, 0]]]}')
    assert (
        main(
            ["run", str(cmu_path), "-o", str(tmp_path / "o"), "--roi", str(roi), "--qc", "blur", "--dry-run"]
        )
        == 0
    )
    said = capsys.readouterr().out
    assert f"ROI {roi} (restricting the tissue), QC blur, codec auto" in said, said
    assert main(["run", str(cmu_path), "-o", str(tmp_path / "o"), "--size", "256", "--stride", "300", "--roi",
                 str(roi), "--roi-mode", "replace", "--dry-run"]) == 0  # fmt: skip
    said = capsys.readouterr().out
    assert f"stride 300 (44 px gap), min tissue 0.5, ROI {roi} (instead of the tissue)" in said, said


def test_run_refuses_roi_mode_replace_without_a_roi(cmu_path, tmp_path, capsys):
    """--roi-mode replace alone was accepted and silently ignored (the tissue was tiled)."""
    assert main(["run", str(cmu_path), "-o", str(tmp_path / "o"), "--roi-mode", "replace", "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "roi_mode 'replace' tiles a ROI instead of the tissue, but no roi is given (--roi" in err, err


@pytest.mark.parametrize("share", ["0", "1", "1.5"])
def test_self_train_share_is_checked_as_parsed(share, capsys):
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(
            ["nuclei", "train", "--data", "synthetic", "-o", "m", "--self-train-share", share]
        )
    assert exc.value.code == 2 and "--self-train-share" in capsys.readouterr().err
    assert build_parser().parse_args(["nuclei", "train", "--data", "synthetic", "-o", "m",
                                      "--self-train-share", "0.3"]).self_train_share == 0.3  # fmt: skip

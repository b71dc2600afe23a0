"""What every `--help` ends with: the defaults of the options and two or three examples, as git and gdal do."""

from __future__ import annotations

import argparse

__all__ = ["EXAMPLES", "HelpFormatter", "finish_help"]

# Examples per command path ("" is `slidestream` itself); each line is a command that parses as written (a test
# parses every one). Comments after "#" say what the line does.
EXAMPLES: dict[str, tuple[str, ...]] = {
    "": (
        "slidestream demo -o demo                          # the whole pipeline on bundled and synthetic slides",
        "slidestream run slides/ -o results                # tissue, tiles and features of every slide",
        "slidestream tile slide.svs -o results --mpp 0.25  # patch stores only",
    ),
    "demo": (
        "slidestream demo",
        "slidestream demo -o demo --slides 1 --dimensions 4096x3072   # quicker",
    ),
    "run": (
        "slidestream run slides/ -o results",
        "slidestream run slides/ -o results-224 --magnification 20 --size 224 --overlap 32 --encoder stain_stats",
        "slidestream run slides/ -o results --config run.toml --roi rois/ --roi-mode replace --dry-run",
    ),
    "verify": (
        "slidestream verify results",
        "slidestream verify results --deep    # also compare every chunk's checksum",
    ),
    "info": (
        "slidestream info slide.svs",
        "slidestream info --json slide.svs other.tiff",
        "slidestream info scan.tiff --slide-mpp 0.25   # a file whose metadata lacks its resolution",
    ),
    "synth": (
        "slidestream synth synthetic.svs",
        "slidestream synth small.svs --dimensions 4096x3072 --slide-mpp 0.5 --tumor --seed 3",
    ),
    "synth-cohort": (
        "slidestream synth-cohort cohort",
        "slidestream synth-cohort cohort --n 12 --dimensions 4096x4096 --seed 1",
    ),
    "tile": (
        "slidestream tile slide.svs -o results",
        "slidestream tile slides/ -o results-40x --magnification 40 --size 512 --overlap 64 --min-tissue 0.25",
        "slidestream tile slide.svs -o results-roi --roi slide.geojson --roi-mode replace --coords-only",
    ),
    "features": (
        "slidestream features results",
        "slidestream features results --encoder uni_v1 --weights pytorch_model.bin --device cuda",
        "slidestream features --list-encoders",
    ),
    "nuclei": (
        "slidestream nuclei slides results   # nuclei of every slide of a results folder",
        "slidestream nuclei segment tile.png --mpp 0.25 -o labels.tiff",
        "slidestream nuclei evaluate --synthetic 32",
    ),
    "nuclei train": (
        "slidestream nuclei train --data synthetic -o nuclei-model --epochs 5",
        "slidestream nuclei train --data pannuke/ -o nuclei-model --init nuclei-model --device cuda",
    ),
    "nuclei segment": (
        "slidestream nuclei segment tile.png --mpp 0.25 -o labels.tiff",
        "slidestream nuclei segment tile.png --mpp 0.5 -o labels.tiff --classical",
    ),
    "nuclei evaluate": (
        "slidestream nuclei evaluate --synthetic 32",
        "slidestream nuclei evaluate image.png reference.tiff --mpp 0.25 --json scores.json",
    ),
    "nuclei slides": (
        "slidestream nuclei slides results",
        "slidestream nuclei slides results --classical --detections   # the baseline, as QuPath detections",
    ),
    "mil": (
        "slidestream mil train results --labels labels.csv --task binary --target cancer -o model",
        "slidestream mil predict results --model model -o predictions",
    ),
    "mil train": (
        "slidestream mil train results --labels labels.csv --task binary --target cancer -o model",
        "slidestream mil train results --labels labels.csv --task survival --target time event --group patient_id "
        "-o model",
        "slidestream mil train results_a results_b --labels a.csv --labels b.csv --task binary --target cancer "
        "--group patient_id -o model",
    ),
    "mil predict": (
        "slidestream mil predict results --model model -o predictions",
        "slidestream mil predict results --model model -o predictions --high-fraction 0.05",
    ),
    "survival": (
        "slidestream survival fit table.csv --time months --event death",
        "slidestream survival fit table.csv --time months --event death --covariates age grade --alpha 0.1",
    ),
    "survival fit": (
        "slidestream survival fit table.csv --time months --event death",
        "slidestream survival fit table.csv --time months --event death --time-unit months --cv 5",
    ),
    "export": (
        "slidestream export results --format clam -o clam",
        "slidestream export results --format clam -o clam --features stain_stats --overwrite",
    ),
}


class HelpFormatter(argparse.HelpFormatter):
    """Descriptions wrapped as usual; the examples epilog printed as written; every option's default shown
    (unless its help already says it, or it has none)."""

    def _fill_text(self, text, width, indent):
        if text.startswith("examples:"):
            return "\n".join(indent + line for line in text.splitlines())
        return super()._fill_text(text, width, indent)

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if (
            "default" in text.lower()
            or not action.option_strings
            or default in (None, False, argparse.SUPPRESS)
        ):
            return text
        return f"{text} (default: %(default)s)".lstrip()


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def finish_help(parser: argparse.ArgumentParser, path: str = "") -> None:
    """Give `parser` and its subcommands' parsers the formatter above and their EXAMPLES as an epilog."""
    parser.formatter_class = HelpFormatter
    examples = EXAMPLES.get(path)
    if examples:
        parser.epilog = "examples:\n" + "\n".join(f"  {line}" for line in examples)
    for action in parser._actions:
        if action.help is None and action.option_strings and action.default not in (None, False):
            action.help = "(default: %(default)s)"
    for name, sub in _subparsers(parser):
        finish_help(sub, f"{path} {name}".strip())

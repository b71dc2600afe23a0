"""`slidestream export RESULTS --format clam -o DIR`: a run folder's stores in the layout another toolkit reads."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from slidestream.commands._common import output_folder

EXAMPLES = """examples:
  slidestream export results --format clam -o clam_input
  slidestream export results --format clam -o clam_input --features stain_stats --overwrite

CLAM's Generic_MIL_Dataset: data_dir = clam_input/features (pt_files/<slide_id>.pt, or h5_files with use_h5)
CLAM's extract_features_fp.py: --data_h5_dir clam_input --csv_path clam_input/process_list_autogen.csv"""


def register(sub) -> None:
    from slidestream.export import list_export_formats

    p = sub.add_parser(
        "export",
        help="export patch coordinates and features for CLAM / TRIDENT",
        description="Writes DIR/patches/<slide_id>.h5 (coords with patch_level and patch_size attributes),\n"
        "DIR/features/h5_files/<slide_id>.h5 and DIR/features/pt_files/<slide_id>.pt (float32 features) and\n"
        "DIR/process_list_autogen.csv for every complete patch store of RESULTS (a `tile` or `run` output\n"
        "folder). Partial stores and stores without the asked features are skipped and listed.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("results", metavar="RESULTS", help="run folder written by `slidestream tile` or `run`")
    p.add_argument("--format", choices=list_export_formats(), default="clam", help="layout (default clam)")
    p.add_argument("-o", "--out", required=True, type=output_folder, metavar="DIR", help="output folder")
    p.add_argument("--features", help="feature set in the stores (default: the only one; none: coords only)")
    p.add_argument("--overwrite", action="store_true", help="replace files already in DIR")
    p.set_defaults(func=run)


def run(args) -> int:
    from slidestream.export import ExportConfig, export

    config = ExportConfig(Path(args.results), Path(args.out), args.format, args.features, args.overwrite)
    try:
        result = export(config)
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for slide in result.slides:
        what = (
            f"features/{slide.features} {slide.tiles} x {slide.feature_dim}"
            if slide.features
            else "no features"
        )
        print(f"{slide.slide_id}: {slide.tiles} tiles, {what}")
    for slide_id, reason in result.skipped:
        print(f"skipped: {slide_id}: {reason}", file=sys.stderr)
    if result.process_list is not None:
        print(f"{len(result.slides)} slide(s) exported to {args.out} (process list {result.process_list})")
    if result.skipped:
        print(f"{len(result.skipped)} store(s) skipped", file=sys.stderr)
        return 1
    return 0

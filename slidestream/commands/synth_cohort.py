"""`slidestream synth-cohort OUT`: synthetic slides with ground truth and a labels table that follows from it."""

from __future__ import annotations

import sys

from slidestream.commands._common import (
    add_quiet,
    non_negative_int,
    output_folder,
    parse_dimensions,
    positive_int,
    show_progress,
    slide_mpp,
)


def register(sub) -> None:
    p = sub.add_parser(
        "synth-cohort",
        help="write a synthetic cohort: slides, ground truth and labels.csv",
        description="Writes OUT/slides/S###.svs with their truth files and OUT/labels.csv (slide_id, patient_id, "
        "cancer, grade, mut_a, mut_b, time, event, and the ground truth tumor_fraction, lymphocytes, mucin, lookalikes); the README describes how each label follows "
        "from the slide's ground truth. Refuses an OUT that already holds a cohort.",
    )
    p.add_argument("out", metavar="OUT", type=output_folder,
                   help="folder written: slides/, the truth files and labels.csv (created; an existing cohort in "
                   "it is refused)")  # fmt: skip
    p.add_argument("--n", type=positive_int, default=40, help="number of slides (default 40)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="cohort seed (default 0)")
    p.add_argument("--dimensions", type=parse_dimensions, default=(8192, 8192),
                   help="level-0 WxH of each slide (default 8192x8192)")  # fmt: skip
    p.add_argument(
        "--slide-mpp", type=slide_mpp, default=0.25, help="the slides' level-0 um/px (default 0.25)"
    )
    p.add_argument(
        "--workers",
        type=positive_int,
        default=1,
        help="slides written at once, in separate processes (default 1)",
    )
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from wsi.synthetic.cohort import write_cohort

    try:
        cohort = write_cohort(args.out, n=args.n, seed=args.seed, dimensions=args.dimensions,
                              slide_mpp=args.slide_mpp, progress=show_progress(args), workers=args.workers)  # fmt: skip
    except (ValueError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    labels = cohort.labels
    print(f"wrote {len(cohort.slides)} slides of {labels['patient_id'].nunique()} patients to {args.out}/slides; "
          f"{int(labels['cancer'].sum())} with cancer; labels: {cohort.labels_path}")  # fmt: skip
    return 0

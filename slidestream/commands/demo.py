"""`slidestream demo`: the main job on the embedded default data, end to end, in a few minutes on 2 cores."""

from __future__ import annotations

from slidestream.commands._common import (
    add_quiet,
    add_scheduler_options,
    non_negative_int,
    output_folder,
    parse_dimensions,
    show_progress,
)


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the bundled real slide plus generated synthetic slides",
        description="Writes synthetic slides (with ground truth) beside a copy of the bundled real H&E slide "
        "(CMU-1-Small-Region.svs) and runs every pipeline step on them. Prints where to look.",
    )
    p.add_argument(
        "-o",
        "--out",
        type=output_folder,
        default="slidestream-demo",
        help="output folder (default ./slidestream-demo)",
    )
    p.add_argument(
        "--slides", type=non_negative_int, default=2, help="number of synthetic slides (default 2)"
    )
    p.add_argument(
        "--dimensions",
        type=parse_dimensions,
        default=(8192, 6144),
        help="level-0 WxH of each synthetic slide in pixels (default 8192x6144; smaller is quicker)",
    )
    add_scheduler_options(p)
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from slidestream.demo import DemoConfig, run_demo

    config = DemoConfig(out=args.out, synthetic_slides=args.slides, synthetic_dimensions=args.dimensions,
                        progress=show_progress(args), scheduler_address=args.scheduler_address,
                        scheduler_timeout=args.scheduler_timeout)  # fmt: skip
    return run_demo(config)

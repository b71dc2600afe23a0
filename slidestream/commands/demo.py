"""`slidestream demo`: the main job on the embedded default data, end to end, in a few minutes on 2 cores."""

from __future__ import annotations

from slidestream.commands._common import add_quiet, show_progress


def register(sub) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on the bundled real slide plus generated synthetic slides",
        description="Writes synthetic slides (with ground truth) beside a copy of the bundled real H&E slide "
        "(CMU-1-Small-Region.svs) and runs every pipeline step on them. Prints where to look.",
    )
    p.add_argument(
        "-o", "--out", default="slidestream-demo", help="output folder (default ./slidestream-demo)"
    )
    p.add_argument("--slides", type=int, default=2, help="number of synthetic slides (default 2)")
    add_quiet(p)
    p.set_defaults(func=run)


def run(args) -> int:
    from slidestream.demo import DemoConfig, run_demo

    return run_demo(DemoConfig(out=args.out, synthetic_slides=args.slides, progress=show_progress(args)))

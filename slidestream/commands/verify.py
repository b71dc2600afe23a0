"""`slidestream verify RESULTS [--deep]`: is every patch store of a results folder whole?"""

from __future__ import annotations

import sys


def register(sub) -> None:
    p = sub.add_parser(
        "verify",
        help="check every patch store of a results folder against its record",
        description="Checks RESULTS/slides/*/patches.zarr: each finished array recorded its chunk keys and their "
        "checksums; a listing finds deleted chunks (fast), --deep also re-reads every chunk and compares "
        "checksums. Damaged stores are repaired by running the same `slidestream run` (or `tile`) command again: "
        "only the missing parts are rewritten. Exit status 1 when anything is damaged.",
    )
    p.add_argument("results", metavar="RESULTS", help="results folder of `slidestream run` or `tile`")
    p.add_argument(
        "--deep", action="store_true", help="also compare every chunk's checksum (reads everything)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from slidestream.pipeline.verify import verify_results

    try:
        checks = verify_results(args.results, deep=args.deep)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    damaged = [c for c in checks if not c.ok]
    for check in checks:
        print(f"{check.slide_id}: {'ok' if check.ok else 'DAMAGED: ' + '; '.join(check.problems)}")
    how = "checksums" if args.deep else "listing"
    print(f"{len(checks)} store(s) checked ({how}), {len(damaged)} damaged")
    if damaged:
        print("repair: run the same `slidestream run` command again; only the missing parts are rewritten",
              file=sys.stderr)  # fmt: skip
        return 1
    return 0

"""The end-of-run report printed by `slidestream run` and `slidestream demo`."""

from __future__ import annotations

import sys

__all__ = ["report"]


def report(result, n_slides: int) -> int:
    """Print the outcome of `run_batch`; return the exit status: 1 when any slide failed (the last lines name
    them), else 0."""
    done = n_slides - len(result.failed)
    print(f"{done} of {n_slides} slide(s) processed -> {result.out}")
    print(f"summary: {result.out / 'summary.csv'}   manifest: {result.out / 'manifest.jsonl'}   "
          f"log: {result.out / 'run.log'}")  # fmt: skip
    if result.failed:
        for record in result.records:
            if record.status == "failed":
                print(f"FAILED {record.slide_id} ({record.step}): {record.error}", file=sys.stderr)
        print(f"{len(result.failed)} slide(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0

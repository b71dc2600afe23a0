"""The end-of-run report printed by `slidestream run` and `slidestream demo`."""

from __future__ import annotations

import sys

__all__ = ["report"]


def report(result, n_slides: int) -> int:
    """Print the outcome of `run_batch`; return the exit status: 1 when any slide failed (the last lines name
    them), 3 when the disk filled up, else 0."""
    done = n_slides - len(result.failed) - len(result.not_started)
    print(f"{done} of {n_slides} slide(s) processed -> {result.out}")
    if not result.started_cluster:
        print("nothing left to do: every slide was finished before (no cluster started)")
    print(f"summary: {result.out / 'summary.csv'}   manifest: {result.out / 'manifest.jsonl'}   "
          f"log: {result.out / 'run.log'}")  # fmt: skip
    for record in result.records:
        for warning in record.warnings:
            if "another run" in warning or "stale lock" in warning:
                print(f"{record.slide_id}: {warning}")
    if result.skipped:
        print(f"{len(result.skipped)} input file(s) not processed (listed in the manifest, step 'input')")
    if result.others:
        print(f"{len(result.others)} slide folder(s) in {result.out / 'slides'} belong to slides not in this input "
              f"(kept, not in this summary): {', '.join(result.others[:20])}")  # fmt: skip
    if result.disk_full:
        print(f"error: {result.disk_full}; the slides finished before are recorded as done. Free some space and "
              "run the same command again to complete the rest", file=sys.stderr)  # fmt: skip
        if result.not_started:
            print(f"not done: {', '.join(result.not_started)}", file=sys.stderr)
        return 3
    if result.failed:
        for record in result.records:
            if record.status == "failed":
                print(f"FAILED {record.slide_id} ({record.step}): {record.error}", file=sys.stderr)
        print(f"{len(result.failed)} slide(s) failed: {', '.join(result.failed)}", file=sys.stderr)
        return 1
    return 0

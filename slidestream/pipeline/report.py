"""What `slidestream run` and `slidestream demo` print: a line per slide as it finishes, and the end-of-run report."""

from __future__ import annotations

import sys

from slidestream.pipeline.manifest import slide_warnings

__all__ = ["report", "slide_lines", "totals"]

# How a step's status reads on the console.
_SAID = {"skipped": "skipped (already computed)"}


def slide_lines(slide_id: str, records) -> list[str]:
    """One slide's console lines: each step's status, its tiles, tissue and time, then one line per warning."""
    steps = ", ".join(f"{r.step} {_SAID.get(r.status, r.status)}" + (f" ({r.error})" if r.error and r.status == "failed" else "")
                      for r in records)  # fmt: skip
    measured: dict = {}
    for r in records:
        measured.update(r.measurements)
    facts = []
    if measured.get("tiles") is not None:
        size = (
            f" ({measured['tile_size']} px at {measured['tile_mpp']:g} um/px)"
            if measured.get("tile_mpp")
            else ""
        )
        facts.append(f"{measured['tiles']} tiles{size}")
    if measured.get("tissue_mm2") is not None:
        facts.append(f"tissue {measured['tissue_mm2']:.3g} mm2")
    seconds = sum(r.seconds for r in records)
    if seconds:
        facts.append(f"{seconds:.1f} s")
    lines = [f"{slide_id}: {steps}" + (f"; {', '.join(facts)}" if facts else "")]
    said = []
    for r in records:
        said += [w for w in r.warnings if w not in said]
    return lines + [f"  warning: {w}" for w in said]


def totals(result, n_slides: int) -> str:
    """One line: slides, tiles, tissue area, elapsed time and slides per hour of this run."""
    done = n_slides - len(result.failed) - len(result.not_started)
    tiles = tissue = nuclei = 0.0
    steps = set()
    worked = set()  # slides with a step done in this run (not skipped): the rate is of work done
    for r in result.records:
        steps.add(r.step)
        if r.step == "tile" and r.status in ("done", "skipped"):
            tiles += r.measurements.get("tiles") or 0
            tissue += r.measurements.get("tissue_mm2") or 0.0
        if r.step == "nuclei" and r.status in ("done", "skipped"):
            nuclei += r.measurements.get("nuclei") or 0
        if r.status in ("done", "failed"):
            worked.add(r.slide_id)
    parts = [f"{done} of {n_slides} slide(s) processed"]
    if "tile" in steps:  # a run of later steps only (e.g. `nuclei slides`) has no tile counts to add up
        parts.append(f"{int(tiles)} tiles, tissue {tissue:.3g} mm2")
    if "nuclei" in steps:
        parts.append(f"{int(nuclei):,} nuclei")
    line = ", ".join([*parts, f"{result.seconds:.1f} s"])
    if worked and result.seconds > 0:
        line += f" ({len(worked) / result.seconds * 3600:.0f} slides/hour)"
    return f"{line} -> {result.out}"


def report(result, n_slides: int) -> int:
    """Print the outcome of `run_batch` (the per-slide lines are printed as slides finish); return the exit
    status: 1 when any slide failed (the last lines name them), 3 when the disk filled up, else 0."""
    print(totals(result, n_slides))
    if not result.started_cluster:
        print("nothing left to do: every slide was finished before (no cluster started)")
    warned = sorted({r.slide_id for r in result.records if slide_warnings(r.warnings)})
    if warned:
        print(f"{len(warned)} slide(s) with warnings: {', '.join(warned[:20])}"
              f"{' ...' if len(warned) > 20 else ''} (above, and in the warnings column of summary.csv)")  # fmt: skip
    print(f"summary: {result.out / 'summary.csv'}   manifest: {result.out / 'manifest.jsonl'}   "
          f"log: {result.out / 'run.log'}")  # fmt: skip
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

"""What the checks made before a backend opens a slide cost (issue 14), measured in one run.

    python -m benchmarks.open_checks [--repeat 50]

Per slide: the file checks (`wsi.check_slide_file`: stat, kind, readable) and the uncached TIFF probe
(`wsi.tiff_probe`: truncation, pixel layout) against the whole `wsi.open_slide` (checks included), for the bundled
CMU-1-Small-Region.svs, a synthetic 4-level pyramid and a 16-bit grey TIFF (its intensity window is remembered
per file: set in the first open only). Target: checks + probe <= 10 ms per open (printed as a ratio to that limit) on a file that is not cached.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import wsi
from wsi.tiff_probe import _probe, probe_tiff

LIMIT_MS = 10.0
CMU = Path(__file__).resolve().parents[1] / "tests" / "data" / "CMU-1-Small-Region.svs"


def _median_ms(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        _probe.cache_clear()  # every open measured as the first of that file
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def _open(path: Path) -> None:
    with wsi.open_slide(path):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=50)
    args = parser.parse_args()
    from tests.wsi.bad_files import gray16_tiff
    from wsi.synthetic import SyntheticSpec, write_slide

    with tempfile.TemporaryDirectory() as tmp:
        synthetic = write_slide(
            Path(tmp) / "synthetic.svs", SyntheticSpec(8192, 6144, seed=1), progress=False
        ).path
        gray = Path(tmp) / "gray16.tif"
        gray16_tiff(gray, size=(4000, 3000), tiled=True)
        print(
            f"{'slide':24s} {'checks ms':>9s} {'probe ms':>9s} {'open ms':>9s} {'(checks+probe)/limit':>21s}"
        )
        for name, path in (("CMU-1-Small-Region.svs", CMU), ("synthetic 8192x6144", synthetic),
                           ("gray16 4000x3000", gray)):  # fmt: skip
            checks = _median_ms(lambda p=path: wsi.check_slide_file(p), args.repeat)
            probe = _median_ms(lambda p=path: probe_tiff(p), args.repeat)
            whole = _median_ms(lambda p=path: _open(p), args.repeat)
            print(f"{name:24s} {checks:9.2f} {probe:9.2f} {whole:9.2f} {(checks + probe) / LIMIT_MS:21.2f}")


if __name__ == "__main__":
    main()

"""What tile quality control and the pictures cost, against tiling the same slide, in one run.

    python -m benchmarks.pictures [--size 8192x6144] [--data bench-data] [--repeat 2]

On a synthetic slide at 0.25 um/px (cached in --data), 256 px tiles at 0.5 um/px: `tile_slide` without and
with `qc=("blur", "pen")` (each into a fresh store, best of --repeat), then the pictures of the store
(`slidestream.pipeline.steps.slide_pictures`: the 1024 px thumbnail read, the figure, the mask, the stitch).
Prints seconds, tiles/s and the ratios: QC is expected to cost about one extra read of every tile (ratio
about 2 against tiling alone, limit 2.5); the pictures should stay a small share of tiling (limit 0.5).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from benchmarks._slides import cached_slide_folder


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--size", default="8192x6144")
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()

    import tiling
    import wsi
    from slidestream.pipeline.steps import slide_pictures
    from tiling.thumbnail import stitch_image

    slide = cached_slide_folder(args.data, "pictures", 1, args.size, first_seed=1) / "slide-0.svs"
    config = tiling.TilingConfig(size=256, mpp=0.5)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        runs = {"plain": 0, "qc": 0}

        def tile(qc: tuple[str, ...]):
            name = "qc" if qc else "plain"
            runs[name] += 1
            return tiling.tile_slide(slide, tmp / f"{name}-{runs[name]}.zarr", config, qc=qc)

        plain_s, plain = _best(lambda: tile(()), args.repeat)
        qc_s, checked = _best(lambda: tile(("blur", "pen")), args.repeat)
        folder = tmp / "pictures"
        folder.mkdir()
        with wsi.open_slide(slide) as opened:
            tiling.write_tissue_geojson(
                folder / "tissue.geojson", tiling.detect_tissue(opened), opened.meta.mpp
            )
        pictures_s, _ = _best(lambda: slide_pictures(folder, slide, plain), args.repeat)
        n, qc = len(plain), checked.attrs["qc"]

        def thumbnail():
            with wsi.open_slide(slide) as opened:
                return opened.thumbnail(1024)

        read_s, image = _best(thumbnail, args.repeat)
        downsample = plain.attrs["slide"]["dimensions"][0] / image.shape[1]
        extent = 256 * 0.5 / plain.attrs["slide"]["mpp"]

        def stitch():
            return stitch_image(image.shape[:2], downsample, plain.coords, extent, patches=plain.patches)

        stitch_s, _ = _best(stitch, args.repeat)
    print(f"slide {slide.name} {args.size}, {n} tiles of 256 px at 0.5 um/px")
    print(f"tile_slide            {plain_s:6.2f} s  {n / plain_s:7.0f} tiles/s")
    print(f"tile_slide qc=blur,pen {qc_s:5.2f} s  {qc['tiles_measured'] / qc_s:7.0f} tiles/s   "
          f"dropped {qc['dropped_total']} ({qc['dropped']})")  # fmt: skip
    print(
        f"pictures              {pictures_s:6.2f} s  (of which: thumbnail read {read_s:.2f} s, stitch "
        f"{stitch_s:.2f} s; the rest draws and writes three PNGs)"
    )
    print(f"ratio qc / plain       {qc_s / plain_s:5.2f}  (limit 2.5)")
    print(f"ratio pictures / plain {pictures_s / plain_s:5.2f}  (limit 0.5)")


if __name__ == "__main__":
    main()

"""Make the README's pictures: docs/thumbnail-cmu.jpg and docs/thumbnail-synthetic.jpg (with its ground truth).

    python docs/figures.py [--work DIR]

Tiles the bundled CMU-1-Small-Region slide and the demo's synthetic slide with a tumor (`synthetic-1`, 8192 x
6144 px at 0.25 um/px, seed 1) with `slidestream tile` at 256 px, 0.5 um/px, and keeps the thumbnail.png each
gets; the synthetic one is shown beside its ground truth (the true tissue outline and the tumor region).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DOCS = Path(__file__).resolve().parent
TUMOR_FILL = (255, 150, 0, 110)  # RGBA: orange, apart from the tiles' green and the stain's pink and purple


def truth_panel(slide_path: Path, height: int) -> Image.Image:
    """The synthetic slide's thumbnail with its true tissue outline and tumor region, as a figure."""
    import wsi
    from tiling.thumbnail import Overlay, draw_thumbnail
    from tiling.tissue import mask_to_geometry
    from wsi.synthetic import load_truth

    truth = load_truth(slide_path)
    with wsi.open_slide(slide_path) as slide:
        image = slide.thumbnail(1024)
        downsample = slide.meta.dimensions[0] / image.shape[1]
        mpp = slide.meta.mpp
    tumor = Image.fromarray(truth.tumor_mask.astype(np.uint8) * 255).resize(image.shape[1::-1], Image.NEAREST)
    layer = Image.new("RGBA", tumor.size, TUMOR_FILL)
    shown = Image.fromarray(image).convert("RGBA")
    shown.paste(layer, (0, 0), Image.fromarray((np.asarray(tumor) > 127).astype(np.uint8) * TUMOR_FILL[3]))
    tissue = mask_to_geometry(truth.tissue_mask, truth.mask_downsample)
    overlay = Overlay(tissue=tissue, slide_mpp=mpp, title="ground truth",
                      subtitle="true tissue outline; tumor region in orange")  # fmt: skip
    figure = Image.fromarray(draw_thumbnail(np.asarray(shown.convert("RGB")), downsample, overlay).image)
    return figure.resize((round(figure.width * height / figure.height), height), Image.LANCZOS)


def main(argv: list[str] | None = None) -> None:
    from slidestream.cli import main as slidestream
    from slidestream.demo import bundled_slide
    from wsi.synthetic import SyntheticSpec, write_slide

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", help="working folder (default: a temporary one, removed afterwards)")
    args = parser.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="slidestream-figures-"))
    try:
        slides = work / "input"
        slides.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(bundled_slide(), slides / "CMU-1-Small-Region.svs")
        synthetic = slides / "synthetic-1.svs"
        if not synthetic.exists():
            write_slide(synthetic, SyntheticSpec(8192, 6144, mpp=0.25, seed=1, tumor=True), progress=False)
        code = slidestream(
            ["tile", str(slides), "-o", str(work / "out"), "--mpp", "0.5", "--size", "256", "-q"]
        )
        if code != 0:
            raise SystemExit(f"slidestream tile failed ({code})")
        folder = work / "out" / "slides"
        cmu = Image.open(folder / "CMU-1-Small-Region" / "thumbnail.png").convert("RGB")
        cmu.save(DOCS / "thumbnail-cmu.jpg", quality=85, optimize=True)
        tiled = Image.open(folder / "synthetic-1" / "thumbnail.png").convert("RGB")
        truth = truth_panel(synthetic, tiled.height)
        both = Image.new("RGB", (tiled.width + 16 + truth.width, tiled.height), (255, 255, 255))
        both.paste(tiled, (0, 0))
        both.paste(truth, (tiled.width + 16, 0))
        if both.width > 1400:  # shown 600 px wide in the README: 1400 px is sharp on any screen
            both = both.resize((1400, round(both.height * 1400 / both.width)), Image.LANCZOS)
        both.save(DOCS / "thumbnail-synthetic.jpg", quality=85, optimize=True)
        print(f"wrote {DOCS / 'thumbnail-cmu.jpg'} and {DOCS / 'thumbnail-synthetic.jpg'}")
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

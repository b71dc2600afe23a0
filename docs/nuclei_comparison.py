"""Make docs/nuclei_synthetic_vs_real.png: real H&E beside `wsi.synthetic.cells.render_cells` fields, all at 0.5 um/px.

    python docs/nuclei_comparison.py [--real-crop tests/data/nuclei/hgsc_stromal_he.jpg]

Row 1: two 128 um squares of the hgsc stroma crop (0.45 um/px, resampled) and two of the CMU slide. Row 2: four
'loose' stroma fields (the scene most training fields show). Row 3: the stroma, nests, inflamed and mixed scenes.
The real crop is only looked at here (to make the renderer realistic), never trained on.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SIDE = 256  # px at 0.5 um/px


def real_row(crop_path: Path) -> list[np.ndarray]:
    import wsi

    crop = Image.open(crop_path).convert("RGB")
    crop = np.asarray(
        crop.resize((round(crop.width * 0.45 / 0.5), round(crop.height * 0.45 / 0.5)), Image.LANCZOS)
    )
    out = [crop[300 : 300 + SIDE, 300 : 300 + SIDE], crop[800 : 800 + SIDE, 700 : 700 + SIDE]]
    with wsi.open_slide(ROOT / "tests" / "data" / "CMU-1-Small-Region.svs") as slide:
        for x, y in ((800, 1200), (1300, 2150)):
            out.append(slide.read((x, y), (SIDE * 2, SIDE * 2), mpp=0.5)[:SIDE, :SIDE])
    return out


def main(argv: list[str] | None = None) -> None:
    from wsi.synthetic.cells import render_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--real-crop", type=Path, default=ROOT / "tests" / "data" / "nuclei" / "hgsc_stromal_he.jpg"
    )
    parser.add_argument("-o", "--out", type=Path, default=DOCS / "nuclei_synthetic_vs_real.png")
    args = parser.parse_args(argv)
    rows = [real_row(args.real_crop)]
    rows.append([render_cells((SIDE, SIDE), 0.5, np.random.default_rng(i), "loose").image for i in range(4)])
    scenes = ("stroma", "nests", "inflamed", "mixed")
    rows.append(
        [
            render_cells((SIDE, SIDE), 0.5, np.random.default_rng(10 + i), s).image
            for i, s in enumerate(scenes)
        ]
    )
    figure = Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in rows], 0))
    draw = ImageDraw.Draw(figure)
    captions = ("real: hgsc stroma (2), CMU-1 (2), all at 0.5 um/px", "synthetic: render_cells 'loose' stroma (4)",
                "synthetic: stroma, nests, inflamed, mixed")  # fmt: skip
    for i, text in enumerate(captions):
        draw.rectangle((0, i * SIDE, 8 + 6 * len(text), i * SIDE + 12), fill=(255, 255, 255))
        draw.text((3, i * SIDE), text, fill=(0, 0, 0))
    figure.save(args.out, optimize=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

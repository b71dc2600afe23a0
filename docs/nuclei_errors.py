"""Make docs/nuclei_errors.jpg: what the nuclei CNN gets wrong, on synthetic tiles with truth and on real H&E.

    python docs/nuclei_errors.py [--model DIR] [--before DIR]

Columns: three synthetic 256 px tiles at 0.5 um/px (the first mixed, nests and inflamed fields from seed 30000
on: neither training, validation nor held-out evaluation tiles) and one 256 px square of the CMU slide (real, unlabelled). Rows: the true outlines
(green; none for the CMU square), the `--before` model's (default: none) and the `--model` model's (default:
the shipped weights) outlines in yellow, with the nuclei that `nuclei.metrics.error_counts` calls merged
filled red (a prediction holding two or more true nuclei). Never drawn on the hgsc evaluation crop.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

DOCS = Path(__file__).resolve().parent
ROOT = DOCS.parent
SIDE = 256
CROWDED = ("mixed", "nests", "inflamed")  # one field of each, the first from seed 30000 on


def _outlined(image: np.ndarray, labels: np.ndarray, colour, truth: np.ndarray | None = None) -> np.ndarray:
    from skimage.segmentation import find_boundaries

    from nuclei.metrics import merged_predictions

    out = image.copy()
    if truth is not None and labels.max():  # predictions holding two or more true nuclei, filled red
        m = np.isin(labels, merged_predictions(truth, labels))
        out[m] = (0.5 * out[m] + [127, 0, 0]).astype(np.uint8)
    out[find_boundaries(labels, mode="inner")] = colour
    return out


def main(argv: list[str] | None = None) -> None:
    import nuclei
    import wsi
    from wsi.synthetic.cells import render_cells

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the shipped weights)")
    parser.add_argument("--before", help="a second model folder, drawn in the middle row")
    parser.add_argument("-o", "--out", type=Path, default=DOCS / "nuclei_errors.jpg")
    args = parser.parse_args(argv)
    paths = ([args.before] if args.before else []) + [args.model]  # None: the shipped weights
    models = [nuclei.load_model(p) if p else nuclei.default_model("cpu") for p in paths]
    fields, seed = {}, 30_000
    while len(fields) < len(CROWDED):
        field = render_cells((SIDE, SIDE), mpp=0.5, rng=np.random.default_rng([seed, 0]))
        if field.scene in CROWDED and field.scene not in fields:
            fields[field.scene] = field
        seed += 1
    columns = [(fields[s].image, fields[s].instances) for s in CROWDED]
    with wsi.open_slide(ROOT / "tests" / "data" / "CMU-1-Small-Region.svs") as slide:
        columns.append((slide.read((1000, 1950), (SIDE + 8, SIDE + 8), mpp=0.5)[:SIDE, :SIDE], None))
    rows = [[_outlined(img, truth, (0, 200, 0)) if truth is not None else img for img, truth in columns]]
    for model in models:
        rows.append([_outlined(img, nuclei.segment(img, mpp=0.5, model=model), (255, 230, 0), truth)
                     for img, truth in columns])  # fmt: skip
    figure = Image.fromarray(np.concatenate([np.concatenate(r, 1) for r in rows], 0))
    draw = ImageDraw.Draw(figure)
    names = [p or "shipped weights" for p in paths]
    captions = ["truth (green); last column: CMU-1, real, unlabelled"] + [
        f"{Path(str(n)).name}: outlines yellow, merged nuclei red" for n in names
    ]
    for i, text in enumerate(captions):
        draw.rectangle((0, i * SIDE, 8 + 6 * len(text), i * SIDE + 12), fill=(255, 255, 255))
        draw.text((3, i * SIDE), text, fill=(0, 0, 0))
    figure.save(args.out, quality=90)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

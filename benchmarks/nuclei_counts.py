"""Label-free check on real H&E: how many nuclei each model finds on a slide region (no reference needed).

    python -m benchmarks.nuclei counts [--model DIR ...] [--slide tests/data/CMU-1-Small-Region.svs]
        [--size 0] [--tta] [--threads 1]

Each --model (default: the shipped weights) segments the same region of --slide, read at the model's mpp
(`wsi.Slide.read`; --size N: the top-left N x N level-0 px, 0: the whole slide), with its own thresholds.
Printed per model: nuclei found, their median area, the mean nucleus probability and the share of pixels above
the foreground threshold. A guard for training rules that validation on other images cannot see: a fine-tuned
or self-trained model that stops finding nuclei on real H&E of another lab (e.g. self-training that turns the
teacher's misses into background) shows it here as a count that collapses.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

import nuclei
import wsi
from nuclei.inference import predict_maps
from nuclei.model import thresholds
from nuclei.postprocess import instances_from_maps
from nuclei.segment import DEFAULT_WEIGHTS


def count_nuclei(model, image: np.ndarray, tta: bool = False) -> dict[str, float]:
    """Nuclei found on `image` (already at the model's mpp) and what the probability map says, no reference."""
    prob, hv = predict_maps(model, image, tta=tta)
    post = thresholds(model)
    labels = instances_from_maps(prob, hv, post)
    areas = np.bincount(labels.ravel())[1:]
    areas = areas[areas > 0]
    return {"nuclei": int(len(areas)), "median_area_px": float(np.median(areas)) if len(areas) else 0.0,
            "mean_probability": float(prob.mean()), "foreground_share": float((prob > post.foreground).mean())}  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", action="append", help="model folder (repeat; default: the shipped weights)"
    )
    parser.add_argument("--slide", default="tests/data/CMU-1-Small-Region.svs")
    parser.add_argument("--size", type=int, default=0, help="top-left N x N level-0 px (0: the whole slide)")
    parser.add_argument("--tta", action="store_true", help="also with test-time augmentation")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.size < 0:
        raise SystemExit(f"--size must be 0 or more, got {args.size}")
    if args.threads:
        torch.set_num_threads(args.threads)
    folders = args.model or [str(DEFAULT_WEIGHTS)]
    figures: dict[str, dict[str, float]] = {}
    images: dict[float, np.ndarray] = {}
    with wsi.open_slide(args.slide) as slide:
        w, h = slide.meta.dimensions
        box = (min(w, args.size or w), min(h, args.size or h))
        for folder in folders:
            model = nuclei.load_model(folder)
            mpp = model.config.mpp
            if mpp not in images:
                images[mpp] = slide.read((0, 0), box, mpp=mpp)
            for tta in (False, True) if args.tta else (False,):
                f = figures[f"{folder}{' tta' if tta else ''}"] = count_nuclei(model, images[mpp], tta)
                print(f"{folder}{' (tta)' if tta else ''}: {f['nuclei']} nuclei, median area "
                      f"{f['median_area_px']:.0f} px, mean probability {f['mean_probability']:.4f}, "
                      f"foreground {f['foreground_share']:.2%}")  # fmt: skip
    print(f"({args.slide}: level-0 box {box[0]} x {box[1]} px from the top left, read at each model's mpp)")
    return figures

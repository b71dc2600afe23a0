"""Test-time augmentation on validation data: the model's maps with and without the four flips, same thresholds.

    python -m benchmarks.nuclei tta [--model DIR] [--real DIR [--real-mpp 0.44] [--real-grid 3]
        [--real-val-blocks 2 4 6]] [--synthetic 16] [--synthetic-seed S] [--threads 1]

For each validation set the model runs forward once without and once with `tta` (`predict_maps`); both maps are
post-processed with the model's own thresholds (`model.postprocess`, else the defaults) and scored pooled over
the set (`nuclei.metrics`). Sets: the held-out part of --real, split as the model was trained (the split in its
provenance["real"]["split"], or --real-grid / --real-val-blocks; `benchmarks.nuclei_thresholds`), resampled to
the model's mpp; and --synthetic tiles rendered with --synthetic-seed (default: the model's training seed +
10,000, the validation tiles `nuclei train --data synthetic` scored every epoch). Printed per set: P / R / F1 /
AJI / SQ / PQ without and with TTA, the PQ gain (pooled, and of each image alone: for --real, each held-out
block), and the forward time of each (TTA runs the network 4x).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import replace

import numpy as np
import torch

import nuclei
from benchmarks.nuclei_thresholds import _held_out, score_grid
from nuclei.datasets import NucleiTiles, resample_tiles, synthetic_tiles
from nuclei.inference import predict_maps
from nuclei.metrics import Scores
from nuclei.model import thresholds
from nuclei.segment import DEFAULT_WEIGHTS


def score_set(model, tiles: NucleiTiles, tta: bool) -> tuple[Scores, list[float], float]:
    """Pooled scores of `model` on `tiles` with or without TTA (the model's thresholds), the PQ of each image
    alone, and the forward seconds."""
    post = thresholds(model)
    start = time.perf_counter()
    with torch.inference_mode():
        maps = [predict_maps(model, image, tta=tta) for image in tiles.images]
    seconds = time.perf_counter() - start
    pooled = score_grid(maps, tiles.instances, [post])[0]
    each = [score_grid([m], [t], [post])[0].pq for m, t in zip(maps, tiles.instances, strict=True)]
    return pooled, each, seconds


def _row(name: str, s: Scores, seconds: float) -> str:
    return (f"  {name:6s} P {s.precision:.3f} R {s.recall:.3f} F1 {s.f1:.3f} AJI {s.aji:.3f} SQ {s.sq:.3f} "
            f"PQ {s.pq:.4f}   forward {seconds:6.1f} s")  # fmt: skip


def _training_seed(model) -> int:
    config = ((getattr(model, "provenance", None) or {}).get("train_config")) or {}
    return int(config.get("seed", 0))


def main(argv: list[str] | None = None) -> dict[str, dict]:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: the shipped weights, nuclei/weights)")
    parser.add_argument("--real", help="labelled dataset folder; its held-out part is scored")
    parser.add_argument("--real-mpp", type=float, help="its resolution when its dataset.json records none")
    parser.add_argument("--real-grid", type=int, help="default: the grid the model was trained with, else 3")
    parser.add_argument(
        "--real-val-blocks", type=int, nargs="+", help="default: the blocks the model was trained without"
    )
    parser.add_argument("--synthetic", type=int, default=16, help="synthetic validation tiles (0: none)")
    parser.add_argument("--synthetic-seed", type=int, help="default: the model's training seed + 10000")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.synthetic < 0:
        raise SystemExit(f"--synthetic must be 0 or more, got {args.synthetic}")
    if not args.real and not args.synthetic:
        raise SystemExit("nothing to score: give --real and/or --synthetic N")
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.model or str(DEFAULT_WEIGHTS)
    model = nuclei.load_model(folder)
    sets: dict[str, NucleiTiles] = {}
    if args.real:
        sets["real"] = resample_tiles(_held_out(args, model), model.config.mpp)
    if args.synthetic:
        seed = args.synthetic_seed if args.synthetic_seed is not None else _training_seed(model) + 10_000
        tiles = synthetic_tiles(args.synthetic, mpp=model.config.mpp, seed=seed)
        sets["synthetic"] = replace(tiles, source=f"synthetic tiles, seed {seed}")
    print(f"model {folder}; thresholds {thresholds(model)}; torch threads {torch.get_num_threads()}")
    figures: dict[str, dict] = {}
    for name, tiles in sets.items():
        n_true = sum(int(len(np.unique(t)) - 1) for t in tiles.instances)
        print(f"{name}: {tiles.source}: {len(tiles)} images, {n_true} nuclei")
        plain, plain_each, t_plain = score_set(model, tiles, tta=False)
        flipped, tta_each, t_tta = score_set(model, tiles, tta=True)
        print(_row("plain", plain, t_plain))
        print(_row("tta", flipped, t_tta))
        gains = [b - a for a, b in zip(plain_each, tta_each, strict=True)]
        print(f"  PQ gain {flipped.pq - plain.pq:+.4f}; forward time ratio tta / plain {t_tta / t_plain:.2f}")
        print("  PQ gain per image: " + " ".join(f"{g:+.4f}" for g in gains)
              + f" ({sum(g > 0 for g in gains)} of {len(gains)} above 0)")  # fmt: skip
        figures[name] = {"plain_pq": plain.pq, "tta_pq": flipped.pq, "time_ratio": t_tta / t_plain,
                         "pq_gain_per_image": gains}  # fmt: skip
    return figures

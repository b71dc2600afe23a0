"""Post-processing thresholds chosen on held-out real annotations: one forward pass, then a grid on the maps.

    python -m benchmarks.nuclei thresholds [--model DIR] --real DIR [--real-mpp 0.44] [--real-grid 3]
        [--real-val-blocks 2 4 6] [--foreground 0.3 0.4 ...] [--centre ...] [--min-size ...] [--slope ...]
        [--min-marker ...] [--max-hole ...] [--top 10] [--write [--min-gain 0.01]] [--threads 1]

The --real folder (any layout `nuclei.datasets.load_dataset` reads; --real-mpp only when it records no
resolution) is split as training split it (`nuclei.datasets.real_split`): by default the split recorded in the
model's provenance["real"]["split"] (its grid and held-out blocks, or its held-out images); --real-grid /
--real-val-blocks choose other blocks (the grid defaults to the model's, else 3). A model that records no split
needs --real-val-blocks; a model trained on every image of the --real folder (split {"held_out": "none"}) is
refused, blocks named or not (nothing of it is held out from the model). The held-out part is resampled to the model's mpp (`resample_tiles`). The model runs once per block (`predict_maps`, as training's
validation runs it); every combination of the threshold lists is then applied to the cached maps
(`instances_from_maps`) and scored pooled over the blocks (`nuclei.metrics`). Printed: the --top rows by PQ,
the defaults' row and the model's current thresholds' row. `--write` stores the best combination in the model
folder's config.json (atomically; the weights are not touched) when its PQ beats the defaults' by at least
--min-gain, with a record of the grid and the scores in provenance["postprocess"].
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch

import nuclei
from nuclei.datasets import DatasetError, real_split, resample_tiles
from nuclei.inference import predict_maps
from nuclei.metrics import Scores, aggregate, score
from nuclei.model import write_postprocess
from nuclei.postprocess import PostprocessConfig, instances_from_maps
from nuclei.segment import DEFAULT_WEIGHTS

GRID = {"foreground": [0.3, 0.4, 0.5, 0.6, 0.7], "centre": [0.3, 0.4, 0.5, 0.6, 0.7],
        "min_size": [5, 10, 20, 30, 40], "slope": [0.0, 0.02, 0.05], "min_marker": [2, 8], "max_hole": [400]}  # fmt: skip


def grid_configs(grid: dict[str, list]) -> list[PostprocessConfig]:
    """Every combination of `grid` (field name -> values), in the order the lists give (last field fastest)."""
    names = list(grid)
    return [
        PostprocessConfig(**dict(zip(names, values, strict=True)))
        for values in itertools.product(*grid.values())
    ]


def score_grid(maps: list[tuple[np.ndarray, np.ndarray]], truths: list[np.ndarray],
               configs: list[PostprocessConfig]) -> list[Scores]:  # fmt: skip
    """Pooled scores of each config over the images: `maps` are (prob (H, W), hv (2, H, W)) per image."""
    if len(maps) != len(truths):
        raise ValueError(f"{len(maps)} map pairs for {len(truths)} reference images")
    return [aggregate([score(t, instances_from_maps(p, hv, c)) for (p, hv), t in zip(maps, truths, strict=True)])
            for c in configs]  # fmt: skip


def best_index(results: list[Scores]) -> int:
    """Index of the best pooled PQ; ties go to the first listed."""
    pqs = [r.pq for r in results]
    return int(np.argmax(pqs))


def _row(name: str, c: PostprocessConfig, s: Scores) -> str:
    return (f"{name:8s} fg {c.foreground:.2f} centre {c.centre:.2f} slope {c.slope:.2f} marker {c.min_marker:2d} "
            f"size {c.min_size:3d} hole {c.max_hole:4d} | P {s.precision:.3f} R {s.recall:.3f} F1 {s.f1:.3f} "
            f"AJI {s.aji:.3f} SQ {s.sq:.3f} PQ {s.pq:.4f}")  # fmt: skip


def _figures(s: Scores) -> dict[str, float]:
    return {k: round(float(getattr(s, k)), 4) for k in ("precision", "recall", "f1", "aji", "sq", "pq")}


def trained_split(model) -> dict | None:
    """The split of the --real folder the model was trained with (provenance["real"]["split"]), if recorded."""
    real = (getattr(model, "provenance", None) or {}).get("real") or {}
    split = real.get("split")
    return split if isinstance(split, dict) else None


def _trained_on_all_of(model, folder: str) -> bool:
    """Whether `model` was trained on every image of `folder` (split {"held_out": "none"}; a model that records
    no folder beside such a split is taken to mean this one)."""
    real = (getattr(model, "provenance", None) or {}).get("real") or {}
    if (trained_split(model) or {}).get("held_out") != "none":
        return False
    recorded = real.get("folder")
    return recorded is None or Path(recorded).resolve() == Path(folder).resolve()


def _held_out(args, model):
    """The held-out part of --real: the blocks or images given, else those the model was trained without."""
    trained = trained_split(model) or {}
    blocks, images = args.real_val_blocks, None
    grid = args.real_grid or trained.get("grid") or 3
    if _trained_on_all_of(model, args.real):
        raise SystemExit(f"--real {args.real}: the model was trained on every image of this folder (held out: "
                         "none), so no part of it is held out from the model; score it on another labelled "
                         "folder")  # fmt: skip
    if blocks is None:
        if trained.get("val_blocks"):
            if args.real_grid and args.real_grid != trained.get("grid"):
                raise SystemExit(f"--real-grid {args.real_grid}: the model was trained with grid "
                                 f"{trained.get('grid')}; give --real-val-blocks for another grid")  # fmt: skip
            blocks = trained["val_blocks"]
        elif trained.get("val_images"):
            images = trained["val_images"]
        elif trained.get("held_out") == "none":
            # Trained on all of another folder: all of this one is held out, but which blocks is for the user.
            raise SystemExit(f"--real {args.real}: the model was trained on every image of another folder (held "
                             "out: none); give --real-val-blocks to name the blocks of this one to use")  # fmt: skip
        else:
            raise SystemExit("the model records no split of a --real folder (provenance['real']['split']); "
                             "give --real-val-blocks (and --real-grid) to name the held-out blocks")  # fmt: skip
    try:
        _, val, summary = real_split(args.real, args.real_mpp, grid, blocks, val_images=images)
    except DatasetError as exc:
        raise SystemExit(f"--real: {exc}") from None
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    print(
        f"held out: {summary['split']}"
        + (" (as the model was trained)" if args.real_val_blocks is None else "")
    )
    return val


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: the shipped weights, nuclei/weights)")
    parser.add_argument("--real", required=True, help="labelled dataset folder")
    parser.add_argument("--real-mpp", type=float, help="its resolution when its dataset.json records none")
    parser.add_argument("--real-grid", type=int, help="default: the grid the model was trained with, else 3")
    parser.add_argument(
        "--real-val-blocks", type=int, nargs="+", help="default: the blocks the model was trained without"
    )
    for name, values in GRID.items():
        kind = type(values[0])
        parser.add_argument(f"--{name.replace('_', '-')}", type=kind, nargs="+", default=values)
    parser.add_argument("--top", type=int, default=10, help="rows printed, best PQ first")
    parser.add_argument(
        "--write", action="store_true", help="store the best thresholds in --model's config.json"
    )
    parser.add_argument(
        "--min-gain", type=float, default=0.01, help="--write only if PQ beats the defaults' by this"
    )
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    folder = args.model or str(DEFAULT_WEIGHTS)
    model = nuclei.load_model(folder)
    val = resample_tiles(_held_out(args, model), model.config.mpp)
    start = time.perf_counter()
    with torch.inference_mode():
        maps = [predict_maps(model, image) for image in val.images]
    t_forward = time.perf_counter() - start
    grid = {f.name: getattr(args, f.name) for f in fields(PostprocessConfig)}
    configs = grid_configs(grid)
    defaults = PostprocessConfig()
    current = model.postprocess or defaults
    extra = [c for c in dict.fromkeys((defaults, current)) if c not in configs]  # (once each)
    start = time.perf_counter()
    results = score_grid(maps, val.instances, configs + extra)
    t_grid = time.perf_counter() - start
    by_config = dict(zip(configs + extra, results, strict=True))
    n_true = sum(int(len(np.unique(t)) - 1) for t in val.instances)
    print(f"{val.source}: {len(val)} blocks, {n_true} nuclei at {model.config.mpp} um/px; model {folder}")
    print(f"forward once: {t_forward:.1f} s; {len(configs)} combinations scored in {t_grid:.1f} s")
    order = sorted(range(len(configs)), key=lambda i: -results[i].pq)
    for rank, i in enumerate(order[: args.top], 1):
        print(_row(f"#{rank}", configs[i], results[i]))
    print(_row("defaults", defaults, by_config[defaults]))
    if current != defaults:
        print(_row("current", current, by_config[current]))
    best = configs[best_index(results[: len(configs)])]
    gain = by_config[best].pq - by_config[defaults].pq
    print(f"best PQ {by_config[best].pq:.4f} vs defaults {by_config[defaults].pq:.4f}: gain {gain:+.4f} "
          f"(--min-gain {args.min_gain})")  # fmt: skip
    if not args.write:
        return
    if gain < args.min_gain:
        print(f"not written: the best beats the defaults by less than {args.min_gain}")
        return
    record = {"command": "python -m benchmarks.nuclei thresholds " + " ".join(sys.argv[2:] if argv is None else argv),
              "data": f"{val.source}, {n_true} nuclei", "grid": grid,
              "rule": f"best pooled PQ on the held-out blocks; written only if it beats the defaults by >= {args.min_gain}",
              "best": _figures(by_config[best]), "defaults": {**asdict(defaults), **_figures(by_config[defaults])}}  # fmt: skip
    path = write_postprocess(folder, best, record)
    print(f"written: {asdict(best)} -> {path}")

"""Where the nuclei CNN loses PQ on synthetic tiles: per scene, its errors by kind and the ground-truth ceiling.

    python -m benchmarks.nuclei errors [--model DIR] [--tiles 32] [--seed 30000] [--threads 1]

Tiles are rendered as `nuclei.datasets.synthetic_tiles` renders them (256 px at 0.5 um/px, seed `--seed`; the
default seeds are neither training, validation nor the held-out evaluation seeds). Per scene and pooled: PQ of
the model, PQ of the same post-processing on the true maps (foreground and HV maps from the labels: what the
post-processing can reach) and on the true maps passed through the model's stride-2 heads (averaged 2 x 2, then
upsampled: what a perfect stride-2 network can reach), and `nuclei.metrics.error_counts` of the model's
instances: true nuclei merged with a neighbour, split, missed, and false positives. The model's maps are
post-processed with its own thresholds (`nuclei.model.thresholds`: its folder's, else the defaults); the true-maps
rows keep the defaults.
"""

from __future__ import annotations

import argparse
from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F

import nuclei
from nuclei.datasets.synthetic import synthetic_fields
from nuclei.inference import predict_maps
from nuclei.metrics import aggregate, error_counts, score
from nuclei.model import thresholds
from nuclei.postprocess import instances_from_maps
from nuclei.targets import hv_maps


def true_maps(instances: np.ndarray, stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and HV maps of the labels; with `stride` 2, averaged over 2 x 2 blocks and upsampled back."""
    maps = torch.from_numpy(np.concatenate([(instances > 0)[None].astype(np.float32), hv_maps(instances)]))
    if stride > 1:
        maps = F.avg_pool2d(maps[None], stride)
        maps = F.interpolate(maps, size=instances.shape, mode="bilinear", align_corners=False)[0]
    maps = maps.numpy()
    return maps[0], maps[1:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", help="model folder (default: the shipped weights)")
    parser.add_argument("--tiles", type=int, default=32)
    parser.add_argument("--seed", type=int, default=30_000)
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = nuclei.load_model(args.model) if args.model else nuclei.default_model("cpu")
    post = thresholds(model)  # the model's own thresholds (the true-maps rows keep the defaults)
    scores: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    errors: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for field in synthetic_fields(range(args.tiles), mpp=model.config.mpp, seed=args.seed):
        truth = field.instances
        found = instances_from_maps(*predict_maps(model, field.image), post)
        tile = {"model": score(truth, found),
                "true maps": score(truth, instances_from_maps(*true_maps(truth))),
                "true maps, stride 2": score(truth, instances_from_maps(*true_maps(truth, 2)))}  # fmt: skip
        kinds = error_counts(truth, found)
        for key in (field.scene, "all"):
            for name, value in tile.items():
                scores[key][name].append(value)
            for k, v in kinds.items():
                errors[key][k] += v
    print(f"{args.tiles} synthetic tiles, seed {args.seed}, model {args.model or 'shipped weights'}")
    print("| scene | tiles | true nuclei | PQ model | PQ true maps | PQ true maps, stride 2 | merged | split | "
          "missed | false positives |")  # fmt: skip
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for key in sorted(scores, key=lambda k: (k == "all", k)):
        pq = {name: aggregate(s).pq for name, s in scores[key].items()}
        e = errors[key]
        print(f"| {key} | {len(scores[key]['model'])} | {e['true']} | {pq['model']:.3f} | {pq['true maps']:.3f} | "
              f"{pq['true maps, stride 2']:.3f} | {e['merged']} | {e['split']} | {e['missed']} | "
              f"{e['false_positive']} |")  # fmt: skip


if __name__ == "__main__":
    main()

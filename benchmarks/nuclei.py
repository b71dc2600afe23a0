"""Nuclei model speed: forward throughput (MPix/s) and post-processing time per 256 px tile, same run.

    python -m benchmarks.nuclei [--device auto] [--batch-size 8] [--tiles 32] [--repeat 3] [--model DIR]
    python -m benchmarks.nuclei slide-quality | slide-speed | slide-memory ...   (benchmarks/nuclei_slide.py)
    python -m benchmarks.nuclei errors [--model DIR] [--tiles 32]   (where PQ is lost: benchmarks/nuclei_errors.py)
    python -m benchmarks.nuclei thresholds --real DIR [--model DIR] [--write]   (benchmarks/nuclei_thresholds.py)
    python -m benchmarks.nuclei tta [--real DIR] [--synthetic 16] [--model DIR]   (benchmarks/nuclei_tta.py)
    python -m benchmarks.nuclei counts [--model DIR ...] [--slide SVS]   (nuclei found on real H&E, no reference)

The model is the shipped default (nuclei/weights) unless --model names another; inputs are synthetic H&E
tiles of 256 px at the model's mpp. Printed: forward MPix/s (batches of 256 px tiles through
`nuclei.inference.forward_maps`, the maps copied to the CPU, no post-processing),
post-processing ms per tile (marker watershed on the maps), and `segment` end to end on one 1024 px image
(resampling, tiling with overlap, forward, post-processing). Ratios: post-processing / forward time per tile
(limit 1.0: post-processing should not cost more than the network) and end-to-end / forward throughput
(limit 0.5: the tiling overlap and post-processing should cost at most half). Test-time augmentation (four
flips, `tta=True`): its forward time and its `segment` time against the plain ones (a default costing more
than 2x end to end stays off), plain and TTA taking turns in each round. Best of --repeat rounds.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import torch

import nuclei
from nuclei.datasets import synthetic_tiles
from nuclei.inference import forward_maps, predict_maps, resolve_device
from nuclei.model import thresholds
from nuclei.postprocess import instances_from_maps


def best_of(repeat: int, fn) -> float:
    return best_of_each(repeat, fn)[0]


def best_of_each(repeat: int, *fns) -> list[float]:
    """The best time of each of `fns` over `repeat` rounds, the functions taking turns within each round: a
    load that comes and goes on a shared machine falls on all of them alike, not on whichever ran during it."""
    times = [[] for _ in fns]
    for _ in range(repeat):
        for fn, kept in zip(fns, times, strict=True):
            start = time.perf_counter()
            fn()
            kept.append(time.perf_counter() - start)
    return [min(kept) for kept in times]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--tiles", type=int, default=32, help="256 px tiles per forward measurement")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--model", help="model folder (default: the shipped weights)")
    parser.add_argument("--threads", type=int, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    model = nuclei.load_model(args.model, device=device) if args.model else nuclei.default_model(device)
    tiles = synthetic_tiles(args.tiles, size=256, mpp=model.config.mpp, seed=123, workers=os.cpu_count() or 1)
    batch = torch.from_numpy(np.stack(tiles.images)).permute(0, 3, 1, 2).contiguous()

    @torch.inference_mode()
    def forward(tta: bool = False):
        # Plain and TTA do the same work but the flips: `forward_maps`, outputs copied to the CPU (which also
        # waits for a GPU to finish).
        for i in range(0, len(batch), args.batch_size):
            prob, hv, _ = forward_maps(
                model, model.normalise(batch[i : i + args.batch_size].to(device)), tta=tta
            )
            prob.cpu(), hv.cpu()

    forward()  # warm-up
    t_fwd, t_fwd_tta = best_of_each(args.repeat, forward, lambda: forward(tta=True))
    mpix = len(batch) * 256 * 256 / 1e6 / t_fwd
    per_tile_fwd = t_fwd / len(batch)

    maps = [predict_maps(model, img, device=device) for img in tiles.images[:8]]
    post = thresholds(model)
    t_post = best_of(args.repeat, lambda: [instances_from_maps(p, hv, post) for p, hv in maps]) / len(maps)

    grid = [tiles.images[i % len(tiles)] for i in range(16)]
    big = np.concatenate([np.concatenate(grid[r * 4 : r * 4 + 4], axis=1) for r in range(4)], axis=0)
    t_seg, t_seg_tta = best_of_each(
        args.repeat,
        lambda: nuclei.segment(big, mpp=model.config.mpp, model=model, device=device),
        lambda: nuclei.segment(big, mpp=model.config.mpp, model=model, device=device, tta=True),
    )
    seg_mpix = big.shape[0] * big.shape[1] / 1e6 / t_seg

    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"device {device}, threads {torch.get_num_threads()}, model {model.config.encoder} ({params:.2f} M "
          f"parameters), batch {args.batch_size}, best of {args.repeat}")  # fmt: skip
    print(f"forward:          {mpix:7.3f} MPix/s   ({per_tile_fwd * 1000:7.1f} ms per 256 px tile)")
    print(f"post-processing:  {t_post * 1000:7.1f} ms per 256 px tile")
    print(f"segment 1024 px:  {seg_mpix:7.3f} MPix/s end to end")
    print(f"ratio post-processing / forward per tile: {t_post / per_tile_fwd:.2f} (limit 1.0)")
    print(f"ratio end-to-end / forward throughput:   {seg_mpix / mpix:.2f} (limit 0.5)")
    print(f"test-time augmentation (4 flips): forward {t_fwd_tta / t_fwd:.2f}x the plain forward time, segment "
          f"1024 px {t_seg_tta / t_seg:.2f}x end to end ({t_seg * 1000:.0f} -> {t_seg_tta * 1000:.0f} ms; "
          "limit for a default: 2.0)")  # fmt: skip


if __name__ == "__main__":
    import sys

    if sys.argv[1:2] and sys.argv[1].startswith("slide"):
        from benchmarks.nuclei_slide import main as slide_main

        slide_main(sys.argv[1:])
    elif sys.argv[1:2] == ["thresholds"]:
        from benchmarks.nuclei_thresholds import main as thresholds_main

        thresholds_main(sys.argv[2:])
    elif sys.argv[1:2] == ["counts"]:
        from benchmarks.nuclei_counts import main as counts_main

        counts_main(sys.argv[2:])
    elif sys.argv[1:2] == ["tta"]:
        from benchmarks.nuclei_tta import main as tta_main

        tta_main(sys.argv[2:])
    elif sys.argv[1:2] == ["errors"]:
        from benchmarks.nuclei_errors import main as errors_main

        errors_main(sys.argv[2:])
    else:
        main()

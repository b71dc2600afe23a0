"""Feature extraction end to end (store -> features written) against the bare encoder forward, same run.

    python -m benchmarks.features [--encoders resnet18 stain_stats] [--batch-size 64] [--device auto]

The limit: the same encoder on uint8 batches already in memory (preprocessing included), same batch size and
device. Each figure is the best of --repeat runs (this machine's timings vary by 10-20% between runs). The
ratio end-to-end / bare shows what reading, decoding, copying and writing cost (target >= 0.9). Encoders
without weights use timm's random initialisation: speed does not depend on the weights.
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

import mil
from tiling import PatchStore, tile_slide


def bare_rate(encoder, patches: np.ndarray, batch_size: int, device: torch.device, amp: bool) -> float:
    batches = [torch.from_numpy(patches[i : i + batch_size]).permute(0, 3, 1, 2).to(device)
               for i in range(0, len(patches), batch_size)]  # fmt: skip
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.inference_mode(), autocast:
        encoder(batches[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for batch in batches:
            encoder(batch).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(patches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["resnet18", "stain_stats"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: 1 on CPU, 8 on GPU)"
    )
    parser.add_argument("--tiles", type=int, default=1024, help="tiles in the store")
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs of each measurement")
    args = parser.parse_args()
    device = mil.resolve_device(args.device)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 1)
    amp = device.type == "cuda"
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = folder / "synthetic-20000.svs"
    if not slide.exists():
        write_slide(slide, SyntheticSpec(20000, 20000, mpp=0.25, seed=11, tumor=True), progress=False)
    with tempfile.TemporaryDirectory() as tmp:
        full = tile_slide(slide, Path(tmp) / "full.zarr", size=256, mpp=0.25)
        n = min(args.tiles, len(full))
        # A store of exactly n tiles (the first n), so both measurements see the same patches.
        store = PatchStore.create(Path(tmp) / "s.zarr", full.coords[:n], full.tissue[:n], full.edge[:n],
                                  {**full.attrs, "complete": False}, 256, codec="jpeg")  # fmt: skip
        patches = full.patches[:n]
        for shard in range(store.n_shards):
            rows = store.shard_range(shard)
            store.write_shard(shard, patches[rows.start : rows.stop])
        store.mark_complete()
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
              f"{n} tiles of 256 px, batch {args.batch_size}, loader workers {workers}, amp {amp}")  # fmt: skip
        for name in args.encoders:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                encoder = mil.create_encoder(name).to(device).eval()
            if device.type == "cuda":
                encoder = encoder.to(memory_format=torch.channels_last)
            bare = max(bare_rate(encoder, patches, args.batch_size, device, amp) for _ in range(args.repeat))
            end_to_end = 0.0
            for _ in range(args.repeat):
                start = time.perf_counter()
                mil.extract_features(store, encoder, batch_size=args.batch_size, device=device,
                                     num_workers=workers, amp=amp, overwrite=True)  # fmt: skip
                end_to_end = max(end_to_end, n / (time.perf_counter() - start))
            print(f"{name:12s} bare forward {bare:8.1f} patches/s   end to end {end_to_end:8.1f} patches/s   "
                  f"ratio {end_to_end / bare:.2f} (target >= 0.9)")  # fmt: skip


if __name__ == "__main__":
    main()

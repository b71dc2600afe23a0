"""Feature extraction end to end (store -> features written) against the bare encoder forward, same run.

    python -m benchmarks.features [--encoders resnet50_trunc uni_v1 hoptimus0] [--tiles-for hoptimus0=8]
                                  [--batch-size 64] [--device auto] [--size 256] [--mpp 0.25]
    python -m benchmarks.features --encoders stain_stats morphometry --size 224 --mpp 0.5 --tiles 512 --workers 0

The limit: the same encoder on uint8 batches already in memory (preprocessing included), same batch size and
device. Each figure is the best of --repeat runs (this machine's timings vary by 10-20% between runs). The
ratio end-to-end / bare shows what reading, decoding, copying and writing cost (target >= 0.9). Encoders run
from a seeded random initialisation (random_weights=True): speed does not depend on the weights. Big
encoders get fewer tiles on a CPU (--tiles-for NAME=N); on a GPU the forward runs under bfloat16 autocast.
The bare forward is also given in CPU seconds (process time), which a loaded, shared machine disturbs less
than the wall clock. `morphometry` is told the tiles' mpp (its sizes are in microns).
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


def bare_rate(
    encoder, patches: np.ndarray, batch_size: int, device: torch.device, amp: bool
) -> tuple[float, float]:
    """Tiles per second of wall clock and of this process's CPU time."""
    batches = [torch.from_numpy(patches[i : i + batch_size]).permute(0, 3, 1, 2).to(device)
               for i in range(0, len(patches), batch_size)]  # fmt: skip
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp)
    with torch.inference_mode(), autocast:
        encoder(batches[0])
        if device.type == "cuda":
            torch.cuda.synchronize()
        start, cpu = time.perf_counter(), time.process_time()
        for batch in batches:
            encoder(batch).float().cpu()
        if device.type == "cuda":
            torch.cuda.synchronize()
    return len(patches) / (time.perf_counter() - start), len(patches) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--encoders", nargs="+", default=["resnet50_trunc", "uni_v1", "hoptimus0"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="auto")
    parser.add_argument(
        "--workers", type=int, default=None, help="DataLoader workers (default: 1 on CPU, 8 on GPU)"
    )
    parser.add_argument("--tiles", type=int, default=1024, help="tiles in the store")
    parser.add_argument("--size", type=int, default=256, help="tile size (px)")
    parser.add_argument("--mpp", type=float, default=0.25, help="tile resolution (um/px; the slide is 0.25)")
    parser.add_argument(
        "--tiles-for",
        nargs="*",
        default=[],
        metavar="NAME=N",
        help="tiles for one encoder (default on CPU: uni_v1=32 hoptimus0=8)",
    )
    parser.add_argument(
        "--batch-for",
        nargs="*",
        default=[],
        metavar="NAME=N",
        help="batch size for one encoder (default on CPU: uni_v1=16 hoptimus0=4)",
    )
    parser.add_argument("--data", default="bench-data")
    parser.add_argument("--slide-size", type=int, default=20000, help="synthetic slide width = height (px)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs of each measurement")
    args = parser.parse_args()
    device = mil.resolve_device(args.device)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 1)
    amp = device.type == "cuda"
    from wsi.synthetic import SyntheticSpec, write_slide

    folder = Path(args.data)
    folder.mkdir(parents=True, exist_ok=True)
    slide = folder / f"synthetic-{args.slide_size}.svs"
    if not slide.exists():
        spec = SyntheticSpec(args.slide_size, args.slide_size, mpp=0.25, seed=11, tumor=True)
        write_slide(slide, spec, progress=False)
    cpu = device.type == "cpu"
    tiles_for = {**({"uni_v1": 32, "hoptimus0": 8} if cpu else {}), **_pairs(args.tiles_for)}
    batch_for = {**({"uni_v1": 16, "hoptimus0": 4} if cpu else {}), **_pairs(args.batch_for)}
    with tempfile.TemporaryDirectory() as tmp:
        full = tile_slide(slide, Path(tmp) / "full.zarr", size=args.size, mpp=args.mpp)
        print(f"device {device} ({torch.cuda.get_device_name() if device.type == 'cuda' else f'{torch.get_num_threads()} threads'}), "
              f"tiles of {args.size} px at {args.mpp:g} um/px, loader workers {workers}, amp {amp}")  # fmt: skip
        for name in args.encoders:
            n = min(tiles_for.get(name, args.tiles), len(full))
            batch_size = batch_for.get(name, args.batch_size)
            store = _first_tiles(full, Path(tmp) / f"{name}.zarr", n)
            patches = full.patches[:n]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                kwargs = {"mpp": args.mpp} if name == "morphometry" else {"random_weights": True}
                encoder = mil.create_encoder(name, **kwargs).to(device).eval()
            if device.type == "cuda":
                encoder = encoder.to(memory_format=torch.channels_last)
            rates = [bare_rate(encoder, patches, batch_size, device, amp) for _ in range(args.repeat)]
            bare, bare_cpu = max(r[0] for r in rates), max(r[1] for r in rates)
            end_to_end = 0.0
            for _ in range(args.repeat):
                start = time.perf_counter()
                mil.extract_features(store, encoder, batch_size=batch_size, device=device,
                                     loader_workers=workers, amp=amp, overwrite=True)  # fmt: skip
                end_to_end = max(end_to_end, n / (time.perf_counter() - start))
            print(f"{name:14s} {n:5d} tiles, batch {batch_size:3d}: bare forward {bare:8.2f} patches/s "
                  f"({bare_cpu:8.2f} per CPU second)   "
                  f"end to end {end_to_end:8.2f} patches/s   ratio {end_to_end / bare:.2f} (target >= 0.9)", flush=True)  # fmt: skip
            del encoder


def _pairs(items: list[str]) -> dict[str, int]:
    return {k: int(v) for k, _, v in (item.partition("=") for item in items)}


def _first_tiles(full: PatchStore, path: Path, n: int) -> PatchStore:
    """A store of exactly the first n tiles of `full`, so both measurements see the same patches."""
    store = PatchStore.create(path, full.coords[:n], full.tissue[:n], full.edge[:n],
                              {**full.attrs, "complete": False}, full.tile_size, codec="jpeg")  # fmt: skip
    patches = full.patches[:n]
    for shard in range(store.n_shards):
        rows = store.shard_range(shard)
        store.write_shard(shard, patches[rows.start : rows.stop])
    store.mark_complete()
    return store


if __name__ == "__main__":
    main()

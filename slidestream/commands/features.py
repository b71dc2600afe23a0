"""`slidestream features OUT --encoder NAME`: tile features for every patch store of a run folder."""

from __future__ import annotations

import sys
from pathlib import Path

from slidestream.commands._common import add_quiet, show_progress


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="encode the tiles of every patch store in OUT",
        description="Runs an encoder over OUT/slides/*/patches.zarr and writes features/<encoder> into each store. "
        "Built-in encoders need no weights (stain_stats); any timm architecture works with --weights FILE "
        "(safetensors or a torch state dict). Features made with the same encoder and weights are kept.",
    )
    p.add_argument("out", metavar="OUT", help="run folder written by `slidestream tile` or `run`")
    p.add_argument(
        "--encoder", default="stain_stats", help="built-in name or timm architecture (default stain_stats)"
    )
    p.add_argument("--weights", help="local weights file for a timm architecture")
    p.add_argument("--name", help="feature name in the store (default: the encoder name)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (default: cuda when available)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--workers",
        type=int,
        help="DataLoader worker processes reading tiles (default: none on CPU, "
        "where a reading thread overlaps the encoder; 8 on a GPU)",
    )
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    p.add_argument("--overwrite", action="store_true", help="recompute even when features exist")
    add_quiet(p)
    p.set_defaults(func=run)  # fmt: skip


def run(args) -> int:
    from mil import EncoderError, create_encoder, extract_features, resolve_device
    from tiling import PatchStore, StoreError

    stores = sorted(Path(args.out).glob("slides/*/patches.zarr"))
    if not stores:
        print(f"error: no patch stores under {args.out}/slides/*/patches.zarr; run `slidestream tile` first",
              file=sys.stderr)  # fmt: skip
        return 2
    try:
        encoder = create_encoder(args.encoder, weights=args.weights)
    except EncoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    failed = []
    for path in stores:
        slide_id = path.parent.name
        try:
            store = PatchStore.open(path)
            array = extract_features(store, encoder, batch_size=args.batch_size, device=device,
                                     num_workers=workers, amp=None if not args.no_amp else False,
                                     name=args.name, overwrite=args.overwrite, progress=show_progress(args))  # fmt: skip
        except (StoreError, ValueError, RuntimeError, OSError) as exc:
            failed.append(slide_id)
            print(f"failed: {slide_id}: {exc}", file=sys.stderr)
            continue
        print(f"{slide_id}: features/{args.name or encoder.name} {array.shape[0]} x {array.shape[1]}")
    if failed:
        print(f"{len(failed)} of {len(stores)} store(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

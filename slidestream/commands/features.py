"""`slidestream features OUT --encoder NAME`: tile features for every patch store of a run folder."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from slidestream.commands._common import add_quiet, key_value, non_negative_int, positive_int, show_progress


def parse_encoder_args(items: list[str] | None) -> dict[str, Any] | None:
    """['init_values=1e-5', 'dynamic_img_size=true'] -> {'init_values': 1e-05, 'dynamic_img_size': True}.

    Values are read as TOML values (numbers, true / false, "strings", [arrays]), as in the config file's
    [features.encoder_args]; anything else is kept as text. None when no item was given."""
    if not items:
        return None
    out: dict[str, Any] = {}
    for item in items:
        try:
            key, value = key_value(item)
        except argparse.ArgumentTypeError:
            raise ValueError(f"--encoder-arg wants KEY=VALUE (e.g. init_values=1e-5), got {item!r}") from None
        out[key] = value
    return out


def add_encoder_options(p, default: str | None) -> None:
    """--encoder, --weights, --encoder-arg and --random-weights, as `features` and `run` take them."""
    p.add_argument("--encoder", default=default,
                   help="a name from `slidestream features --list-encoders` (built in or a published recipe such as "
                        "uni_v1), or any timm architecture (default stain_stats)")  # fmt: skip
    p.add_argument("--weights", help="local checkpoint as published (safetensors or a torch state dict)")
    p.add_argument("--encoder-arg", action="append", metavar="KEY=VALUE",
                   help="keyword argument for the architecture (timm.create_model), repeatable: "
                        "--encoder-arg init_values=1e-5 --encoder-arg dynamic_img_size=true")  # fmt: skip
    p.add_argument("--random-weights", action="store_true",
                   help="allow an encoder that needs weights to run without them, from a seeded random "
                        "initialisation (for testing: the features are meaningless, and are marked so)")  # fmt: skip


def random_weights_notice(encoder: str, marked_in: str = "the stores' feature attributes") -> str:
    return (f"WARNING: encoder {encoder} runs with RANDOM WEIGHTS (--random-weights): the features are "
            f"meaningless for a study; {marked_in} say so")  # fmt: skip


def register(sub) -> None:
    p = sub.add_parser(
        "features",
        help="encode the tiles of every patch store in OUT",
        description="Runs an encoder over OUT/slides/*/patches.zarr and writes features/<encoder> into each store. "
        "Built-in encoders need no weights (stain_stats); published pathology encoders (uni_v1, virchow2, "
        "hoptimus0, ... see --list-encoders) and any timm architecture need --weights FILE, the checkpoint as "
        "published. Features made with the same encoder and weights are kept.",
    )
    p.add_argument("out", metavar="OUT", nargs="?", help="run folder written by `slidestream tile` or `run`")
    p.add_argument("--list-encoders", action="store_true",
                   help="list the encoders known by name (dimension, input size, mpp, licence, source) and exit")  # fmt: skip
    add_encoder_options(p, default="stain_stats")
    p.add_argument("--name", help="feature name in the store (default: the encoder name)")
    p.add_argument("--device", default="auto", help="cpu, cuda, or auto (default: cuda when available)")
    p.add_argument("--batch-size", type=positive_int, default=64, help="tiles per encoder batch")
    p.add_argument(
        "--workers",
        type=non_negative_int,
        help="DataLoader worker processes reading tiles (default: none on CPU, "
        "where a reading thread overlaps the encoder; 8 on a GPU)",
    )
    p.add_argument("--no-amp", action="store_true", help="no bfloat16 autocast on GPU")
    p.add_argument("--overwrite", action="store_true", help="recompute even when features exist")
    add_quiet(p)
    p.set_defaults(func=run)  # fmt: skip


def run(args) -> int:
    import warnings

    from mil import EncoderError, create_encoder, extract_features, resolve_device
    from mil.encoders import encoder_table, require_weights
    from mil.features import encoder_arguments, features_done
    from slidestream.pipeline.lock import LockBusy, SlideLock
    from tiling import PatchStore, StoreError

    if args.list_encoders:
        print(encoder_table())
        print("Any timm architecture also works: --encoder NAME --weights FILE [--encoder-arg KEY=VALUE ...]")
        return 0
    if args.out is None:
        print("error: OUT (a run folder) is required unless --list-encoders", file=sys.stderr)
        return 2
    stores = sorted(Path(args.out).glob("slides/*/patches.zarr"))
    try:
        encoder_args = parse_encoder_args(args.encoder_arg) or {}
        require_weights(args.encoder, args.weights, args.random_weights)
    except (ValueError, EncoderError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not Path(args.out).is_dir():
        what = "is not a folder" if Path(args.out).exists() else "no such folder"
        print(f"error: {args.out}: {what} (give the run folder written by `slidestream tile` or `run`)",
              file=sys.stderr)  # fmt: skip
        return 2
    if not stores:
        print(f"error: no patch stores in {args.out} (none at {Path(args.out) / 'slides/*/patches.zarr'}); "
              "run `slidestream tile` first", file=sys.stderr)  # fmt: skip
        return 2
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "encoder .* RANDOM WEIGHTS")  # said once, below
            encoders: dict[str, object] = {}  # one per resolution for encoders that measure in microns

            def encoder_for(store):
                arguments = encoder_arguments(args.encoder, store, encoder_args)
                key = repr(sorted(arguments.items()))
                if key not in encoders:
                    encoders[key] = create_encoder(args.encoder, weights=args.weights,
                                                   random_weights=args.random_weights, **arguments)  # fmt: skip
                return encoders[key]

            try:
                first = PatchStore.open(stores[0])
            except (StoreError, OSError, ValueError):  # said for that slide in the loop below
                first = None
            encoder = encoder_for(first)
    except EncoderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        device = resolve_device(args.device)
    except RuntimeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if encoder.random_weights:
        print(random_weights_notice(encoder.name), file=sys.stderr)
    workers = args.workers if args.workers is not None else (8 if device.type == "cuda" else 0)
    failed, skipped = [], 0
    for path in stores:
        slide_id = path.parent.name
        try:  # under the slide's lock, as `run` writes the store: two writers never meet in one store
            with SlideLock(path.parent, wait=0):
                store = PatchStore.open(path)
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "encoder .* RANDOM WEIGHTS")  # said once, above
                    encoder = encoder_for(store)
                name = args.name or encoder.name
                if not args.overwrite and features_done(store, encoder, args.name):
                    array = store.features(name)
                    print(f"{slide_id}: features/{name} {array.shape[0]} x {array.shape[1]} "
                          "skipped (already computed; --overwrite recomputes)")  # fmt: skip
                    skipped += 1
                    continue
                array = extract_features(store, encoder, batch_size=args.batch_size, device=device,
                                         loader_workers=workers, amp=None if not args.no_amp else False,
                                         name=args.name, overwrite=args.overwrite, progress=show_progress(args))  # fmt: skip
        except LockBusy as exc:
            failed.append(slide_id)
            print(f"failed: {exc}; features again when it is done", file=sys.stderr)
            continue
        except (StoreError, ValueError, RuntimeError, OSError) as exc:
            failed.append(slide_id)
            print(f"failed: {slide_id}: {exc}", file=sys.stderr)
            continue
        print(f"{slide_id}: features/{name} {array.shape[0]} x {array.shape[1]} ({encoder.weights_label})")
    if skipped == len(stores):
        print(f"nothing to do: the {skipped} store(s) have these features already")
    if failed:
        print(f"{len(failed)} of {len(stores)} store(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0

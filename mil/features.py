"""`extract_features`: a patch store's tiles through an encoder into features/<name>, CPU or GPU."""

from __future__ import annotations

import contextlib
import inspect
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from mil.encoders import Encoder, create_encoder
from mil.encoders.registry import get_factory
from tiling import PatchBatches, PatchStore
from wsi.deprecation import renamed_keywords

__all__ = ["encoder_arguments", "extract_features", "features_done", "resolve_device"]

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto" / None -> cuda when available, else cpu; "cuda" without a GPU is an error that says so."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device cuda was asked for, but torch sees no GPU; use --device cpu")
    return device


def encoder_arguments(
    name: str, store: PatchStore | None, arguments: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """`arguments` for `create_encoder(name, ...)`, with `mpp` set to the store's tile resolution when encoder
    `name` measures in microns (a built-in whose factory takes `mpp`, such as `morphometry`) and the caller gave
    none; an mpp the caller gave is kept as given."""
    arguments = dict(arguments or {})
    factory = get_factory(name)
    takes_mpp = factory is not None and "mpp" in inspect.signature(factory).parameters
    if store is not None and takes_mpp and "mpp" not in arguments:
        tile_mpp = store.attrs.get("tiling", {}).get("mpp")
        if tile_mpp is not None:
            arguments["mpp"] = float(tile_mpp)
    return arguments


def _description(store: PatchStore, encoder: Encoder) -> dict:
    return {**encoder.describe(), "tile_size": store.tile_size, "store": store.attrs.get("fingerprint")}


def features_done(store: PatchStore, encoder: Encoder, name: str | None = None) -> bool:
    """Whether features/<name> is complete and was made by this encoder, weights and preprocessing."""
    name = name or encoder.name
    if name not in store.feature_names():
        return False
    existing = store.features(name)
    return store.rows_intact("features", name) and existing.attrs.get("description") == _description(
        store, encoder
    )


def _prefetch(iterable, depth: int = 2):
    """Iterate in a background thread, `depth` items ahead: decoding (imagecodecs) and the encoder (torch) both
    release the GIL, so reading the next batch overlaps the forward pass without worker processes."""
    import queue
    import threading

    items: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                items.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce():
        try:
            for item in iterable:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, raised there
            put(exc)
        put(done)

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while (item := items.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()  # the consumer stopped (or failed): let the producer end
        thread.join(timeout=5)


def _recompute_chunks(store: PatchStore, encoder: Encoder, name: str, chunks: list[int], batch_size: int,
                      device: torch.device, amp: bool, slide_path) -> object:  # fmt: skip
    """Rewrite the lost row chunks of features/<name> from the same batches as a whole run (so the same bytes)."""
    writable = PatchStore.open(store.path, mode="r+")
    array = writable.features(name)
    batches = PatchBatches(store, batch_size, slide_path=slide_path)
    rows_per_chunk, n = array.chunks[0], len(store)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    with torch.inference_mode(), autocast:
        for chunk in chunks:
            start, stop = chunk * rows_per_chunk, min(n, (chunk + 1) * rows_per_chunk)
            block = np.empty((stop - start, encoder.dim), np.float16)
            for index in range(start // batch_size, -(-stop // batch_size)):
                patches, first = batches[index]
                out = _encode(encoder, patches, device)
                lo, hi = max(start, first), min(stop, first + len(out))
                block[lo - start : hi - start] = out[lo - first : hi - first]
            array[start:stop] = block  # whole chunk: nothing of the lost one is read
    writable.finish_rows("features", name)
    return PatchStore.open(store.path).features(name)


def _encode(encoder: Encoder, patches: np.ndarray, device: torch.device) -> np.ndarray:
    """Features (float16) of a uint8 (b, S, S, 3) batch."""
    images = torch.as_tensor(patches).permute(0, 3, 1, 2)
    images = images.to(device, non_blocking=True)
    if device.type == "cuda":
        images = images.contiguous(memory_format=torch.channels_last)
    return encoder(images).float().cpu().numpy().astype(np.float16)


def _collate_numpy(item):
    return item  # batches are already arrays; keep the DataLoader from stacking them again


@renamed_keywords(num_workers="loader_workers")
def extract_features(
    store: PatchStore | str | Path,
    encoder: Encoder | str,
    batch_size: int = 64,
    device: str | torch.device | None = "auto",
    loader_workers: int = 0,
    amp: bool | None = None,
    name: str | None = None,
    overwrite: bool = False,
    progress: bool = False,
    slide_path: str | Path | None = None,
):
    """Write features/<name> (float16, row-block chunks) for every tile of `store` and return that zarr array.

    `name` defaults to the encoder's name. Features already made by the same encoder, weights and
    preprocessing are kept; features of another encoder or other weights under that name are recomputed, never
    mixed. `amp` (default: on for CUDA) runs the encoder under bfloat16 autocast. Coords-only stores read the
    tiles from their slide (`slide_path` overrides where it is). `loader_workers` are DataLoader processes reading
    tiles (0: a background thread in this process).
    """
    store = store if isinstance(store, PatchStore) else PatchStore.open(store)
    if not store.is_complete:
        raise ValueError(f"{store.path}: the store is partial (tiling did not finish); re-run tiling first")
    encoder = create_encoder(encoder) if isinstance(encoder, str) else encoder
    name = name or encoder.name
    description = _description(store, encoder)
    repair: list[int] = []
    if not overwrite and name in store.feature_names():
        existing = store.features(name)
        if existing.attrs.get("complete") and existing.attrs.get("description") == description:
            repair = store.missing_row_chunks("features", name)
            if not repair:
                log.info("%s: features/%s already made with the same encoder, kept", store.path, name)
                return existing
            log.info("%s: features/%s lost chunk(s) %s; recomputing only those", store.path, name, repair)
        else:
            log.info("%s: features/%s is being recomputed (partial, or another encoder or weights)", store.path,
                     name)  # fmt: skip
    device = resolve_device(device)
    amp = device.type == "cuda" if amp is None else amp
    encoder = encoder.to(device).eval()
    if device.type == "cuda":
        encoder = encoder.to(memory_format=torch.channels_last)
    if repair:
        return _recompute_chunks(store, encoder, name, repair, batch_size, device, amp, slide_path)
    writable = PatchStore.open(store.path, mode="r+")
    array = writable.create_rows("features", name, encoder.dim, "float16", {"description": description})
    n = len(store)
    rows_per_chunk = array.chunks[0]
    loader = DataLoader(
        PatchBatches(store, batch_size, slide_path=slide_path), batch_size=None, collate_fn=_collate_numpy,
        num_workers=loader_workers, pin_memory=device.type == "cuda",
        prefetch_factor=4 if loader_workers else None, persistent_workers=False,
    )  # fmt: skip
    buffer = np.empty((min(n, rows_per_chunk), encoder.dim), np.float16)
    filled = written = 0
    autocast = torch.autocast(device.type, dtype=torch.bfloat16) if amp else contextlib.nullcontext()
    bar = tqdm(
        total=n, desc=f"features {store.path.parent.name}", unit="tile", disable=not progress, leave=False
    )
    with torch.inference_mode(), autocast:
        for patches, _start in loader if loader_workers else _prefetch(loader):
            out = _encode(encoder, patches, device)
            offset = 0
            while offset < len(out):  # fill whole chunks, write each once
                take = min(len(out) - offset, len(buffer) - filled)
                buffer[filled : filled + take] = out[offset : offset + take]
                filled, offset = filled + take, offset + take
                if filled == len(buffer):
                    array[written : written + filled] = buffer
                    written, filled = written + filled, 0
            bar.update(len(out))
    if filled:
        array[written : written + filled] = buffer[:filled]
        written += filled
    bar.close()
    if written != n:
        raise RuntimeError(f"{store.path}: wrote {written} feature rows for {n} tiles")
    writable.finish_rows("features", name)
    return PatchStore.open(store.path).features(name)

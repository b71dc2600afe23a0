"""Synthetic H&E training tiles with exact instance and PanNuke type masks (from `wsi.synthetic.cells`)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np

from nuclei.datasets.base import NucleiTiles
from wsi.atomic import atomic_file
from wsi.synthetic.cells import CELL_TYPES, render_cells

__all__ = ["cached_synthetic_tiles", "synthetic_tiles"]


def synthetic_fields(indices, size: int = 256, mpp: float = 0.5, seed: int = 0, size_jitter: float = 0.15):
    """The rendered fields (`wsi.synthetic.cells.render_cells`: image, instances, types, scene) of tiles
    `indices` of `synthetic_tiles(..., seed)`, one at a time: tile i is rendered from the generator [seed, i]
    at mpp * U(1 - size_jitter, 1 + size_jitter)."""
    for i in indices:
        rng = np.random.default_rng([seed, i])
        yield render_cells((size, size), mpp=mpp * rng.uniform(1 - size_jitter, 1 + size_jitter), rng=rng)


def _render_chunk(args) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    indices, size, mpp, seed, size_jitter = args
    return [(f.image, f.instances, f.types) for f in synthetic_fields(indices, size, mpp, seed, size_jitter)]


def synthetic_tiles(n: int, size: int = 256, mpp: float = 0.5, seed: int = 0, size_jitter: float = 0.15,
                    progress: bool = False, workers: int = 1) -> NucleiTiles:  # fmt: skip
    """`n` tiles of (size, size) px labelled as `mpp`; each is rendered at mpp * U(1 - j, 1 + j) so that
    nucleus sizes vary as between labs and scanners. The same seed gives the same tiles, whatever `workers`
    (processes rendering chunks of tiles in parallel; 1 renders in this process)."""
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    step = max(1, min(8, n // (4 * workers)))  # small enough chunks to keep every worker busy to the end
    chunks = [range(i, min(i + step, n)) for i in range(0, n, step)]
    jobs = [(chunk, size, mpp, seed, size_jitter) for chunk in chunks]
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n, desc="synthetic tiles", unit="tile")
    images, instances, types = [], [], []
    with _pool(min(workers, len(chunks))) as pool:
        for rendered in pool.map(_render_chunk, jobs) if pool else map(_render_chunk, jobs):
            for image, inst, typ in rendered:
                images.append(image)
                instances.append(inst)
                types.append(typ)
            if bar is not None:
                bar.update(len(rendered))
    if bar is not None:
        bar.close()
    return NucleiTiles(
        images, instances, types, mpp=mpp, classes=CELL_TYPES, source=f"synthetic(seed={seed})"
    )


def _pool(workers: int):
    """A process pool of `workers`, or a null context for one: forked on Linux from a process with no other
    thread (nothing a fork could catch half-way), else spawned (each worker imports the renderer first)."""
    if workers <= 1:
        return contextlib.nullcontext(None)
    import multiprocessing as mp
    import sys
    import threading
    from concurrent.futures import ProcessPoolExecutor

    method = "fork" if sys.platform.startswith("linux") and threading.active_count() == 1 else "spawn"
    return ProcessPoolExecutor(workers, mp_context=mp.get_context(method))


def cached_synthetic_tiles(cache: str | os.PathLike, n: int, size: int = 256, mpp: float = 0.5, seed: int = 0,
                           progress: bool = False, workers: int = 1) -> NucleiTiles:  # fmt: skip
    """`synthetic_tiles`, kept in an .npz file `cache` (reused when its n, size, mpp and seed match)."""
    cache = Path(cache)
    key = np.array([n, size, mpp, seed], dtype=np.float64)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            if "key" in z and np.array_equal(z["key"], key):
                return NucleiTiles(list(z["images"]), list(z["instances"]), list(z["types"]), mpp=mpp,
                                   classes=CELL_TYPES, source=f"synthetic(seed={seed})")  # fmt: skip
    tiles = synthetic_tiles(n, size=size, mpp=mpp, seed=seed, progress=progress, workers=workers)
    with atomic_file(cache) as tmp, open(tmp, "wb") as f:  # a file object: np.savez adds no ".npz"
        np.savez(f, key=key, images=np.stack(tiles.images), instances=np.stack(tiles.instances),
                 types=np.stack(tiles.types))  # fmt: skip
    return tiles

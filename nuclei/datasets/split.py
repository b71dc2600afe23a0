"""Held-out blocks of large annotated images, and resampling labelled tiles to another resolution.

train, val = grid_split(tiles, grid=3, val_blocks=(2, 4, 6))   # the anti-diagonal of a 3 x 3 grid
train = resample_tiles(train, mpp=0.5)
train, val, summary = real_split("data/nuclei/hgsc_nest", grid=3, val_blocks=(2, 4, 6))   # a --real folder
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from nuclei.datasets.base import DatasetError, NucleiTiles
from nuclei.datasets.registry import load_dataset
from nuclei.image import resize_image, resize_labels

__all__ = ["grid_split", "image_split", "real_split", "resample_tiles"]


def _blocks(n: int, grid: int) -> list[tuple[int, int]]:
    edges = np.linspace(0, n, grid + 1).round().astype(int)
    return list(zip(edges[:-1], edges[1:], strict=True))


def _relabel(inst: np.ndarray) -> np.ndarray:
    """Instance ids made consecutive (1..n) after cutting."""
    ids, inv = np.unique(inst, return_inverse=True)
    out = inv.reshape(inst.shape).astype(np.int32)
    return out if ids[0] == 0 else out + 1


def grid_split(tiles: NucleiTiles, grid: int, val_blocks) -> tuple[NucleiTiles, NucleiTiles]:
    """(train, val): every image cut into a `grid` x `grid` grid of blocks (numbered row by row from 0 at the
    top left); blocks in `val_blocks` go to val, the others to train, each block a tile of its own. Nuclei cut
    by a block edge keep the part inside the block; the training part of a nucleus that is also in a validation
    block is marked `ignore` (no loss), so no validation nucleus is seen in training. Both parts are
    non-empty."""
    if grid < 1:
        raise ValueError(f"grid must be at least 1, got {grid}")
    val_set = {int(b) for b in val_blocks}
    bad = sorted(b for b in val_set if not 0 <= b < grid * grid)
    if bad:
        raise ValueError(f"val_blocks {bad} outside the {grid} x {grid} grid (blocks 0..{grid * grid - 1})")
    if not val_set or len(val_set) == grid * grid:
        raise ValueError(
            f"val_blocks must hold out some but not all of the {grid * grid} blocks, got {sorted(val_set)}"
        )
    images, instances, types, ignore, val_idx = [], [], [], [], []
    for i, (img, inst) in enumerate(zip(tiles.images, tiles.instances, strict=True)):
        h, w = inst.shape
        cells = [
            (r * grid + c, ys, xs)
            for r, ys in enumerate(_blocks(h, grid))
            for c, xs in enumerate(_blocks(w, grid))
        ]
        held_out = np.zeros(inst.shape, bool)
        for b, (y0, y1), (x0, x1) in cells:
            held_out[y0:y1, x0:x1] = b in val_set
        # Nuclei with pixels on both sides: their training pixels carry no loss.
        shared = np.intersect1d(inst[held_out], inst[~held_out])
        leak = np.isin(inst, shared[shared > 0]) & ~held_out
        unlabelled = tiles.ignore_map(i) | leak
        typ = tiles.types[i] if tiles.types is not None else None
        for b, (y0, y1), (x0, x1) in cells:
            if b in val_set:
                val_idx.append(len(images))
            images.append(np.ascontiguousarray(img[y0:y1, x0:x1]))
            instances.append(_relabel(inst[y0:y1, x0:x1]))
            if typ is not None:
                types.append(np.ascontiguousarray(typ[y0:y1, x0:x1]))
            ignore.append(np.ascontiguousarray(unlabelled[y0:y1, x0:x1]))
    blocks = NucleiTiles(images, instances, types if tiles.types is not None else None, mpp=tiles.mpp,
                         classes=tiles.classes, ignore=ignore)  # fmt: skip
    train_idx = sorted(set(range(len(blocks))) - set(val_idx))
    where = f"grid {grid}, held-out blocks {sorted(val_set)}"
    return (
        replace(blocks.subset(train_idx), source=f"{tiles.source} [train: {where}]"),
        replace(blocks.subset(val_idx), source=f"{tiles.source} [val: {where}]"),
    )


def resample_tiles(tiles: NucleiTiles, mpp: float) -> NucleiTiles:
    """The tiles at `mpp` um/px (images bilinear, labels nearest); `tiles.mpp` must be known."""
    if tiles.mpp is None:
        raise ValueError(f"{tiles.source}: resolution unknown, give its mpp to resample it to {mpp} um/px")
    f = tiles.mpp / mpp
    if abs(f - 1) < 1e-6:
        return tiles
    images, instances, types, ignore = [], [], [], []
    for i, (img, inst) in enumerate(zip(tiles.images, tiles.instances, strict=True)):
        shape = (max(1, int(round(inst.shape[0] * f))), max(1, int(round(inst.shape[1] * f))))
        images.append(resize_image(img, (shape[1], shape[0])))
        instances.append(_relabel(resize_labels(inst, shape)))
        if tiles.types is not None:
            types.append(resize_labels(tiles.types[i], shape))
        if tiles.ignore is not None:
            ignore.append(resize_labels(tiles.ignore[i], shape))
    return NucleiTiles(images, instances, types if tiles.types is not None else None, mpp=mpp,
                       classes=tiles.classes, source=f"{tiles.source} @ {mpp} um/px",
                       ignore=ignore if tiles.ignore is not None else None)  # fmt: skip


def image_split(
    tiles: NucleiTiles, val_fraction: float, seed: int
) -> tuple[NucleiTiles, NucleiTiles, list[int]]:
    """(train, val, the positions held out): a seeded `val_fraction` of the images held out (none of a single
    image)."""
    order = np.random.default_rng(seed).permutation(len(tiles))
    n_val = int(round(len(tiles) * val_fraction)) if len(tiles) > 1 else 0
    return tiles.subset(order[n_val:]), tiles.subset(order[:n_val]), [int(i) for i in order[:n_val]]


def real_split(path, mpp_fallback: float | None = None, grid: int = 3, val_blocks=None, val_fraction: float = 0.0,
               seed: int = 0, val_images=None, log=print) -> tuple[NucleiTiles, NucleiTiles, dict]:  # fmt: skip
    """(train, val, summary) of the labelled folder `path` (any layout `load_dataset` reads) as `nuclei train
    --real` splits it, at the folder's own resolution: `mpp_fallback` is used only when the folder records none.

    Held out: nothing when `val_blocks` is "none" (a final refit on every image: the validation part is empty,
    split {"held_out": "none"}; `val_fraction` must then be 0); the `val_blocks` of a `grid` x `grid` grid of every image (`grid_split`); else
    the images at the positions `val_images`; else a seeded `val_fraction` of the images (`image_split`), and when that holds out
    none (e.g. a single image), the anti-diagonal blocks of the `grid` grid (said through `log`). `summary` records
    the folder, its source and mpp and the split ({"grid", "val_blocks"} or {"val_fraction"?, "val_images"}), as
    training's provenance["real"] holds it. Raises DatasetError (unreadable folder, no resolution) and ValueError
    (a split that holds out nothing or everything, blocks outside the grid), messages naming the options of the
    commands that take a --real folder."""
    real = load_dataset(path)
    if real.mpp is None:  # a fallback: a resolution the folder records wins
        if mpp_fallback is None:
            raise DatasetError(f"{path} records no resolution; give --real-mpp (um/px)")
        real = replace(real, mpp=mpp_fallback)
    if isinstance(val_blocks, str):
        if val_blocks != "none":
            raise ValueError(f"--real-val-blocks: block numbers or 'none', got {val_blocks!r}")
        if val_fraction:
            raise ValueError(f"--real-val-blocks none holds out nothing: a val_fraction ({val_fraction}) "
                             "cannot apply; give 0")  # fmt: skip
        summary = {"folder": str(path), "source": real.source, "mpp": real.mpp, "split": {"held_out": "none"}}
        return (
            replace(real, source=f"{real.source} [train: every image, none held out]"),
            real.subset([]),
            summary,
        )
    blocks = list(val_blocks or [])
    if not blocks and val_images is not None:
        held = sorted({int(i) for i in val_images})
        if not held or not all(0 <= i < len(real) for i in held):
            raise ValueError(
                f"--real: held-out images {held} are not positions of the {len(real)} image(s) of {path}"
            )
        real_train = real.subset([i for i in range(len(real)) if i not in held])
        real_val, split = real.subset(held), {"val_images": held}
    elif not blocks:
        real_train, real_val, held_out = image_split(real, val_fraction, seed)
        split = {"val_fraction": val_fraction, "val_images": held_out}
        if not held_out and val_fraction > 0:
            if grid < 2:
                raise ValueError(f"--real: --val-fraction {val_fraction} of {len(real)} image(s) holds out "
                                 "none; give --real-val-blocks with a --real-grid of 2 or more")  # fmt: skip
            blocks = [r * grid + grid - 1 - r for r in range(grid)]
            log(f"real: --val-fraction {val_fraction} of {len(real)} image(s) holds out none; holding "
                f"out blocks {blocks} of a {grid} x {grid} grid instead (--real-val-blocks)")  # fmt: skip
    if blocks:
        try:
            real_train, real_val = grid_split(real, grid, blocks)
        except ValueError as exc:
            raise ValueError(f"--real-val-blocks: {exc}") from None
        split = {"grid": grid, "val_blocks": sorted(set(blocks))}
    if not len(real_train):
        raise ValueError(f"--real: the split holds out all {len(real)} image(s) of {path} "
                         f"(--val-fraction {val_fraction}): nothing left to train on")  # fmt: skip
    summary = {"folder": str(path), "source": real.source, "mpp": real.mpp, "split": split}
    return real_train, real_val, summary

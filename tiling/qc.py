"""Tile quality control, as slideflow does it: blur (variance of the Laplacian) and pen marks (ink pixels).

Each check gives every tile a measure, and a threshold flags it:

- "blur": the variance of the Laplacian of the tile's grey levels (0-255). Sharp tissue has strong local
  contrast (nuclear edges, fibres); an out-of-focus tile has little. Flagged below `QCParams.min_blur`.
- "pen": the fraction of the tile's pixels that are marker ink: saturated blue or green (hues H&E never has:
  eosin is pink, hematoxylin purple, with red above green) or black (dark and grey). Flagged above
  `QCParams.max_pen`.

`tile_slide(..., qc=("blur", "pen"))` measures every tile of the grid before the store is made, keeps the
measures of the tiles it keeps (`qc/<check>` in the store) and the counts it dropped (attrs["qc"]).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from tiling.config import QC_CHECKS

__all__ = ["QC_CHECKS", "QCParams", "describe", "flag_tiles", "measure_tiles", "pen_fraction",
           "variance_of_laplacian"]  # fmt: skip


@dataclass(frozen=True)
class QCParams:
    """Thresholds of the tile checks. Tuned on synthetic H&E tiles at 0.25-1 um/px with drawn pen strokes and
    Gaussian blur, and checked to flag no tile of the real CMU-1-Small-Region slide (tests/tiling/test_qc.py).

    - `min_blur`: tiles whose variance of the Laplacian is lower are blurred. In-focus tissue at 0.5 um/px
      measures in the hundreds, a Gaussian blur of sigma 2 px brings it under 20.
      Tiles upsampled from a coarser slide are smoother and some fall under it (19 of 159 tiles at
      0.25 um/px from the 0.5 um/px CMU slide).
    - `max_pen`: tiles with a larger share of ink are pen-marked.
    - `ink_saturation`: the least saturation of blue or green ink, `ink_green_over_red` how far its green
      exceeds its red (of 255); `black_value`: the brightest black ink is (of 255), with saturation under
      `black_saturation`. Measured on block means (a 32 x 32 grid per tile), not single pixels.
    """

    min_blur: float = 40.0
    max_pen: float = 0.1
    ink_saturation: float = 0.3
    ink_green_over_red: float = 15.0
    black_value: int = 60
    black_saturation: float = 0.35

    def to_dict(self) -> dict:
        return asdict(self)


_GREY = np.array([0.299, 0.587, 0.114], np.float32)


def _check_tiles(tiles: np.ndarray) -> np.ndarray:
    tiles = np.asarray(tiles)
    if tiles.ndim == 3:
        tiles = tiles[None]
    if tiles.ndim != 4 or tiles.shape[-1] != 3 or tiles.dtype != np.uint8:
        raise ValueError(
            f"tiles must be (N, S, S, 3) or (S, S, 3) uint8 RGB, got {tiles.shape} {tiles.dtype}"
        )
    return tiles


def variance_of_laplacian(tiles: np.ndarray) -> np.ndarray:
    """(N,) float32: the variance of the 4-neighbour Laplacian of each tile's grey levels (0-255)."""
    tiles = _check_tiles(tiles)
    out = np.empty(len(tiles), np.float32)
    for i, tile in enumerate(tiles):
        grey = tile.astype(np.float32) @ _GREY
        out[i] = ndimage.laplace(grey, mode="reflect")[1:-1, 1:-1].var()  # the border row only mirrors
    return out


def _ink(tile: np.ndarray, params: QCParams) -> np.ndarray:
    """(B, B) bool: the blocks of one RGB tile (a 32 x 32 grid of block means) that are blue, green or black ink.

    Block means, not pixels: a few teal or blue-black pixels of a stain or of JPEG colour noise are not ink, a
    stroke of marker is ink over whole blocks."""
    side = min(tile.shape[:2])
    step = max(1, side // 32)
    n = side // step
    blocks = tile[: n * step, : n * step].reshape(n, step, n, step, 3).mean(axis=(1, 3))
    r, g = blocks[..., 0], blocks[..., 1]
    top, bottom = blocks.max(axis=-1), blocks.min(axis=-1)
    saturation = (top - bottom) / np.maximum(top, 1)
    # H&E keeps red above green (eosin pink, hematoxylin purple); blue and green ink put green above red.
    coloured = (saturation > params.ink_saturation) & (g > r + params.ink_green_over_red)
    black = (top <= params.black_value) & (saturation < params.black_saturation)
    return coloured | black


def pen_fraction(tiles: np.ndarray, params: QCParams | None = None) -> np.ndarray:
    """(N,) float32: the fraction of each tile that is blue, green or black marker ink."""
    tiles = _check_tiles(tiles)
    params = params or QCParams()
    return np.array([_ink(tile, params).mean() for tile in tiles], np.float32)


_MEASURES = {"blur": variance_of_laplacian, "pen": pen_fraction}


def measure_tiles(
    tiles: np.ndarray, checks: Sequence[str], params: QCParams | None = None
) -> dict[str, np.ndarray]:
    """{check: (N,) float32 measure} of (N, S, S, 3) uint8 `tiles` for each of `checks` ("blur", "pen")."""
    unknown = [c for c in checks if c not in _MEASURES]
    if unknown:
        raise ValueError(f"unknown tile check(s) {unknown}; known: {list(QC_CHECKS)}")
    params = params or QCParams()
    tiles = _check_tiles(tiles)
    return {c: (_MEASURES[c](tiles, params) if c == "pen" else _MEASURES[c](tiles)) for c in checks}


def flag_tiles(measures: dict[str, np.ndarray], params: QCParams | None = None) -> dict[str, np.ndarray]:
    """{check: (N,) bool} tiles flagged by each check's measure (blur under `min_blur`, pen over `max_pen`)."""
    params = params or QCParams()
    rules = {"blur": lambda v: v < params.min_blur, "pen": lambda v: v > params.max_pen}
    return {c: rules[c](np.asarray(v)) for c, v in measures.items()}


def describe(qc: dict) -> str:
    """A store's attrs["qc"] in words: "QC dropped 14 of 96 (blur 8, pen 6)"."""
    counts = ", ".join(f"{c} {n:,}" for c, n in qc["dropped"].items())
    return f"QC dropped {qc['dropped_total']:,} of {qc['tiles_measured']:,} ({counts})"

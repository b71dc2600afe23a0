"""Procedural H&E-like content as pure functions of level-0 coordinates.

Tissue islands and tumor regions come from smooth noise fields; stroma is eosin with fibre texture; nuclei are
hematoxylin ellipses with irregular outlines, one candidate per slot of a lattice (two in tumor, so some touch).
Colours come from Beer-Lambert stain mixing with per-slide stain variation, so colour deconvolution and optical
density thresholds behave as on real H&E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi.deprecation import warn_renamed
from wsi.synthetic.noise import hash_uniform, interpolation_matrix, value_noise

__all__ = ["Nuclei", "SyntheticSpec", "field_at", "field_values", "nuclei_in_box", "render_region"]

# Salts keep the random fields independent of each other.
_TISSUE, _TISSUE2, _TUMOR, _FIBRE, _NUC, _STAIN, _PIXEL = range(1, 8)

# Stain optical-density vectors (Ruifrok & Johnston) before per-slide variation.
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic slide: size (w, h) level-0 pixels at `mpp`; everything else follows from `seed`."""

    width: int
    height: int
    mpp: float = 0.25
    seed: int = 0
    tumor: bool = False
    tissue_fraction: float = 0.45

    def __post_init__(self):
        if self.width < 64 or self.height < 64:
            raise ValueError(f"synthetic slides need at least 64 x 64 px, got {self.width} x {self.height}")
        if not 0.05 <= self.mpp <= 10:
            raise ValueError(f"mpp must be between 0.05 and 10, got {self.mpp}")

    @property
    def px_per_um(self) -> float:
        """Level-0 pixels per micron (1 / mpp)."""
        return 1.0 / self.mpp

    @property
    def um(self) -> float:
        """Deprecated name of `px_per_um` (it is pixels per micron, not microns)."""
        warn_renamed("um", "px_per_um", "SyntheticSpec", stacklevel=3)
        return self.px_per_um

    @property
    def cell_px(self) -> float:
        """Side of the nucleus lattice cell in level-0 pixels (14 um)."""
        return 14.0 * self.px_per_um

    def stains(self) -> tuple[np.ndarray, np.ndarray, float]:
        """Per-slide hematoxylin and eosin OD vectors and a stain-strength factor (stain variation)."""
        r = hash_uniform(np.arange(7), np.zeros(7, dtype=np.int64), self.seed, _STAIN)
        h = _H_OD + (r[0:3] - 0.5) * 0.12
        e = _E_OD + (r[3:6] - 0.5) * 0.12
        return h / np.linalg.norm(h), e / np.linalg.norm(e), 0.8 + 0.4 * r[6]


def _scale_um(spec: SyntheticSpec, um: float) -> float:
    """A length in microns as level-0 pixels, capped so that small slides still show several islands."""
    return min(um * spec.px_per_um, max(spec.width, spec.height) / 2.5)


def field_values(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed smooth tissue and tumor fields at level-0 points (x, y): positive inside."""
    big = _scale_um(spec, 2500.0)
    n = 0.65 * value_noise(x, y, big, spec.seed, _TISSUE) + 0.35 * value_noise(
        x, y, big / 3.1, spec.seed, _TISSUE2
    )
    # Fade to glass within a margin of the slide border, as on a real glass slide.
    margin = 0.06 * min(spec.width, spec.height)
    edge = np.minimum(np.minimum(x, spec.width - x), np.minimum(y, spec.height - y)) / margin
    n = n * np.clip(edge, 0.0, 1.0) ** 0.5
    tissue = n - (1.0 - spec.tissue_fraction - 0.05)
    if not spec.tumor:
        return tissue, np.full_like(tissue, -1.0)
    t = value_noise(x, y, _scale_um(spec, 900.0), spec.seed, _TUMOR) - 0.62
    return tissue, np.minimum(t, tissue)


def field_at(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and tumor membership (bool arrays) at level-0 points (x, y)."""
    tissue, tumor = field_values(spec, x, y)
    return tissue > 0, tumor > 0


@dataclass(frozen=True)
class Nuclei:
    """Nuclei as parameters: ids (int32, global), centres (x, y) level-0, radii, angle, outline harmonics."""

    ids: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    ra: np.ndarray
    rb: np.ndarray
    angle: np.ndarray
    harmonics: np.ndarray  # (N, 4): amplitude 2, phase 2, amplitude 3, phase 3
    tumor: np.ndarray
    darkness: np.ndarray

    def __len__(self) -> int:
        return len(self.ids)

    def radius(self, index: np.ndarray, theta: np.ndarray) -> np.ndarray:
        """Outline radius (level-0 px) of nuclei `index` at angles `theta` (broadcast)."""
        a, b = self.ra[index], self.rb[index]
        phi = theta - self.angle[index]
        base = a * b / np.sqrt((b * np.cos(phi)) ** 2 + (a * np.sin(phi)) ** 2)
        h = self.harmonics[index]
        wobble = 1 + h[..., 0] * np.cos(2 * theta + h[..., 1]) + h[..., 2] * np.cos(3 * theta + h[..., 3])
        return base * wobble

    def polygons(self, vertices: int = 24) -> np.ndarray:
        """(N, vertices, 2) outline points in level-0 pixels."""
        theta = np.linspace(0, 2 * np.pi, vertices, endpoint=False)
        idx = np.arange(len(self))[:, None]
        r = self.radius(idx, theta[None, :])
        return np.stack([self.cx[:, None] + r * np.cos(theta), self.cy[:, None] + r * np.sin(theta)], axis=-1)


def nuclei_in_box(spec: SyntheticSpec, box: tuple[float, float, float, float], margin: float = 0.0) -> Nuclei:
    """Every nucleus whose centre lies in the level-0 box (x0, y0, x1, y1) grown by `margin` pixels."""
    c = spec.cell_px
    x0, y0, x1, y1 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
    ix = np.arange(math.floor(x0 / c), math.floor(x1 / c) + 1)
    iy = np.arange(math.floor(y0 / c), math.floor(y1 / c) + 1)
    gx, gy, slot = np.meshgrid(ix, iy, np.arange(2), indexing="xy")
    gx, gy, slot = gx.ravel(), gy.ravel(), slot.ravel()
    key = gx * 2 + slot

    def rnd(k: int) -> np.ndarray:
        return hash_uniform(key, gy, spec.seed, _NUC * 100 + k)

    cx = (gx + 0.1 + 0.8 * rnd(0)) * c
    cy = (gy + 0.1 + 0.8 * rnd(1)) * c
    tissue, tumor = field_at(spec, cx, cy)
    inflammatory = rnd(2) < 0.08
    present = tissue & np.where(tumor, slot == 0, (slot == 0) & (rnd(3) < 0.5))
    # Tumor: a second, touching nucleus beside the first in some cells.
    second = tumor & (slot == 1) & (rnd(3) < 0.35)
    um = spec.px_per_um
    ra = np.where(tumor, 4.2 + 2.0 * rnd(4), np.where(inflammatory, 2.6, 3.6 + 1.2 * rnd(4))) * um
    ratio = np.where(tumor, 0.65 + 0.3 * rnd(5), np.where(inflammatory, 0.9, 0.35 + 0.25 * rnd(5)))
    rb = ra * ratio
    irregular = np.where(tumor, 0.16, 0.05)
    harmonics = np.stack(
        [irregular * rnd(6), 2 * np.pi * rnd(7), irregular * rnd(8), 2 * np.pi * rnd(9)], axis=1
    )
    angle = np.pi * rnd(10)
    # The second tumor nucleus sits one diameter from the first nucleus of its cell, so pairs touch.
    first_cx = (gx + 0.1 + 0.8 * hash_uniform(gx * 2, gy, spec.seed, _NUC * 100)) * c
    first_cy = (gy + 0.1 + 0.8 * hash_uniform(gx * 2, gy, spec.seed, _NUC * 100 + 1)) * c
    direction = 2 * np.pi * rnd(11)
    cx = np.where(second, first_cx + 1.9 * ra * np.cos(direction), cx)
    cy = np.where(second, first_cy + 1.9 * ra * np.sin(direction), cy)
    keep = (present | second) & (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    if second.any():
        keep &= ~second | field_at(spec, cx, cy)[0]
    ncols = math.ceil(spec.width / c) + 2
    ids = ((gy + 1) * ncols + (gx + 1)) * 2 + slot + 1
    darkness = np.where(tumor, 1.25, np.where(inflammatory, 1.35, 1.0)) * (0.85 + 0.3 * rnd(12))
    return Nuclei(
        ids=ids[keep].astype(np.int32),
        cx=cx[keep],
        cy=cy[keep],
        ra=ra[keep],
        rb=rb[keep],
        angle=angle[keep],
        harmonics=harmonics[keep],
        tumor=tumor[keep],
        darkness=darkness[keep],
    )


def _coarse_fields(spec: SyntheticSpec, x0: float, y0: float, w: int, h: int, d: float):
    """Tissue / tumor fields at each output pixel, evaluated on a coarse grid and interpolated (they are smooth)."""
    step = max(1.0, 16.0 / d)
    nx, ny = math.ceil(w / step) + 2, math.ceil(h / step) + 2
    gx = x0 + (np.arange(nx) * step + 0.5) * d
    gy = y0 + (np.arange(ny) * step + 0.5) * d
    mx, my = interpolation_matrix(w, nx, step), interpolation_matrix(h, ny, step)
    xx, yy = np.meshgrid(gx, gy)
    tissue, tumor = field_values(spec, xx, yy)
    # Threshold after interpolating, with a one-pixel soft edge: smooth outlines at every level.
    edge = 0.002 * d
    tissue = np.clip((my @ tissue @ mx.T) / edge + 0.5, 0.0, 1.0)
    tumor = np.clip((my @ tumor @ mx.T) / edge + 0.5, 0.0, 1.0)
    return tissue, tumor


def _nuclei_coverage(spec, nuclei: Nuclei, x0, y0, w, h, d, labels: np.ndarray | None):
    """Per-pixel nucleus coverage (antialiased over one output pixel) and darkness; fills `labels` at d == 1."""
    cover = np.zeros((h, w))
    dark = np.ones((h, w))
    if len(nuclei) == 0:
        return cover, dark
    rmax = float(np.max(np.maximum(nuclei.ra, nuclei.rb)) * 1.35)
    half = math.ceil(rmax / d) + 1
    win = np.arange(-half, half + 1)
    # Window of output pixels around each centre.
    col0 = np.floor((nuclei.cx - x0) / d).astype(int)
    row0 = np.floor((nuclei.cy - y0) / d).astype(int)
    cols = col0[:, None, None] + win[None, None, :]
    rows = row0[:, None, None] + win[None, :, None]
    px = x0 + (cols + 0.5) * d - nuclei.cx[:, None, None]
    py = y0 + (rows + 0.5) * d - nuclei.cy[:, None, None]
    dist = np.hypot(px, py)
    theta = np.arctan2(py, px)
    idx = np.arange(len(nuclei))[:, None, None]
    r = nuclei.radius(idx, theta)
    cov = np.clip((r - dist) / d + 0.5, 0.0, 1.0)
    rows_b = np.broadcast_to(rows, cov.shape)
    cols_b = np.broadcast_to(cols, cov.shape)
    inside = (cov > 0) & (rows_b >= 0) & (rows_b < h) & (cols_b >= 0) & (cols_b < w)
    rr, cc, vv = rows_b[inside], cols_b[inside], cov[inside]
    np.maximum.at(cover, (rr, cc), vv)
    darkness = np.broadcast_to(nuclei.darkness[:, None, None], cov.shape)[inside]
    dark[rr, cc] = darkness
    if labels is not None:
        solid = vv >= 0.5
        ids = np.broadcast_to(nuclei.ids[:, None, None], cov.shape)[inside]
        labels[rr[solid], cc[solid]] = ids[solid]
    return cover, dark


def render_region(
    spec: SyntheticSpec,
    location: tuple[float, float],
    size: tuple[int, int],
    downsample: float = 1.0,
    with_labels: bool = False,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render (h, w, 3) RGB at `downsample` starting at level-0 `location`; labels (int32 nucleus ids) if asked.

    Labels are only exact at downsample 1 (instances are defined at level 0).
    """
    x0, y0 = float(location[0]), float(location[1])
    w, h = int(size[0]), int(size[1])
    d = float(downsample)
    tissue, tumor = _coarse_fields(spec, x0, y0, w, h, d)
    margin = spec.cell_px * 0.6 + 8 * spec.px_per_um
    nuclei = nuclei_in_box(spec, (x0, y0, x0 + w * d, y0 + h * d), margin=margin)
    labels = np.zeros((h, w), dtype=np.int32) if with_labels else None
    cover, dark = _nuclei_coverage(spec, nuclei, x0, y0, w, h, d, labels)

    xs = x0 + (np.arange(w) + 0.5) * d
    ys = y0 + (np.arange(h) + 0.5) * d
    # Fibre texture: anisotropic noise that averages out when zoomed out.
    detail = min(1.0, 2.0 / d)
    if detail > 0.1:
        fibre = value_noise(xs[None, :], ys[:, None] * 4.0, 30 * spec.px_per_um, spec.seed, _FIBRE)
    else:
        fibre = np.full((h, w), 0.5)
    fibre = 0.5 + (fibre - 0.5) * detail
    h_vec, e_vec, strength = spec.stains()
    eosin = tissue * (0.30 + 0.35 * fibre + 0.10 * tumor) * strength
    # Pixel-level speckle keyed by position so every tile and level is reproducible.
    rng = np.random.default_rng([spec.seed, int(x0), int(y0), int(d * 16)])
    speckle = rng.random((h, w), dtype=np.float32)
    chromatin = 0.8 + 0.4 * speckle * detail + 0.2 * (1 - detail)
    hema = ((0.06 * tissue + cover * 0.9 * dark * chromatin) * strength).astype(np.float32)
    eosin = eosin.astype(np.float32)
    od = hema[..., None] * h_vec.astype(np.float32) + eosin[..., None] * e_vec.astype(np.float32) + 0.035
    rgb = 255.0 * np.exp(-od) + (speckle[..., None] - 0.5) * 6.0
    return np.clip(rgb, 0, 255).astype(np.uint8), labels

"""Realistic H&E cells with exact instance and type masks, rendered one field of view at a time.

    field = render_cells((256, 256), mpp=0.5, rng=np.random.default_rng(0))
    field.image      # (H, W, 3) uint8 RGB
    field.instances  # (H, W) int32, 0 background, 1..N nuclei (only the visible part of an occluded nucleus)
    field.types      # (H, W) uint8, 0 background, PanNuke classes 1..5 (see CELL_TYPES)

A field is a scene (stroma, epithelial nests, inflamed stroma, or a mix of them) drawn as hematoxylin and eosin
concentrations, then turned into RGB by Beer-Lambert mixing with jittered stain vectors, so colour deconvolution
behaves as on real H&E. Stroma is wavy eosin fibres with pale gaps; nests are polygonal cells with pale
cytoplasm and borders; vessels hold red cells. Nuclei carry chromatin texture, nucleoli, vesicular (rim-stained)
or hyperchromatic forms; fibroblasts are spindles aligned with the fibres; lymphocytes are small, round and dark;
tumour nuclei are large, pleomorphic, touching or overlapping (the nucleus drawn later hides the one below, in
the image and in the masks). Some nuclei are out of focus. Sizes are in microns, so any `mpp` works.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage as ndi

__all__ = ["CELL_TYPES", "CellField", "render_cells"]

CELL_TYPES = ("background", "neoplastic", "inflammatory", "connective", "dead", "epithelial")
NEOPLASTIC, INFLAMMATORY, CONNECTIVE, DEAD, EPITHELIAL = 1, 2, 3, 4, 5

_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])
# Stain vectors (optical density per R, G, B) as estimated (Macenko) on real H&E: the textbook pair above, a
# magenta eosin (ovarian stroma, 0.45 um/px) and a redder one with a bluer haematoxylin (the CMU slide). Each
# field mixes them at random, so the stain hue spans that range.
_H_REF = np.array([_H_OD, [0.62, 0.76, 0.21], [0.76, 0.56, 0.34]])
_E_REF = np.array([_E_OD, [0.22, 0.93, 0.29], [0.18, 0.86, 0.49]])
_SCENES = ("stroma", "nests", "inflamed", "mixed", "loose")
# Loose fibrous stroma is what real stroma mostly looks like and what the other scenes miss: drawn most often.
_SCENE_P = (0.15, 0.15, 0.15, 0.15, 0.4)


@dataclass(frozen=True)
class CellField:
    """One rendered field of view: RGB image, instance labels and PanNuke type labels, all (H, W)."""

    image: np.ndarray
    instances: np.ndarray
    types: np.ndarray
    mpp: float
    scene: str


@dataclass
class _Canvas:
    """Stain concentrations and masks being drawn into (private: mutated in place by the drawing helpers)."""

    hema: np.ndarray
    hema_blur: np.ndarray
    eosin: np.ndarray
    instances: np.ndarray
    types: np.ndarray
    texture: np.ndarray
    count: int = 0


def _smooth_noise(rng: np.random.Generator, shape, sigma) -> np.ndarray:
    """Gaussian-filtered white noise scaled to zero mean, unit standard deviation."""
    n = ndi.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (n - n.mean()) / (n.std() + 1e-9)


def _warp(
    rng: np.random.Generator, shape, um: float, amplitude: tuple[float, float], scale: tuple[float, float]
):
    """A smooth random displacement field (dy, dx) in px: `amplitude` and `scale` are ranges in microns."""
    warp = rng.uniform(*amplitude) * um
    dy = _smooth_noise(rng, shape, rng.uniform(*scale) * um) * warp
    dx = _smooth_noise(rng, shape, rng.uniform(*scale) * um) * warp
    return dy, dx


def _oriented_noise(rng: np.random.Generator, shape, across: float, along: float, angle: float, dy, dx):
    """Noise smoothed `across` / `along` px (streaks along `angle`), bent by the displacement (dy, dx);
    zero mean, unit standard deviation."""
    h, w = shape
    side = int(math.ceil(math.hypot(h, w))) + 4
    oy, ox = (side - h) // 2, (side - w) // 2
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    base = ndi.gaussian_filter(rng.standard_normal((side, side)), (across, along))
    base = ndi.rotate(base, -math.degrees(angle), reshape=False, order=1, mode="reflect")[
        oy : oy + h, ox : ox + w
    ]
    f = ndi.map_coordinates(base, [yy + dy, xx + dx], order=1, mode="reflect")
    return (f - f.mean()) / (f.std() + 1e-9)


def _fibres(rng: np.random.Generator, shape, um: float, angle: float) -> tuple[np.ndarray, ...]:
    """Wavy collagen along `angle`: eosin density, thin pale clefts between bundles and thin dark strands
    (purple fibres, cell processes: the look-alikes a nuclei model must learn to ignore), each in [0, 1]."""
    dy, dx = _warp(rng, shape, um, (2, 8), (8, 20))

    def oriented(across: float, along: float) -> np.ndarray:
        return _oriented_noise(rng, shape, across, along, angle, dy, dx)

    bundles = oriented(rng.uniform(0.8, 2.0) * um, rng.uniform(4, 10) * um)
    fine = oriented(0.3 * um, rng.uniform(2, 5) * um)
    density = 1.0 / (1.0 + np.exp(-(1.2 * bundles + 0.5 * fine)))
    clefts = np.exp(-((oriented(rng.uniform(1, 3) * um, rng.uniform(6, 14) * um) / 0.25) ** 2))
    strands = np.exp(-((oriented(rng.uniform(1, 3) * um, rng.uniform(4, 10) * um) / 0.2) ** 2))
    strands *= np.clip(_smooth_noise(rng, shape, rng.uniform(4, 10) * um) + 0.3, 0, 1)  # broken, not endless
    return density, clefts, strands


def _outline_radius(theta, a, b, harmonics) -> np.ndarray:
    """Radius of an ellipse (semi-axes a, b, along the local x axis) with low-order wobble, at angles theta."""
    base = a * b / np.sqrt((b * np.cos(theta)) ** 2 + (a * np.sin(theta)) ** 2)
    wobble = 1.0
    for k, (amp, phase) in enumerate(harmonics, start=2):
        wobble = wobble + amp * np.cos(k * theta + phase)
    return base * wobble


def _draw_nucleus(canvas: _Canvas, rng, cx, cy, a, b, angle, kind, cls, um, blurred=False, bend=0.0, irregular=0.08,
                  density=1.0, harmonics=None) -> bool:  # fmt: skip
    """Draw one nucleus (semi-axes a, b px) into the canvas; False if nothing of it lands in the field.

    `harmonics`: the outline's (amplitude, phase) pairs for orders 2, 3, ... in the nucleus' own frame (the slide
    writer passes them so that its ground-truth polygons match the pixels); drawn from `rng` when None.
    """
    h, w = canvas.instances.shape
    reach = max(a, b) * (1.4 + abs(bend) * max(a, b)) + 3
    x0, x1 = max(int(cx - reach), 0), min(int(cx + reach) + 2, w)
    y0, y1 = max(int(cy - reach), 0), min(int(cy + reach) + 2, h)
    if x1 <= x0 or y1 <= y0:
        return False
    yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float64)
    px, py = xx + 0.5 - cx, yy + 0.5 - cy
    c, s = math.cos(angle), math.sin(angle)
    u, v = c * px + s * py, -s * px + c * py
    v = v - bend * u * u  # spindles curve
    r = np.hypot(u, v)
    theta = np.arctan2(v, u)
    harm = harmonics
    if harm is None:
        harm = [(irregular * rng.uniform(0, 1), rng.uniform(0, 2 * np.pi)) for _ in range(3)]
    rb = _outline_radius(theta, a, b, harm)
    rho = r / np.maximum(rb, 1e-6)
    edge_px = (1.0 - rho) * np.minimum(rb, max(a, b))
    cover = np.clip(edge_px + 0.5, 0.0, 1.0)
    solid = edge_px >= 0
    if not solid.any():
        return False
    tex = canvas.texture[y0:y1, x0:x1]
    if kind == "vesicular":
        profile = 0.25 + 0.75 * np.clip((rho - 0.65) / 0.3, 0, 1) ** 1.5
        chrom = profile * (1 + 0.55 * tex) + 0.35 * np.clip(tex - 0.9, 0, None)
    elif kind == "hyper":
        chrom = (1.0 - 0.1 * rho**2) * (1 + 0.18 * tex)
    elif kind == "pyknotic":
        chrom = np.ones_like(rho) * (1 + 0.05 * tex)
    else:  # "normal": finely granular
        chrom = (0.9 - 0.15 * rho**2) * (1 + 0.3 * tex)
    dens = density * np.clip(chrom, 0.05, None) * cover
    target = canvas.hema_blur if blurred else canvas.hema
    # Overlap darkens, but less than the sum: the lower nucleus is partly out of the focal plane.
    old = target[y0:y1, x0:x1]
    target[y0:y1, x0:x1] = np.maximum(old, dens) + 0.3 * np.minimum(old, dens)
    if kind in ("vesicular", "normal") and rng.random() < (0.85 if kind == "vesicular" else 0.3):
        for _ in range(rng.integers(1, 3)):
            ang, rad = rng.uniform(0, 2 * np.pi), rng.uniform(0, 0.45)
            nx, ny = rad * a * math.cos(ang), rad * b * math.sin(ang)
            nr = rng.uniform(0.5, 1.1) * um
            d2 = (u - nx) ** 2 + (v - ny) ** 2
            spot = np.clip(nr + 0.5 - np.sqrt(d2), 0, 1) * solid
            target[y0:y1, x0:x1] += 0.9 * density * spot
            canvas.eosin[y0:y1, x0:x1] += 0.35 * spot
    canvas.count += 1
    inst = canvas.instances[y0:y1, x0:x1]
    inst[solid] = canvas.count
    canvas.types[y0:y1, x0:x1][solid] = cls
    return True


def _place(rng, n, h, w, weight=None) -> np.ndarray:
    """n (x, y) points, uniform or drawn with probability proportional to a (H, W) weight map."""
    if weight is None:
        return np.stack([rng.uniform(0, w, n), rng.uniform(0, h, n)], axis=1)
    p = weight.ravel() / weight.sum()
    idx = rng.choice(p.size, size=n, p=p)
    return np.stack([idx % w + rng.uniform(0, 1, n), idx // w + rng.uniform(0, 1, n)], axis=1)


def _nests(rng, canvas: _Canvas, region: np.ndarray, um: float, tumour: bool) -> None:
    """Epithelial cells tiled as a Voronoi of seeds inside `region`: cytoplasm, borders, one nucleus each."""
    h, w = region.shape
    cell = rng.uniform(11, 17) * um if tumour else rng.uniform(9, 12) * um
    n = int(region.sum() / (cell * cell) * 1.1)
    if n < 1:
        return
    pts = _place(rng, n, h, w, region.astype(float) + 1e-6)
    # Cell borders: pixels nearly equidistant from their two nearest seeds.
    step = 2
    ys, xs = np.mgrid[0:h:step, 0:w:step]
    from scipy.spatial import cKDTree

    tree = cKDTree(pts)
    dist, _ = tree.query(np.stack([xs.ravel(), ys.ravel()], axis=1), k=min(2, n))
    if n >= 2:
        gap = (dist[:, 1] - dist[:, 0]).reshape(xs.shape)
        border = np.clip(1.0 - gap / (0.9 * um), 0, 1)
        border = ndi.zoom(border, step, order=1)[:h, :w]
        border = np.pad(border, ((0, h - border.shape[0]), (0, w - border.shape[1])), mode="edge")
    else:
        border = np.zeros((h, w))
    cyto_e = rng.uniform(0.25, 0.55)
    cyto_h = rng.uniform(0.05, 0.2)
    soft = ndi.gaussian_filter(region.astype(float), 1.5)
    canvas.eosin += soft * (cyto_e * (1 + 0.15 * canvas.texture) + 0.35 * border)
    canvas.hema += soft * (cyto_h + 0.1 * border) * 0.6
    pleo = rng.uniform(0.1, 0.35) if tumour else 0.08
    base_a = rng.uniform(4.5, 7.5) * um if tumour else rng.uniform(3.5, 4.5) * um
    kind_p = rng.uniform(0.2, 0.8)
    for x, y in pts:
        if not region[min(int(y), h - 1), min(int(x), w - 1)]:
            continue
        a = base_a * math.exp(rng.normal(0, pleo))
        b = a * rng.uniform(0.6, 0.95)
        jitter = rng.normal(0, 0.12 * cell, 2)
        kind = ("vesicular" if rng.random() < kind_p else "hyper") if tumour else "normal"
        dens = rng.uniform(0.7, 1.1) if kind == "vesicular" else rng.uniform(0.7, 1.3)
        _draw_nucleus(canvas, rng, x + jitter[0], y + jitter[1], a, b, rng.uniform(0, np.pi), kind,
                      NEOPLASTIC if tumour else EPITHELIAL, um, blurred=rng.random() < 0.15,
                      irregular=0.12 if tumour else 0.05, density=dens)  # fmt: skip
    if tumour:  # crowded tumour: extra nuclei overlapping their neighbours
        for x, y in pts[rng.random(len(pts)) < rng.uniform(0.05, 0.3)]:
            a = base_a * math.exp(rng.normal(0, pleo))
            ang = rng.uniform(0, 2 * np.pi)
            _draw_nucleus(canvas, rng, x + 1.3 * a * math.cos(ang), y + 1.3 * a * math.sin(ang), a,
                          a * rng.uniform(0.6, 0.95), rng.uniform(0, np.pi), "hyper", NEOPLASTIC, um,
                          irregular=0.12, density=rng.uniform(0.8, 1.3))  # fmt: skip


def _stroma_nuclei(rng, canvas: _Canvas, region: np.ndarray, orient: np.ndarray, um: float, density: float):
    """Fibroblasts (spindles along the fibres), some plump, in `region`."""
    h, w = region.shape
    n = rng.poisson(density * region.sum() / um**2 / 500.0)
    if n == 0:
        return
    for x, y in _place(rng, n, h, w, region.astype(float) + 1e-6):
        length = rng.uniform(5, 12) * um
        width = length * rng.uniform(0.22, 0.5)
        ang = orient[min(int(y), h - 1), min(int(x), w - 1)] + rng.normal(0, 0.2)
        kind = "hyper" if rng.random() < 0.5 else "normal"
        _draw_nucleus(canvas, rng, x, y, length, width, ang, kind, CONNECTIVE, um,
                      blurred=rng.random() < 0.25, bend=rng.normal(0, 0.25) / length, irregular=0.06,
                      density=rng.uniform(0.55, 1.2))  # fmt: skip


def _loose_matrix(rng, shape, um: float, angle: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Loose fibrous stroma: thin wavy collagen fibrils gathered in bundles, pale oedematous gaps between the
    bundles holding faint wispy blue-grey mucoid material (not nuclei). Returns eosin and haematoxylin
    densities and the bundle weight in [0, 1] (where fibroblasts lie)."""
    dy, dx = _warp(rng, shape, um, (3, 10), (10, 25))
    # Bundles: long smooth streaks; a random share of the field becomes pale gaps between them.
    bundles = _oriented_noise(rng, shape, rng.uniform(3, 8) * um, rng.uniform(20, 45) * um, angle, dy, dx)
    gap_share = rng.uniform(0.1, 0.5)
    level = np.quantile(bundles, gap_share)
    bundle = 1.0 / (1.0 + np.exp(-(bundles - level) * rng.uniform(2.5, 5.0)))
    # Fibrils: thin lines at the zero crossings of narrow streaky noise, two layers of different spacing.
    # Fibrils also crimp on a small scale, and cross each other a little (+-15 degrees).
    fy, fx = _warp(rng, shape, um, (0.3, 1.0), (4.0, 8.0))
    fibrils = np.zeros(shape)
    for _ in range(3):
        f = _oriented_noise(rng, shape, rng.uniform(0.5, 1.2) * um, rng.uniform(8, 20) * um,
                            angle + rng.normal(0, 0.25), dy + fy, dx + fx)  # fmt: skip
        fibrils = np.maximum(fibrils, np.exp(-((f / rng.uniform(0.2, 0.4)) ** 2)))
    fibrils *= np.clip(0.7 + 0.5 * _smooth_noise(rng, shape, 3 * um), 0, 1)  # fibres fray and end
    ground = rng.uniform(0.3, 0.7)  # pink ground substance between the fibrils of a bundle
    eosin = bundle * (ground + rng.uniform(0.6, 1.3) * fibrils) * rng.uniform(0.9, 1.5)
    eosin += (1 - bundle) * rng.uniform(0.0, 0.08)
    # Mucoid wisps in the gaps: a lacy network of thin, faint, blue-grey threads.
    lace = np.exp(-((_smooth_noise(rng, shape, rng.uniform(1.0, 2.0) * um) / 0.3) ** 2))
    lace *= np.clip(_smooth_noise(rng, shape, 6 * um) + 0.7, 0, 1)
    gaps = 1 - bundle
    hema = gaps * lace * rng.uniform(0.1, 0.45) + eosin * rng.uniform(0.0, 0.1)
    eosin = eosin + gaps * lace * rng.uniform(0.05, 0.2)
    return eosin, hema, bundle


def _loose_nuclei(rng, canvas: _Canvas, bundle: np.ndarray, angle: float, um: float) -> None:
    """Sparse fibroblasts in the bundles: mostly thin dark spindles (about 9-18 x 2.5-4.5 um, often bent),
    some plumper pale oval ones; scattered lymphocytes, a few of them in small groups."""
    h, w = bundle.shape
    area = h * w / um**2
    n = rng.poisson(rng.uniform(0.15, 0.9) * area / 500.0)
    weight = bundle**2 + 0.05
    for x, y in _place(rng, n, h, w, weight) if n else ():
        ang = angle + rng.normal(0, 0.25)
        if rng.random() < 0.75:  # thin dark spindle
            a = rng.uniform(4.5, 9.5) * um
            b = rng.uniform(1.4, 2.8) * um
            kind, dens = ("hyper" if rng.random() < 0.6 else "normal"), rng.uniform(0.9, 1.6)
            bend = rng.normal(0, 0.12) / a
        else:  # plump, paler, oval
            a = rng.uniform(3.5, 6.0) * um
            b = a * rng.uniform(0.4, 0.65)
            kind, dens = ("vesicular" if rng.random() < 0.4 else "normal"), rng.uniform(0.7, 1.2)
            bend = rng.normal(0, 0.06) / a
        _draw_nucleus(canvas, rng, x, y, a, b, ang, kind, CONNECTIVE, um, blurred=rng.random() < 0.15,
                      bend=bend, irregular=0.06, density=dens)  # fmt: skip
    n_lymph = rng.poisson(rng.uniform(0.0, 1 / 4000) * area)
    _lymphocytes(rng, canvas, np.ones((h, w), bool), um, n_lymph, clustered=rng.random() < 0.5)


def _lymphocytes(rng, canvas: _Canvas, region: np.ndarray, um: float, n: int, clustered: bool):
    """Small round dark nuclei, scattered or in clusters; a few pyknotic dead cells."""
    h, w = region.shape
    weight = region.astype(float) + 1e-6
    if clustered:
        weight = weight * np.exp(1.2 * _smooth_noise(rng, (h, w), 10 * um))
    for x, y in _place(rng, n, h, w, weight):
        dead = rng.random() < 0.06
        r = (rng.uniform(1.5, 2.5) if dead else rng.uniform(2.6, 3.8)) * um
        if dead:
            canvas.eosin[
                max(int(y - 2 * r), 0) : int(y + 2 * r), max(int(x - 2 * r), 0) : int(x + 2 * r)
            ] += 0.1
        _draw_nucleus(canvas, rng, x, y, r, r * rng.uniform(0.8, 1.0), rng.uniform(0, np.pi),
                      "pyknotic" if dead else "hyper", DEAD if dead else INFLAMMATORY, um,
                      blurred=rng.random() < 0.15, irregular=0.05, density=rng.uniform(1.1, 1.7))  # fmt: skip


def _red_cells(rng, canvas: _Canvas, um: float, n: int) -> None:
    """Red blood cells: eosin-dense discs with a paler centre, strung along a vessel."""
    h, w = canvas.eosin.shape
    if n == 0:
        return
    x, y = rng.uniform(0, w), rng.uniform(0, h)
    ang = rng.uniform(0, 2 * np.pi)
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(n):
        ang += rng.normal(0, 0.4)
        x += 6 * um * math.cos(ang) + rng.normal(0, 2 * um)
        y += 6 * um * math.sin(ang) + rng.normal(0, 2 * um)
        r = rng.uniform(3.0, 3.8) * um
        d = np.hypot(xx - x, yy - y)
        disc = np.clip(r + 0.5 - d, 0, 1)
        canvas.eosin += disc * (1.2 - 0.35 * np.exp(-((d / (0.5 * r)) ** 2)))


def render_cells(size: tuple[int, int], mpp: float = 0.5, rng: np.random.Generator | None = None,
                 scene: str | None = None) -> CellField:  # fmt: skip
    """Render a (h, w) = `size` field at `mpp` microns per pixel; `scene` one of stroma/nests/inflamed/mixed/loose
    (drawn at random when None, loose stroma most often)."""
    h, w = int(size[0]), int(size[1])
    if h < 16 or w < 16:
        raise ValueError(f"size must be at least (16, 16) pixels, got {size}")
    if not 0.1 <= mpp <= 4.0:
        raise ValueError(f"mpp must be between 0.1 and 4, got {mpp}")
    rng = rng if rng is not None else np.random.default_rng()
    scene = scene if scene is not None else str(rng.choice(_SCENES, p=_SCENE_P))
    if scene not in _SCENES:
        raise ValueError(f"scene must be one of {_SCENES}, got {scene!r}")
    um = 1.0 / mpp
    texture = 0.6 * _smooth_noise(rng, (h, w), 0.35 * um) + 0.4 * _smooth_noise(rng, (h, w), 0.8 * um)
    canvas = _Canvas(np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w), np.int32),
                     np.zeros((h, w), np.uint8), texture)  # fmt: skip

    # Stroma everywhere first; nests are carved out of it.
    angle = rng.uniform(0, np.pi)
    if scene == "loose":
        eosin, hema, bundle = _loose_matrix(rng, (h, w), um, angle)
        canvas.eosin += eosin
        canvas.hema += hema
        if rng.random() < 0.5:  # a few purple fibres and cell processes (look-alikes, not nuclei)
            strands = _fibres(rng, (h, w), um, angle)[2]
            canvas.hema += rng.uniform(0.05, 0.4) * strands * bundle
        _loose_nuclei(rng, canvas, bundle, angle, um)
        if rng.random() < 0.3:
            _red_cells(rng, canvas, um, int(rng.integers(2, 8)))
        return _finish(rng, canvas, um, mpp, scene)
    fib, clefts, strands = _fibres(rng, (h, w), um, angle)
    cleft_strength = rng.uniform(0.3, 1.0)
    stroma_e = (0.1 + 1.2 * fib**1.5) * (1 - cleft_strength * clefts) * rng.uniform(0.6, 1.2)
    canvas.eosin += stroma_e
    canvas.hema += rng.uniform(0.0, 0.25) * stroma_e  # bluish stroma (mucoid, or a strong haematoxylin)
    canvas.hema += rng.uniform(0.1, 1.0) * strands
    canvas.eosin += rng.uniform(0.0, 0.5) * strands
    orient = np.full((h, w), angle)

    if scene in ("nests", "mixed"):
        field = _smooth_noise(rng, (h, w), rng.uniform(15, 30) * um)
        cut = 0.8 if scene == "nests" else 0.1
        nest = field > -cut if scene == "nests" else field > cut
        nest = ndi.binary_opening(nest, iterations=2)
        soft = ndi.gaussian_filter(nest.astype(float), 2)
        canvas.eosin *= 1 - 0.9 * soft
        canvas.hema *= 1 - 0.8 * soft
        tumour = rng.random() < 0.7
        _nests(rng, canvas, nest, um, tumour)
        stroma = ~ndi.binary_dilation(nest, iterations=int(2 * um))
    else:
        stroma = np.ones((h, w), bool)

    density = {"stroma": rng.uniform(0.2, 1.6), "inflamed": rng.uniform(0.2, 0.8)}.get(
        scene, rng.uniform(0.3, 1.2)
    )
    _stroma_nuclei(rng, canvas, stroma, orient, um, density)
    area_um = stroma.sum() / um**2
    n_lymph = rng.poisson({"inflamed": 1 / 60, "stroma": 1 / 1200}.get(scene, 1 / 600) * area_um)
    _lymphocytes(rng, canvas, stroma, um, n_lymph, clustered=scene == "inflamed")
    if rng.random() < 0.35:
        _red_cells(rng, canvas, um, int(rng.integers(3, 15)))
    if rng.random() < 0.3:  # lumens, fat, tears: empty glass
        hole = _smooth_noise(rng, (h, w), rng.uniform(8, 20) * um) > rng.uniform(1.2, 2.0)
        soft = ndi.gaussian_filter(hole.astype(float), 1.0)
        canvas.eosin *= 1 - soft
        canvas.hema *= 1 - soft
        canvas.hema_blur *= 1 - soft
    return _finish(rng, canvas, um, mpp, scene)


def _stain_vector(rng, refs: np.ndarray) -> np.ndarray:
    """A unit optical-density vector: a random convex mix of the reference stain vectors, jittered."""
    v = rng.dirichlet(np.ones(len(refs))) @ refs + rng.normal(0, 0.04, 3)
    return np.abs(v) / np.linalg.norm(v)


def _finish(rng, canvas: _Canvas, um: float, mpp: float, scene: str) -> CellField:
    """Stain concentrations -> RGB by Beer-Lambert with jittered stain vectors; masks numbered 1..N."""
    hema = canvas.hema + ndi.gaussian_filter(canvas.hema_blur, rng.uniform(1.0, 2.5) * um * 0.5)
    h_vec, e_vec = _stain_vector(rng, _H_REF), _stain_vector(rng, _E_REF)
    strength_h, strength_e = rng.uniform(0.9, 1.8), rng.uniform(0.3, 0.8)
    od = (hema * strength_h)[..., None] * h_vec + (canvas.eosin * strength_e)[..., None] * e_vec + 0.03
    od = ndi.gaussian_filter(od, (rng.uniform(0.3, 0.9), rng.uniform(0.3, 0.9), 0))
    rgb = 255.0 * np.exp(-od) + rng.normal(0, rng.uniform(1, 4), od.shape)
    image = np.clip(rgb, 0, 255).astype(np.uint8)
    instances = _relabel(canvas.instances)
    types = np.where(instances > 0, canvas.types, 0).astype(np.uint8)
    return CellField(image=image, instances=instances, types=types, mpp=float(mpp), scene=scene)


def _relabel(instances: np.ndarray, min_px: int = 4) -> np.ndarray:
    """Keep the largest piece of each (possibly occluded) nucleus, drop specks, number them 1..N."""
    out = np.zeros_like(instances)
    objects = ndi.find_objects(instances)
    k = 0
    for lab, sl in enumerate(objects, start=1):
        if sl is None:
            continue
        m = instances[sl] == lab
        cc, n = ndi.label(m)
        if n > 1:
            sizes = np.bincount(cc.ravel())[1:]
            m = cc == (np.argmax(sizes) + 1)
        if m.sum() < min_px:
            continue
        k += 1
        out[sl][m] = k
    return out

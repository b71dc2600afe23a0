"""Procedural H&E-like content as pure functions of level-0 coordinates.

Tissue islands and tumor regions come from smooth noise fields. Benign tissue is stroma (eosin fibres, sparse
spindle fibroblasts, a few lymphocytes) with glands: a lumen lined by one orderly ring of small, uniform, basal
nuclei. The tumor region is packed with nests whose look follows `grade` (`wsi.synthetic.glands`): larger,
crowded, stratified, pleomorphic, hyperchromatic nuclei with coarse chromatin and nucleoli, and lumina that shrink
and vanish as the grade rises. Two optional traits of the tumor's surroundings: a dense band of lymphocytes
(`lymphocytes`) and pale, bluish, mucinous stroma (`mucin`). Benign look-alikes of tumour (`lookalikes`, on
benign and cancer slides alike; `lookalike_values`): zones of crowded, basal-cell-rich glands with small dark
uniform nuclei, lymphoid aggregates away from the tumour, and darker-stained zones, so that a tile's colour or
hematoxylin density does not tell tumour from benign; only the nuclei's size, shape, pleomorphism, chromatin
and arrangement do. Nuclei are drawn with `wsi.synthetic.cells`
(chromatin texture, vesicular forms, nucleoli). Colours come from Beer-Lambert stain mixing with per-slide stain
variation, so colour deconvolution and optical density thresholds behave as on real H&E.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi.deprecation import warn_renamed
from wsi.synthetic.glands import GLAND, gland_grid, gland_nuclei
from wsi.synthetic.noise import hash_uniform, value_noise

__all__ = ["NUCLEUS_KINDS", "Nuclei", "SyntheticSpec", "field_at", "field_values", "lookalike_values",
           "nuclei_in_box", "render_region"]  # fmt: skip

# Salts keep the random fields independent of each other.
_TISSUE, _TISSUE2, _TUMOR, _FIBRE, _NUC, _STAIN, _PIXEL, _CHROMATIN, _WISP = range(1, 10)
_CROWDED, _AGGREGATE, _DARK = range(21, 24)

# Stain optical-density vectors (Ruifrok & Johnston) before per-slide variation.
_H_OD = np.array([0.65, 0.70, 0.29])
_E_OD = np.array([0.07, 0.99, 0.11])

NUCLEUS_KINDS = ("fibroblast", "epithelial", "tumor", "lymphocyte")
_FIBRO, _EPI, _TUMOR_NUC, _LYMPH = range(4)
_GLAND_ID_OFFSET = 1 << 30  # gland nuclei ids sit above the stroma lattice's ids
_PERI_BAND = 0.1  # width of the peritumoral band in tumor-field units (about 100 um)


@dataclass(frozen=True)
class SyntheticSpec:
    """A synthetic slide: size (w, h) level-0 pixels at `mpp`; everything else follows from `seed`.

    `grade` (1-5) sets the tumor's morphology; `tumor_threshold` its extent (higher: less tumor);
    `lymphocytes` and `mucin` (0-1) the strength of the two peritumoral traits; `lookalikes` (0-1) how much of the
    benign tissue carries tumour look-alikes (crowded glands, lymphoid aggregates) and how uneven the staining is.
    """

    width: int
    height: int
    mpp: float = 0.25
    seed: int = 0
    tumor: bool = False
    tissue_fraction: float = 0.45
    grade: int = 3
    tumor_threshold: float = 0.62
    lymphocytes: float = 0.0
    mucin: float = 0.0
    lookalikes: float = 0.0

    def __post_init__(self):
        if self.width < 64 or self.height < 64:
            raise ValueError(f"synthetic slides need at least 64 x 64 px, got {self.width} x {self.height}")
        if not 0.05 <= self.mpp <= 10:
            raise ValueError(f"mpp must be between 0.05 and 10, got {self.mpp}")
        if self.grade not in (1, 2, 3, 4, 5):
            raise ValueError(f"grade must be 1, 2, 3, 4 or 5, got {self.grade!r}")
        if not 0 < self.tumor_threshold < 1:
            raise ValueError(f"tumor_threshold must be between 0 and 1, got {self.tumor_threshold}")
        for name in ("lymphocytes", "mucin", "lookalikes"):
            if not 0 <= getattr(self, name) <= 1:
                raise ValueError(f"{name} must be between 0 and 1, got {getattr(self, name)}")

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
        """Side of the stroma nucleus lattice cell in level-0 pixels (14 um)."""
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


def _fields(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue field, tumor field (inside tissue) and the raw tumor field (for the peritumoral band)."""
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
        none = np.full_like(tissue, -1.0)
        return tissue, none, none
    t = value_noise(x, y, _scale_um(spec, 900.0), spec.seed, _TUMOR) - spec.tumor_threshold
    return tissue, np.minimum(t, tissue), t


def field_values(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed smooth tissue and tumor fields at level-0 points (x, y): positive inside."""
    tissue, tumor, _ = _fields(spec, x, y)
    return tissue, tumor


def field_at(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Tissue and tumor membership (bool arrays) at level-0 points (x, y)."""
    tissue, tumor = field_values(spec, x, y)
    return tissue > 0, tumor > 0


def lookalike_values(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Signed fields of the benign look-alike zones at level-0 points (x, y), positive inside: crowded
    basal-cell-rich glands (anywhere outside the tumor) and lymphoid aggregates (outside the peritumoral band, so
    that lymphocytes AROUND the tumor stay the `lymphocytes` trait). Both are benign: never inside the tumor."""
    tissue, _, raw = _fields(spec, x, y)
    if spec.lookalikes <= 0:
        none = np.full_like(tissue, -1.0)
        return none, none
    crowded = value_noise(x, y, _scale_um(spec, 450.0), spec.seed, _CROWDED) - (1.0 - 0.55 * spec.lookalikes)
    aggregate = value_noise(x, y, _scale_um(spec, 140.0), spec.seed, _AGGREGATE) - (
        1.0 - 0.35 * spec.lookalikes
    )
    benign = np.minimum(tissue, -raw)  # raw is -1 everywhere on a benign slide
    away = np.minimum(tissue, -(raw + _PERI_BAND))
    return np.minimum(crowded, benign), np.minimum(aggregate, away)


def _structure_fields(spec: SyntheticSpec, x: np.ndarray, y: np.ndarray):
    """Tissue, tumor and crowded-zone fields: what `gland_grid` needs."""
    tissue, tumor = field_values(spec, x, y)
    return tissue, tumor, lookalike_values(spec, x, y)[0]


def _peritumoral(raw: np.ndarray) -> np.ndarray:
    """1 inside the tumor region, fading to 0 over the band around it."""
    return np.clip(raw / _PERI_BAND + 1.0, 0.0, 1.0)


@dataclass(frozen=True)
class Nuclei:
    """Nuclei as parameters: ids (int32, global), centres (x, y) level-0, radii, angle, outline harmonics.

    `kind` indexes NUCLEUS_KINDS; `vesicular` nuclei have open chromatin with a stained rim and nucleoli.
    """

    ids: np.ndarray
    cx: np.ndarray
    cy: np.ndarray
    ra: np.ndarray
    rb: np.ndarray
    angle: np.ndarray
    harmonics: np.ndarray  # (N, 4): amplitude 2, phase 2, amplitude 3, phase 3
    tumor: np.ndarray
    darkness: np.ndarray
    kind: np.ndarray | None = None
    vesicular: np.ndarray | None = None

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


def _stroma_nuclei(spec: SyntheticSpec, x0, y0, x1, y1, grid) -> dict[str, np.ndarray]:
    """Fibroblasts and lymphocytes on a 14 um lattice (4 slots per cell), outside glands and nests."""
    c = spec.cell_px
    ix = np.arange(math.floor(x0 / c), math.floor(x1 / c) + 1)
    iy = np.arange(math.floor(y0 / c), math.floor(y1 / c) + 1)
    gx, gy, slot = np.meshgrid(ix, iy, np.arange(4), indexing="xy")
    gx, gy, slot = gx.ravel(), gy.ravel(), slot.ravel()
    key = gx * 4 + slot

    def rnd(k: int) -> np.ndarray:
        return hash_uniform(key, gy, spec.seed, _NUC * 100 + k)

    cx = (gx + 0.1 + 0.8 * rnd(0)) * c
    cy = (gy + 0.1 + 0.8 * rnd(1)) * c
    tissue, _, raw = _fields(spec, cx, cy)
    peri = _peritumoral(raw) if spec.tumor else np.zeros_like(raw)
    aggregate = lookalike_values(spec, cx, cy)[1] > 0
    _, covered, _, _ = grid.lookup(cx, cy)
    stroma = (tissue > 0) & (covered == 0)
    fibro = stroma & (slot == 0) & ~aggregate & (rnd(2) < 0.5 * (1 - 0.6 * spec.mucin * peri))
    lymph_p = np.where(slot == 1, 0.04, 0.0) + 0.55 * spec.lymphocytes * peri
    lymph_p = np.where(aggregate, 0.95, lymph_p)  # a lymphoid aggregate: packed with lymphocytes
    lymph = stroma & ~fibro & ((slot > 0) | aggregate) & (rnd(3) < lymph_p)
    keep = (fibro | lymph) & (cx >= x0) & (cx < x1) & (cy >= y0) & (cy < y1)
    um = spec.px_per_um
    ra = np.where(lymph, 2.5 + 0.6 * rnd(4), 4.0 + 2.2 * rnd(4)) * um
    ratio = np.where(lymph, 0.85 + 0.15 * rnd(5), 0.24 + 0.16 * rnd(5))
    irregular = np.where(lymph, 0.03, 0.05)
    harmonics = np.stack([irregular * rnd(6), 2 * np.pi * rnd(7), irregular * rnd(8), 2 * np.pi * rnd(9)], 1)
    # The fibres run along x (see render_region), and so do the fibroblasts.
    angle = np.where(lymph, np.pi * rnd(10), 0.35 * (rnd(10) - 0.5))
    ncols = math.ceil(spec.width / c) + 2
    ids = ((gy + 1) * ncols + (gx + 1)) * 4 + slot + 1
    darkness = np.where(lymph, 1.45, 0.95) * (0.9 + 0.2 * rnd(12))
    return {
        "id": ids[keep], "cx": cx[keep], "cy": cy[keep], "ra": ra[keep], "rb": (ra * ratio)[keep],
        "angle": angle[keep], "harmonics": harmonics[keep], "tumor": np.zeros(int(keep.sum()), bool),
        "vesicular": np.zeros(int(keep.sum()), bool), "darkness": darkness[keep],
        "kind": np.where(lymph, _LYMPH, _FIBRO)[keep],
    }  # fmt: skip


def nuclei_in_box(spec: SyntheticSpec, box: tuple[float, float, float, float], margin: float = 0.0) -> Nuclei:
    """Every nucleus whose centre lies in the level-0 box (x0, y0, x1, y1) grown by `margin` pixels."""
    x0, y0, x1, y1 = box[0] - margin, box[1] - margin, box[2] + margin, box[3] + margin
    grid = gland_grid(spec, (x0, y0, x1, y1), lambda x, y: _structure_fields(spec, x, y))
    glands = gland_nuclei(spec, grid)
    inside = (glands["cx"] >= x0) & (glands["cx"] < x1) & (glands["cy"] >= y0) & (glands["cy"] < y1)
    inside &= field_values(spec, glands["cx"], glands["cy"])[0] > 0
    glands = {k: v[inside] for k, v in glands.items()}
    glands["id"] = glands["id"] + _GLAND_ID_OFFSET
    glands["kind"] = np.where(glands["tumor"], _TUMOR_NUC, _EPI)
    stroma = _stroma_nuclei(spec, x0, y0, x1, y1, grid)
    parts = [glands, stroma]
    joined = {k: np.concatenate([p[k] for p in parts]) for k in stroma}
    return Nuclei(
        ids=joined["id"].astype(np.int32), cx=joined["cx"], cy=joined["cy"], ra=joined["ra"], rb=joined["rb"],
        angle=joined["angle"], harmonics=joined["harmonics"].reshape(-1, 4), tumor=joined["tumor"].astype(bool),
        darkness=joined["darkness"], kind=joined["kind"].astype(np.int8), vesicular=joined["vesicular"],
    )  # fmt: skip


def _coarse_fields(spec: SyntheticSpec, x0: float, y0: float, w: int, h: int, d: float):
    """Tissue / tumor / peritumoral / lymphoid-aggregate weights and the stain-strength factor (uneven staining)
    at each output pixel, evaluated on a coarse grid and interpolated."""
    step = max(1.0, 16.0 / d)
    nx, ny = math.ceil(w / step) + 2, math.ceil(h / step) + 2
    gx = x0 + (np.arange(nx) * step + 0.5) * d
    gy = y0 + (np.arange(ny) * step + 0.5) * d
    xx, yy = np.meshgrid(gx, gy)
    tissue, tumor, raw = _fields(spec, xx, yy)
    # Threshold after interpolating, with a one-pixel soft edge: smooth outlines at every level.
    edge = 0.002 * d
    tissue = np.clip(_upsample(tissue, w, h, step) / edge + 0.5, 0.0, 1.0)
    tumor = np.clip(_upsample(tumor, w, h, step) / edge + 0.5, 0.0, 1.0)
    peri = _peritumoral(_upsample(raw, w, h, step)) if spec.tumor else np.zeros((h, w))
    if spec.lookalikes <= 0:
        return tissue, tumor, peri, np.zeros((h, w)), np.ones((h, w))
    aggregate = lookalike_values(spec, xx, yy)[1]
    aggregate = np.clip(_upsample(aggregate, w, h, step) / 0.03, 0.0, 1.0)
    dark = value_noise(xx, yy, _scale_um(spec, 600.0), spec.seed, _DARK)
    dark = 1.0 + 0.4 * spec.lookalikes * (2.0 * _upsample(dark, w, h, step) - 1.0)
    return tissue, tumor, peri, aggregate, dark


def _upsample(grid: np.ndarray, w: int, h: int, step: float) -> np.ndarray:
    """Bilinear interpolation of samples every `step` output pixels to (h, w) pixels (linear in each axis,
    by gathering: a matrix product here would spin up BLAS threads for a tiny job)."""

    def axis(n_out: int, n_in: int):
        pos = np.arange(n_out) / step
        i0 = np.clip(np.floor(pos).astype(int), 0, n_in - 2)
        return i0, (pos - i0)

    ry, ty = axis(h, grid.shape[0])
    rx, tx = axis(w, grid.shape[1])
    rows = grid[ry] * (1 - ty)[:, None] + grid[ry + 1] * ty[:, None]
    return rows[:, rx] * (1 - tx)[None, :] + rows[:, rx + 1] * tx[None, :]


def _draw_nuclei(spec: SyntheticSpec, nuclei: Nuclei, x0, y0, w, h, d, texture):
    """Hematoxylin and eosin (nucleoli) densities of the nuclei, and instance ids (level-0 ids) per pixel."""
    from wsi.synthetic.cells import NEOPLASTIC, _Canvas, _draw_nucleus

    canvas = _Canvas(np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w)), np.zeros((h, w), np.int32),
                     np.zeros((h, w), np.uint8), texture)  # fmt: skip
    a, b = nuclei.ra / d, nuclei.rb / d
    # Downsampled levels and thumbnails: only nuclei of a few pixels get drawn one by one.
    big = np.maximum(a, b) >= (0.8 if d <= 1 else 2.5)
    # Nuclei under a pixel or so: their stain averaged into the pixel that holds the centre.
    small = np.nonzero(~big)[0]
    if len(small):
        col = np.floor((nuclei.cx[small] - x0) / d).astype(int)
        row = np.floor((nuclei.cy[small] - y0) / d).astype(int)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        area = np.pi * a[small] * b[small]
        np.add.at(canvas.hema, (row[ok], col[ok]), (0.8 * nuclei.darkness[small] * area)[ok])
    um = spec.px_per_um / d
    drawn = [0]
    kinds = nuclei.kind if nuclei.kind is not None else np.where(nuclei.tumor, _TUMOR_NUC, _FIBRO)
    vesicular = nuclei.vesicular if nuclei.vesicular is not None else np.zeros(len(nuclei), bool)
    for i in np.nonzero(big)[0]:
        kind = int(kinds[i])
        if kind == _TUMOR_NUC:
            style = "vesicular" if vesicular[i] else "hyper"
        else:
            style = "hyper" if kind == _LYMPH else "normal"
        # The truth outline's harmonics are in the slide frame; the renderer's in the nucleus' frame.
        hm = nuclei.harmonics[i]
        angle = float(nuclei.angle[i])
        harmonics = [(hm[0], hm[1] + 2 * angle), (hm[2], hm[3] + 3 * angle)]
        rng = np.random.default_rng([spec.seed, int(nuclei.ids[i])])
        if _draw_nucleus(canvas, rng, (nuclei.cx[i] - x0) / d, (nuclei.cy[i] - y0) / d, a[i], b[i], angle, style,
                         NEOPLASTIC, um, density=float(nuclei.darkness[i]), harmonics=harmonics):  # fmt: skip
            drawn.append(int(nuclei.ids[i]))
    labels = np.asarray(drawn, dtype=np.int32)[canvas.instances]
    return canvas.hema, canvas.eosin, labels


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
    tissue, tumor, peri, aggregate, dark = _coarse_fields(spec, x0, y0, w, h, d)
    box = (x0, y0, x0 + w * d, y0 + h * d)
    margin = 8 * spec.px_per_um
    nuclei = nuclei_in_box(spec, box, margin=margin)

    xs = x0 + (np.arange(w) + 0.5) * d
    ys = y0 + (np.arange(h) + 0.5) * d
    detail = min(1.0, 2.0 / d)
    if detail > 0.1:
        texture = (
            value_noise(xs[None, :], ys[:, None], 0.5 * spec.px_per_um, spec.seed, _CHROMATIN) - 0.5
        ) * 3.5
    else:
        texture = np.zeros((h, w))
    hema_nuc, eosin_nuc, labels = _draw_nuclei(spec, nuclei, x0, y0, w, h, d, texture)

    # Glands and nests: epithelium (cytoplasm) and lumen, antialiased over one output pixel.
    grid = gland_grid(spec, box, lambda x, y: _structure_fields(spec, x, y))
    dist, radius, lumen, kind = grid.lookup(xs[None, :] + 0 * ys[:, None], ys[:, None] + 0 * xs[None, :])
    epi = np.where(radius > 0, np.clip((radius - dist) / d + 0.5, 0.0, 1.0), 0.0)
    lum = np.where(lumen > 0, np.clip((lumen - dist) / d + 0.5, 0.0, 1.0), 0.0)
    # Fibre texture: anisotropic noise (fibres along x) that averages out when zoomed out.
    if detail > 0.1:
        fibre = value_noise(xs[None, :], ys[:, None] * 4.0, 30 * spec.px_per_um, spec.seed, _FIBRE)
        wisp = value_noise(xs[None, :] * 2.0, ys[:, None], 12 * spec.px_per_um, spec.seed, _WISP)
    else:
        fibre = wisp = np.full((h, w), 0.5)
    fibre = 0.5 + (fibre - 0.5) * detail
    wisp = 0.5 + (wisp - 0.5) * detail
    h_vec, e_vec, strength = spec.stains()
    strength = strength * dark
    nest = kind != GLAND  # tumour nests and crowded glands: scant, pale cytoplasm
    mucin = spec.mucin * peri
    stroma = tissue * (1.0 - epi)
    cell = tissue * epi * (1.0 - lum)
    eosin = (
        stroma * (0.30 + 0.35 * fibre) * (1.0 - 0.75 * mucin) * (1.0 - 0.6 * aggregate)
        + cell * np.where(nest, 0.20, 0.24)
        + tissue * lum * 0.03
        + 0.6 * eosin_nuc
    ) * strength
    hema = (
        stroma * (0.05 + 0.22 * mucin * wisp) + cell * np.where(nest, 0.08, 0.05) + 0.85 * hema_nuc
    ) * strength
    # Pixel-level speckle keyed by position so every tile and level is reproducible.
    rng = np.random.default_rng([spec.seed, int(x0), int(y0), int(d * 16)])
    speckle = rng.random((h, w), dtype=np.float32)
    hema = hema.astype(np.float32)
    eosin = eosin.astype(np.float32)
    od = hema[..., None] * h_vec.astype(np.float32) + eosin[..., None] * e_vec.astype(np.float32) + 0.035
    rgb = 255.0 * np.exp(-od) + (speckle[..., None] - 0.5) * 6.0
    del (
        tumor
    )  # the tumor field shows through the nests; kept in the signature of _coarse_fields for the masks
    return np.clip(rgb, 0, 255).astype(np.uint8), (labels if with_labels else None)

"""Glands and tumour nests as pure functions of level-0 coordinates: a jittered lattice of round structures.

One candidate structure per lattice cell (90 um). In benign tissue about half the candidates are glands: a
lumen lined by one orderly ring of small, uniform, basal nuclei. Inside the tumour region every candidate is a
nest whose look follows the grade: nests grow and merge into sheets, lumina shrink and vanish (grade 5 is solid),
nuclei get larger, more crowded and stratified, more pleomorphic and more often vesicular with nucleoli.
Inside benign crowded zones (a look-alike of tumour, `content.lookalike_values`) every candidate is a crowded,
basal-cell-rich gland: a small lumen inside several tight rows of small, uniform, dark nuclei that keep their
polarity (no enlargement, no pleomorphism, no nucleoli): as dark and as crowded as a nest, benign by morphology.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from wsi.synthetic.noise import hash_uniform

__all__ = ["CROWDED", "GLAND", "NEST", "GlandGrid", "gland_grid", "gland_nuclei", "grade_traits"]

_GLAND = 11  # salt of the gland lattice
GLAND_UM = 90.0  # lattice cell side, microns
MAX_RADIUS_UM = 52.0  # no structure reaches further than this from its centre (keeps the 3 x 3 lookup exact)
# Structure kinds: benign gland, tumour nest, crowded benign gland (a look-alike of tumour).
GLAND, NEST, CROWDED = 0, 1, 2
CROWDED_NUCLEUS_UM = 3.0  # semi-axis of the crowded glands' basal nuclei: smaller than any grade's (3.7+)


def grade_traits(grade: int) -> dict[str, float]:
    """What a tumour of `grade` (1-5) looks like: nest radius scale, lumen fraction of the radius, nuclear
    semi-axis (um), pleomorphism (sd of log size), nuclear spacing relative to the diameter (crowding),
    position jitter, fraction of vesicular nuclei with nucleoli, outline irregularity."""
    g = float(grade) - 1.0
    return {
        "radius_scale": 1.0 + 0.09 * g,
        "lumen": max(0.0, 0.55 - 0.14 * g),
        "nucleus_um": 3.7 + 0.55 * g,
        "pleomorphism": 0.07 + 0.06 * g,
        "spacing": 1.30 - 0.08 * g,
        "jitter": 0.08 + 0.07 * g,
        "vesicular": 0.15 + 0.17 * g,
        "irregular": 0.05 + 0.04 * g,
    }


@dataclass(frozen=True)
class GlandGrid:
    """Structures of the lattice cells [ix0, ix0 + nx) x [iy0, iy0 + ny): (ny, nx) arrays in level-0 pixels."""

    ix0: int
    iy0: int
    cell: float
    cx: np.ndarray
    cy: np.ndarray
    radius: np.ndarray  # 0 where the cell holds no structure
    lumen: np.ndarray
    tumor: np.ndarray
    key: np.ndarray  # a global int64 key per cell
    crowded: np.ndarray | None = None  # benign crowded glands (look-alikes); None: none

    def kinds(self) -> np.ndarray:
        """(ny, nx) int8 structure kind per cell: GLAND, NEST or CROWDED (GLAND where no structure)."""
        kind = np.where(self.tumor, NEST, GLAND)
        if self.crowded is not None:
            kind = np.where(self.crowded & ~self.tumor, CROWDED, kind)
        return kind.astype(np.int8)

    def lookup(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """At level-0 points: distance to the nearest covering structure's centre, its radius, lumen radius and
        kind (GLAND, NEST or CROWDED; radius 0 and GLAND where no structure covers the point)."""
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape)
        x, y = np.broadcast_to(x, shape).ravel(), np.broadcast_to(y, shape).ravel()
        ny, nx = self.cx.shape
        ix = np.floor(x / self.cell).astype(np.int64) - self.ix0
        iy = np.floor(y / self.cell).astype(np.int64) - self.iy0
        offsets = np.array([-1, 0, 1])
        jx = np.clip(ix[None, :] + np.repeat(offsets, 3)[:, None], 0, nx - 1)
        jy = np.clip(iy[None, :] + np.tile(offsets, 3)[:, None], 0, ny - 1)
        flat = jy * nx + jx  # (9, N): the 3 x 3 cells around each point
        # Squared distance relative to the radius, in float32 about the grid origin (absent cells: far away).
        ox, oy = self.ix0 * self.cell, self.iy0 * self.cell
        px, py = (x - ox).astype(np.float32), (y - oy).astype(np.float32)
        cx, cy = (self.cx - ox).astype(np.float32).ravel(), (self.cy - oy).astype(np.float32).ravel()
        inv = np.where(self.radius > 0, 1.0 / np.maximum(self.radius, 1e-9), 1e6).astype(np.float32).ravel()
        rel = ((px[None, :] - cx[flat]) ** 2 + (py[None, :] - cy[flat]) ** 2) * inv[flat] ** 2
        best = np.argmin(rel, axis=0)[None, :]
        pick = np.take_along_axis(flat, best, 0)[0]
        covered = np.take_along_axis(rel, best, 0)[0] < 1.0
        dist = np.hypot(px - cx[pick], py - cy[pick]).astype(np.float64)
        out = (
            dist,
            np.where(covered, self.radius.ravel()[pick], 0.0),
            np.where(covered, self.lumen.ravel()[pick], 0.0),
            np.where(covered, self.kinds().ravel()[pick], GLAND).astype(np.int8),
        )
        return tuple(v.reshape(shape) for v in out)


def gland_grid(spec, box: tuple[float, float, float, float], fields) -> GlandGrid:
    """The structures of every lattice cell that can reach the level-0 box (x0, y0, x1, y1).

    `fields(x, y)` gives the (tissue, tumor, crowded) signed fields at level-0 points (positive inside; crowded:
    the benign crowded zones of `content.lookalike_values`).
    """
    cell = GLAND_UM * spec.px_per_um
    reach = MAX_RADIUS_UM * spec.px_per_um
    ix0 = math.floor((box[0] - reach) / cell) - 1
    iy0 = math.floor((box[1] - reach) / cell) - 1
    ix1 = math.floor((box[2] + reach) / cell) + 2
    iy1 = math.floor((box[3] + reach) / cell) + 2
    gx, gy = np.meshgrid(np.arange(ix0, ix1), np.arange(iy0, iy1))

    def rnd(k: int) -> np.ndarray:
        return hash_uniform(gx * 8 + k, gy, spec.seed, _GLAND)

    cx = (gx + 0.2 + 0.6 * rnd(0)) * cell
    cy = (gy + 0.2 + 0.6 * rnd(1)) * cell
    tissue, tumor_field, crowded_field = fields(cx, cy)
    tumor = tumor_field > 0
    crowded = (crowded_field > 0) & ~tumor
    traits = grade_traits(spec.grade)
    um = spec.px_per_um
    benign_r = (21.0 + 9.0 * rnd(2)) * um
    tumor_r = np.minimum((33.0 + 10.0 * rnd(2)) * traits["radius_scale"], MAX_RADIUS_UM) * um
    crowded_r = (32.0 + 10.0 * rnd(2)) * um
    present = (tissue > 0) & (tumor | crowded | (rnd(3) < 0.5))
    radius = np.where(present, np.where(tumor, tumor_r, np.where(crowded, crowded_r, benign_r)), 0.0)
    lumen_frac = np.clip(traits["lumen"] * (0.8 + 0.4 * rnd(4)), 0.0, 0.7)
    lumen = np.where(
        tumor,
        radius * lumen_frac,
        np.where(crowded, radius * (0.2 + 0.1 * rnd(4)), np.maximum(radius - 9.0 * um, 0.0)),
    )
    ncols = math.ceil(spec.width / cell) + 4
    key = (gy + 2) * ncols + (gx + 2)
    return GlandGrid(
        ix0, iy0, cell, cx, cy, radius, lumen, tumor & present, key.astype(np.int64), crowded & present
    )


def gland_nuclei(spec, grid: GlandGrid) -> dict[str, np.ndarray]:
    """Epithelial nuclei of every structure in `grid`, as parameter arrays (level-0 pixels).

    Benign glands: one ring of small oval nuclei near the basement membrane, long axis radial. Tumour nests:
    concentric rows from the lumen to the edge, spaced by the grade's crowding, jittered and pleomorphic.
    Crowded benign glands: tight concentric rows of small, uniform, dark nuclei, long axis radial.
    Keys: id, cx, cy, ra, rb, angle, harmonics (N, 4), tumor, vesicular, darkness.
    """
    um = spec.px_per_um
    traits = grade_traits(spec.grade)
    sel = grid.radius.ravel() > 0
    cx, cy = grid.cx.ravel()[sel], grid.cy.ravel()[sel]
    radius, lumen = grid.radius.ravel()[sel], grid.lumen.ravel()[sel]
    tumor, key = grid.tumor.ravel()[sel], grid.key.ravel()[sel]
    crowded = grid.kinds().ravel()[sel] == CROWDED
    rows = tumor | crowded  # structures drawn as concentric rows of nuclei
    n_rings, k_max = 8, 64
    ring = np.arange(n_rings)[None, :, None]
    k = np.arange(k_max)[None, None, :]
    # Nominal nuclear semi-axis and row spacing per structure.
    size = (
        np.where(tumor, traits["nucleus_um"], np.where(crowded, CROWDED_NUCLEUS_UM, 3.1))[:, None, None] * um
    )
    spacing = (
        np.where(
            tumor,
            2 * traits["nucleus_um"] * traits["spacing"],
            np.where(crowded, 2.0 * CROWDED_NUCLEUS_UM, 7.5),
        )[:, None, None]
        * um
    )
    r_out, r_in = radius[:, None, None], lumen[:, None, None]
    rows3 = rows[:, None, None]
    ring_r = np.where(rows3, r_in + spacing * (0.5 + ring), r_out - 4.0 * um + 0 * ring)
    solid_centre = rows3 & (r_in < 0.5 * spacing) & (ring == 0)
    ring_r = np.where(solid_centre, 0.0, np.where(rows3 & (r_in < 0.5 * spacing), ring * spacing, ring_r))
    valid_ring = np.where(rows3, ring_r <= r_out - 0.35 * spacing, ring == 0)
    n = np.where(ring_r > 0, np.floor(2 * np.pi * ring_r / spacing), 1).astype(int)
    valid = valid_ring & (k < np.minimum(n, k_max))
    gi, ri, ki = np.nonzero(valid)
    nid = key[gi] * (n_rings * k_max) + ri * k_max + ki

    def rnd(salt: int) -> np.ndarray:
        return hash_uniform(nid, np.full_like(nid, salt), spec.seed, _GLAND + 1)

    t, c = tumor[gi], crowded[gi]
    jitter = np.where(t, traits["jitter"], np.where(c, 0.06, 0.04))
    phase = 2 * np.pi * hash_uniform(key[gi] * n_rings + ri, np.zeros_like(ri), spec.seed, _GLAND + 2)
    theta = 2 * np.pi * (ki + 0.5 + jitter * (rnd(0) - 0.5) * 2) / n[gi, ri, 0] + phase
    rr = ring_r[gi, ri, 0] + spacing[gi, 0, 0] * jitter * (rnd(2) - 0.5) * 2
    x = cx[gi] + rr * np.cos(theta)
    y = cy[gi] + rr * np.sin(theta)
    log_size = (
        np.where(t, traits["pleomorphism"], 0.05)
        * np.sqrt(-2 * np.log(1 - rnd(3) * 0.999))
        * np.cos(2 * np.pi * rnd(4))
    )
    ra = size[gi, 0, 0] * np.exp(log_size)
    ratio = np.where(t, 0.62 + 0.33 * rnd(5), 0.55 + 0.15 * rnd(5))
    # Benign nuclei point at the lumen (columnar cells); tumour nuclei lose that polarity.
    angle = np.where(t, np.pi * rnd(6), theta + 0.15 * (rnd(6) - 0.5))
    irregular = np.where(t, traits["irregular"], 0.03)
    harmonics = np.stack(
        [irregular * rnd(7), 2 * np.pi * rnd(8), irregular * rnd(9), 2 * np.pi * rnd(10)], axis=1
    )
    vesicular = t & (rnd(11) < traits["vesicular"])
    darkness = np.where(t, 1.15 + 0.04 * spec.grade, np.where(c, 1.5, 0.85)) * (0.9 + 0.2 * rnd(12))
    return {
        "id": nid, "cx": x, "cy": y, "ra": ra, "rb": ra * ratio, "angle": angle, "harmonics": harmonics,
        "tumor": t, "vesicular": vesicular, "darkness": darkness,
    }  # fmt: skip

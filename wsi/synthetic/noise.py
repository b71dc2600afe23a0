"""Deterministic, stateless random fields: the same (x, y, seed) always gives the same value, at any zoom.

This is what lets a synthetic slide be rendered tile by tile, level by level, without holding anything in
memory: every tile evaluates the same functions of level-0 coordinates.
"""

from __future__ import annotations

import numpy as np

__all__ = ["hash_uniform", "value_noise"]

_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser: a bijective scramble of uint64."""
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def hash_uniform(ix: np.ndarray, iy: np.ndarray, seed: int, salt: int) -> np.ndarray:
    """Uniform [0, 1) values keyed by integer lattice coordinates, a seed and a salt (one per field)."""
    with np.errstate(over="ignore"):
        key = np.uint64((seed * 0x9E3779B1 + salt * 0x85EBCA77) & 0xFFFFFFFFFFFFFFFF)
        x = np.asarray(ix, dtype=np.int64).astype(np.uint64)
        y = np.asarray(iy, dtype=np.int64).astype(np.uint64)
        z = _mix(_mix(x ^ key) + y * np.uint64(0x632BE59BD9B4E019))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


def value_noise(x: np.ndarray, y: np.ndarray, scale: float, seed: int, salt: int) -> np.ndarray:
    """Smooth noise in [0, 1] with features about `scale` units across, at points (x, y) (broadcastable)."""
    fx, fy = np.asarray(x, dtype=np.float64) / scale, np.asarray(y, dtype=np.float64) / scale
    x0, y0 = np.floor(fx), np.floor(fy)
    tx, ty = fx - x0, fy - y0
    tx, ty = tx * tx * (3 - 2 * tx), ty * ty * (3 - 2 * ty)
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    v00 = hash_uniform(x0, y0, seed, salt)
    v10 = hash_uniform(x0 + 1, y0, seed, salt)
    v01 = hash_uniform(x0, y0 + 1, seed, salt)
    v11 = hash_uniform(x0 + 1, y0 + 1, seed, salt)
    top = v00 + (v10 - v00) * tx
    bottom = v01 + (v11 - v01) * tx
    return top + (bottom - top) * ty

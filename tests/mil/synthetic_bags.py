"""Tiny synthetic bag tasks: a bag's label follows from how many of its tiles come from a shifted distribution."""

from __future__ import annotations

import numpy as np

DIM = 8


def synthetic_bags(task: str, n_bags: int, seed: int = 0, dim: int = DIM, size: int = 16):
    """(bags, y) for `task`: binary (any shifted tile), multiclass (shift along dim 0, dim 1 or none), grade
    (number of shifted tiles, 0-3), mutation (two targets: shift along dim 0 / dim 1, 10% missing), survival
    (times from a hazard rising with the number of shifted tiles, 30% censored)."""
    rng = np.random.default_rng(seed)
    bags, rows = [], []
    for _ in range(n_bags):
        n = int(rng.integers(size // 2, size * 3 // 2))
        x = rng.normal(size=(n, dim)).astype(np.float32)
        count = int(rng.integers(0, 4))
        axis = int(rng.integers(0, 2))
        x[:count, axis] += 5.0
        if task == "mutation":
            other = int(rng.integers(0, 2))
            x[count : count + other, 1 - axis] += 5.0
            row = [float(count > 0 and axis == 0 or other and axis == 1),
                   float(count > 0 and axis == 1 or other and axis == 0)]  # fmt: skip
            row = [np.nan if rng.random() < 0.1 else v for v in row]
        elif task == "binary":
            row = int(count > 0)
        elif task == "multiclass":
            row = ["none", "dim0", "dim1"][0 if count == 0 else 1 + axis]
        elif task == "grade":
            row = count
        elif task == "survival":
            time = rng.exponential(1.0 / (0.1 * np.exp(1.2 * count)))
            censor = rng.exponential(25.0)
            row = [min(time, censor), float(time <= censor)]
        else:
            raise ValueError(task)
        bags.append(x[rng.permutation(n)])
        rows.append(row)
    return bags, np.asarray(rows, dtype=object if task == "multiclass" else np.float64)

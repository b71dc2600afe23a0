"""CoxPH fit time against lifelines on the same data, same run; cox_loss forward + backward on 1M samples.

    python -m benchmarks.survival [--n 100000] [--p 20] [--loss-n 1000000]

Prints the speed-up over lifelines' CoxPHFitter (Efron ties; target >= 8x) and checks both found the same
coefficients.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np
import pandas as pd
import torch

import survival


def synthetic(n: int, p: int, decimals: int | None, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p))
    beta = rng.normal(0, 0.3, p)
    t_event = rng.exponential(1 / np.exp(X @ beta))
    t_cens = rng.exponential(1.0, n)
    time_ = np.minimum(t_event, t_cens)
    if decimals is not None:  # ties, as in follow-up counted in days or weeks
        time_ = np.round(time_, decimals)
    return X, time_, (t_event <= t_cens).astype(int)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=100_000)
    parser.add_argument("--p", type=int, default=20)
    parser.add_argument("--loss-n", type=int, default=1_000_000)
    args = parser.parse_args()
    for decimals in (None, 3):
        compare_fit(args.n, args.p, decimals)
    time_loss(args.loss_n)


def compare_fit(n: int, p: int, decimals: int | None) -> None:
    X, t, e = synthetic(n, p, decimals)
    print(f"-- {n} x {p}, {len(np.unique(t))} distinct times, {int(e.sum())} events")
    start = time.perf_counter()
    ours = survival.CoxPH(ties="efron").fit(X, t, e)
    ours_s = time.perf_counter() - start
    print(f"CoxPH (efron): {ours_s:.2f} s, {ours.n_iter_} Newton steps")
    start = time.perf_counter()
    breslow = survival.CoxPH(ties="breslow").fit(X, t, e)
    print(f"CoxPH (breslow): {time.perf_counter() - start:.2f} s, {breslow.n_iter_} Newton steps")

    from lifelines import CoxPHFitter

    frame = pd.DataFrame(X, columns=[f"x{i}" for i in range(p)]).assign(T=t, E=e)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        ref = CoxPHFitter().fit(frame, "T", "E")
        ref_s = time.perf_counter() - start
    diff = np.max(np.abs(ours.coef_ - ref.params_.to_numpy()))
    print(f"lifelines CoxPHFitter (efron): {ref_s:.2f} s; max |coef difference| {diff:.2e}")
    print(f"speed-up over lifelines: {ref_s / ours_s:.1f}x (target >= 8)")


def time_loss(n: int) -> None:
    g = torch.Generator().manual_seed(0)
    log_risk = torch.randn(n, generator=g, requires_grad=True)
    tt = torch.randint(0, 5000, (n,), generator=g).float()
    ee = (torch.rand(n, generator=g) < 0.3).float()
    for ties in ("efron", "breslow"):
        survival.cox_loss(log_risk[:1000], tt[:1000], ee[:1000], ties=ties).backward()
        start = time.perf_counter()
        loss = survival.cox_loss(log_risk, tt, ee, ties=ties)
        loss.backward()
        elapsed = time.perf_counter() - start
        print(f"cox_loss ({ties}) forward+backward, {n:,} samples: {elapsed * 1000:.0f} ms "
              f"({n / elapsed / 1e6:.1f} M samples/s)")  # fmt: skip


if __name__ == "__main__":
    main()

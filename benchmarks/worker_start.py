"""How long a local dask cluster takes to start, run one task that imports torch in each worker, and close:
workers spawned (dask's default) against workers forked from a fork server (what `slidestream run` uses, so that
the workers ignore the terminal's Ctrl-C). Prints the ratio against a limit measured in the same run.

    python -m benchmarks.worker_start --workers 2 --repeats 2
"""

from __future__ import annotations

import argparse
import logging
import time


def _import_torch(_: int) -> int:
    import torch

    return torch.get_num_threads()


def _one(method: str, workers: int) -> float:
    import dask
    from dask.distributed import Client, LocalCluster

    start = time.perf_counter()
    with dask.config.set({"distributed.worker.multiprocessing-method": method}):
        with LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None,
                          scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
                          silence_logs=logging.ERROR) as cluster, Client(cluster) as client:  # fmt: skip
            client.gather(client.map(_import_torch, range(workers)))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--limit", type=float, default=1.25, help="fork server / spawn time ratio allowed")
    args = parser.parse_args()
    logging.getLogger("distributed").setLevel(logging.ERROR)
    times: dict[str, list[float]] = {"spawn": [], "forkserver": []}
    for _ in range(args.repeats):  # interleaved: a busy machine slows both alike
        for method in times:
            times[method].append(_one(method, args.workers))
    best = {m: min(t) for m, t in times.items()}
    for method, values in times.items():
        print(f"{method:10s} start + torch import + close, {args.workers} workers: best {best[method]:.1f} s "
              f"({', '.join(f'{v:.1f}' for v in values)})")  # fmt: skip
    ratio = best["forkserver"] / best["spawn"]
    print(
        f"fork server / spawn: {ratio:.2f} (limit {args.limit:.2f}) -> {'OK' if ratio <= args.limit else 'SLOWER'}"
    )


if __name__ == "__main__":
    main()

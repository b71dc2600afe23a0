"""A dask cluster shared by the batch tests: starting one and importing torch in its workers costs seconds."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def cluster_address():
    """Address of a local dask cluster of two worker processes, reached as any existing cluster is."""
    from dask.distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      silence_logs=logging.ERROR) as cluster:  # fmt: skip
        yield cluster.scheduler_address

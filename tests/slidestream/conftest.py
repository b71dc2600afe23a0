"""A dask cluster shared by the batch tests: starting one and importing torch in its workers costs seconds."""

from __future__ import annotations

import logging

import pytest


@pytest.fixture(scope="session")
def cluster_address():
    """Address of a local dask cluster of two worker processes, reached as any existing cluster is."""
    from dask.distributed import LocalCluster

    # No dashboard, and its HTTP server on any free port (by default 8787, with a warning when that is taken).
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                      scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
                      silence_logs=logging.ERROR) as cluster:  # fmt: skip
        yield cluster.scheduler_address

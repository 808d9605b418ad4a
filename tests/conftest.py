"""Shared fixtures: synthetic slides written by the tests themselves."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("DASK_DISTRIBUTED__WORKER__DAEMON", "False")


@pytest.fixture(scope="session")
def slide_v3(tmp_path_factory) -> str:
    """A 2048² OME-NGFF 0.5 (zarr v3) synthetic slide, 4 levels, chunks 256²."""
    from zarrdask.datasets import write_synthetic_slide

    path = tmp_path_factory.mktemp("slides") / "slide_v3.zarr"
    return write_synthetic_slide(path, size=2048, chunk=256, levels=4, seed=1, zarr_format=3)


@pytest.fixture(scope="session")
def slide_v2(tmp_path_factory) -> str:
    """A 1024² OME-NGFF 0.4 (zarr v2) synthetic slide, 3 levels, chunks 256²."""
    from zarrdask.datasets import write_synthetic_slide

    path = tmp_path_factory.mktemp("slides") / "slide_v2.zarr"
    return write_synthetic_slide(path, size=1024, chunk=256, levels=3, seed=2, zarr_format=2)


@pytest.fixture(scope="module")
def client():
    """A real dask.distributed cluster of two worker processes, one per test module."""
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as c:
        c.wait_for_workers(2, timeout=60)
        yield c

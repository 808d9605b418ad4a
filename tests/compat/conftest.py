"""Fixtures of the zarrdataset-compatibility tests: small synthetic data
written by the tests themselves (no network)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import zarr


@pytest.fixture(scope="session")
def slide(tmp_path_factory) -> str:
    """1024² RGB OME-NGFF slide (dims c, y, x), chunks 256², levels "0" and "1"."""
    from zarrdask.datasets import write_synthetic_slide

    path = tmp_path_factory.mktemp("compat") / "s.zarr"
    return write_synthetic_slide(path, size=1024, chunk=256, levels=2, zarr_format=3)


@pytest.fixture(scope="session")
def level(slide) -> Callable[[int], np.ndarray]:
    """``level(k)``: level ``k`` of :func:`slide` as numpy (c, y, x)."""
    cache: dict[int, np.ndarray] = {}

    def get(k: int) -> np.ndarray:
        if k not in cache:
            cache[k] = zarr.open_array(f"{slide}/{k}", mode="r")[:]
        return cache[k]

    return get


@pytest.fixture(scope="session")
def volumes(tmp_path_factory) -> list[tuple[str, np.ndarray]]:
    """Three TCZYX uint16 volumes (1, 1, 8, 64, 64), chunks (1, 1, 4, 32, 32),
    with distinct random values: ``[(path, pixels), ...]``."""
    root = tmp_path_factory.mktemp("volumes")
    rng = np.random.default_rng(7)
    out = []
    for k in range(3):
        path = str(root / f"vol{k}.zarr")
        data = rng.integers(0, 60000, size=(1, 1, 8, 64, 64), dtype=np.uint16)
        arr = zarr.create_array(path, shape=data.shape, chunks=(1, 1, 4, 32, 32), dtype="uint16",
                                zarr_format=3)
        arr[:] = data
        out.append((path, data))
    return out


@pytest.fixture(scope="session")
def tczyx(tmp_path_factory, level) -> tuple[str, np.ndarray]:
    """Level 1 of :func:`slide` cropped to 500², stored as a plain TCZYX zarr
    array (1, 3, 1, 500, 500) with chunks of 128²: the layout of the
    IDR images in zarrdataset's examples."""
    path = str(tmp_path_factory.mktemp("tczyx") / "t.zarr")
    data = level(1)[:, :500, :500][None, :, None]
    arr = zarr.create_array(path, shape=data.shape, chunks=(1, 3, 1, 128, 128), dtype="uint8",
                            zarr_format=3)
    arr[:] = data
    return path, data

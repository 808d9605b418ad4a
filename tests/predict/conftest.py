"""Fixtures of the prediction-writer tests: a small slide, its tables, and
the loopback S3 server of ``tests/io/conftest.py`` (loaded from there, not
duplicated)."""

from __future__ import annotations

import importlib.util
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

_spec = importlib.util.spec_from_file_location(
    "_zarrdask_io_conftest", Path(__file__).parents[1] / "io" / "conftest.py")
_io_conftest = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = _io_conftest  # dataclasses look their module up
_spec.loader.exec_module(_io_conftest)
remote_files = _io_conftest.remote_files
s3_server = _io_conftest.s3_server


@pytest.fixture(scope="session")
def slide(tmp_path_factory) -> str:
    """A 300² RGB OME-NGFF 0.5 slide, chunks 128², 2 levels, 0.5 µm pixels,
    its origin moved to (10 µm, 20 µm) by a translation."""
    from zarrdask.datasets import write_synthetic_slide

    path = str(tmp_path_factory.mktemp("predict") / "slide.zarr")
    write_synthetic_slide(path, size=300, chunk=128, levels=2, seed=3)
    group = zarr.open_group(path, mode="r+")
    ome = group.attrs["ome"]
    for ds in ome["multiscales"][0]["datasets"]:
        ds["coordinateTransformations"].append({"type": "translation",
                                                "translation": [0.0, 10.0, 20.0]})
    group.attrs["ome"] = ome
    with warnings.catch_warnings():  # zarr notes consolidated v3 metadata is not in the spec
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(path)
    return path


@pytest.fixture(scope="session")
def slide_pixels(slide) -> np.ndarray:
    """Level 0 of :func:`slide` as numpy (c, y, x)."""
    return zarr.open_array(f"{slide}/0", mode="r")[:]


@pytest.fixture(scope="session")
def overlap_table(slide):
    """Overlapping (stride 48), padded (8) 64² patches with incomplete edge patches."""
    import zarrdask as zds

    return zds.build_table([slide], patch_size=64, stride=48, pad=8,
                           allow_incomplete_patches=True)


@pytest.fixture(scope="session")
def overlap_table_path(overlap_table, tmp_path_factory) -> str:
    return overlap_table.to_parquet(tmp_path_factory.mktemp("tables") / "overlap.parquet")


def tree_bytes(root: str | Path) -> dict[str, bytes]:
    """Every file under ``root`` (relative path -> bytes)."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p.read_bytes()
            for p in sorted(root.rglob("*")) if p.is_file()}

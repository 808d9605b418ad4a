"""Portable tables (issue 10, item 8): local sources stored as absolute paths,
and ``path_map`` to train where the data is mounted elsewhere."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import zarrdask as zd
from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import TableError

LOCAL_KEYS = ("source", "location", "name")


def _local_paths(obj):
    """Every source/location/name string of table metadata."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k in LOCAL_KEYS and isinstance(v, str):
                yield v
            else:
                yield from _local_paths(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from _local_paths(v)


def _write_data(root):
    """An image and its labels at half the resolution, both NGFF with a scale."""
    os.makedirs(root / "data", exist_ok=True)
    write_synthetic_slide(root / "data" / "slide.zarr", size=512, chunk=128, levels=1, seed=3)
    write_synthetic_slide(root / "data" / "labels.zarr", size=256, chunk=128, levels=1, seed=4,
                          pixel_size=1.0)


def _samples(table_or_path, **kwargs):
    loader = torch.utils.data.DataLoader(
        zd.PatchDataset(table_or_path, modalities=["images", "labels"], **kwargs),
        batch_size=None, num_workers=2)
    return [(s["image_id"], s["position"].tolist(), s["images"], s["labels"]) for s in loader]


@pytest.fixture
def built(tmp_path, monkeypatch):
    """A table built with relative paths from the project folder."""
    project = tmp_path / "project"
    _write_data(project)
    monkeypatch.chdir(project)
    table = zd.build_table("data/slide.zarr", labels="data/labels.zarr", patch_size=128,
                           masks="tissue")
    table.to_parquet("table.parquet")
    return project, table


@pytest.mark.timeout(300)
def test_a_table_built_with_relative_paths_trains_from_another_directory(built, tmp_path,
                                                                       monkeypatch):
    project, table = built
    paths = list(_local_paths(zd.read_table(project / "table.parquet").meta))
    assert paths and all(p.startswith(str(project) + "/") for p in paths if not p.startswith("<")), paths
    before = _samples(project / "table.parquet")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    after = _samples(project / "table.parquet")
    assert len(after) == len(table) > 0
    for (i, pos, img, lab), (i2, pos2, img2, lab2) in zip(before, after, strict=True):
        assert (i, pos) == (i2, pos2)
        np.testing.assert_array_equal(img, img2)
        np.testing.assert_array_equal(lab, lab2)


@pytest.mark.timeout(300)
def test_a_moved_data_folder_is_found_through_path_map(built, tmp_path):
    project, table = built
    before = _samples(project / "table.parquet")
    moved = tmp_path / "mnt" / "other-mount"
    moved.parent.mkdir()
    os.rename(project, moved)
    table_path = moved / "table.parquet"
    with pytest.raises(FileNotFoundError):  # the old location is gone: an error, not zeros
        _samples(table_path)
    path_map = {str(project): str(moved)}
    remapped = zd.read_table(table_path, path_map=path_map)
    assert all(p.startswith(str(moved)) for p in _local_paths(remapped.meta)
               if not p.startswith("<"))
    assert remapped.hash == table.hash  # same rows, same table: resume states still fit
    for samples in (_samples(table_path, path_map=path_map), _samples(remapped),
                    _samples(zd.read_table(table_path), path_map=path_map)):
        assert len(samples) == len(before)
        for (i, pos, img, lab), (i2, pos2, img2, lab2) in zip(before, samples, strict=True):
            assert (i, pos) == (i2, pos2)
            np.testing.assert_array_equal(img, img2)
            np.testing.assert_array_equal(lab, lab2)


def test_path_map_roots_match_whole_path_components(built):
    project, _table = built
    with pytest.raises(TableError, match="match no local source"):
        zd.read_table(project / "table.parquet", path_map={str(project)[:-1]: "/somewhere"})
    with pytest.raises(TableError, match="match no local source"):
        zd.read_table(project / "table.parquet", path_map={"/no/such/root": "/x"})
    # the longest root wins
    table = zd.read_table(project / "table.parquet", path_map={
        str(project): "/a", str(project / "data"): "/b"})
    assert table.images[0]["open"]["source"] == "/b/slide.zarr"

"""The coordinate table: schema, metadata, atomic Parquet round trips."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import zarrdask.table as table_mod
from zarrdask.errors import TableError
from zarrdask.table import PatchTable, read_table


def _table(n: int = 10) -> PatchTable:
    frame = pd.DataFrame({
        "image_id": np.zeros(n, dtype=np.int32),
        "y": np.arange(n) * 64,
        "x": np.arange(n) * 32,
        "chunk_id": np.arange(n) // 4,
        "coverage": np.linspace(0.1, 1.0, n),
    })
    meta = {"grid": {"dims": ["y", "x"], "patch": {"y": 64, "x": 64}, "pad": {"y": 0, "x": 0}},
            "images": [{"image_id": 0, "name": "a"}], "hash": "abc"}
    return PatchTable(frame, meta)


def test_roundtrip_keeps_rows_dtypes_and_metadata(tmp_path):
    table = _table()
    path = table.to_parquet(tmp_path / "t.parquet")
    back = read_table(path)
    assert back.equals(table)
    assert back.frame.dtypes["image_id"] == np.int32
    assert back.frame.dtypes["coverage"] == np.float32
    assert back.patch_size == {"y": 64, "x": 64} and back.dims == ["y", "x"]
    # any Parquet tool reads it
    assert len(pd.read_parquet(path)) == 10
    import dask.dataframe as dd

    assert int(dd.read_parquet(path)["y"].sum().compute()) == int(table.frame["y"].sum())
    meta = json.loads(pq.read_schema(path).metadata[b"zarrdask"])
    assert meta["hash"] == "abc"


def test_large_tables_become_a_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 4)
    table = _table(10)
    path = table.to_parquet(tmp_path / "big")
    assert os.path.isdir(path) and len(os.listdir(path)) == 3
    back = read_table(path)
    assert back.equals(table)
    assert len(pd.read_parquet(path)) == 10


def test_failed_write_leaves_nothing_that_reads_as_a_table(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(table_mod.pq, "write_table", boom)
    with pytest.raises(OSError):
        _table().to_parquet(target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []


def test_overwrite_replaces_atomically_and_respects_overwrite_false(tmp_path):
    target = tmp_path / "t.parquet"
    _table(10).to_parquet(target)
    _table(3).to_parquet(target)
    assert len(read_table(target)) == 3
    with pytest.raises(TableError, match="overwrite=True"):
        _table(3).to_parquet(target, overwrite=False)


def test_missing_and_foreign_files_are_clear_errors(tmp_path):
    with pytest.raises(TableError, match="build_table"):
        read_table(tmp_path / "nope.parquet")
    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(TableError, match="without zarrdask metadata"):
        read_table(tmp_path / "plain.parquet")


def test_missing_columns_rejected():
    with pytest.raises(TableError, match="columns"):
        PatchTable(pd.DataFrame({"image_id": [0]}), {"grid": {"dims": ["y", "x"]}})

"""The coordinate table: schema, metadata, atomic Parquet round trips."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

import zarrdask.table as table_mod
import zarrdask.table_files as table_files
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
    assert meta["inputs_hash"] == "abc" and meta["hash"] == table.hash != "abc"


def test_large_tables_become_a_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 4)
    table = _table(10)
    path = table.to_parquet(tmp_path / "big")
    assert os.path.isdir(path)
    names = sorted(os.listdir(os.path.join(path, "current")))
    assert [n for n in names if n.startswith("part-")] == [f"part-{i:06d}.parquet" for i in range(3)]
    assert {"_images", "_partitions.parquet", "_manifest.json"} <= set(names)
    back = read_table(path)
    assert back.equals(table)
    # pandas and pyarrow read the folder itself (they skip "_" names);
    # dask.dataframe the part files of its live version
    assert len(pd.read_parquet(path)) == 10
    import dask.dataframe as dd

    assert len(dd.read_parquet(os.path.join(path, "current", "part-*.parquet"))) == 10
    images = pd.read_parquet(os.path.join(path, "current", "_images"))
    assert images["name"].tolist() == ["a"] and images["image_id"].tolist() == [0]


def test_failed_write_leaves_nothing_that_reads_as_a_table(tmp_path, monkeypatch):
    target = tmp_path / "t.parquet"

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(table_files.pq, "write_table", boom)
    with pytest.raises(OSError, match="t.parquet: disk full"):
        _table().to_parquet(target)
    assert not target.exists()
    assert os.listdir(tmp_path) == []
    # the same for a folder table, new or replaced
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 4)
    with pytest.raises(OSError):
        _table(10).to_parquet(tmp_path / "big")
    assert os.listdir(tmp_path) == []
    monkeypatch.undo()
    monkeypatch.setattr(table_mod, "_DATASET_ROWS", 4)
    _table(10).to_parquet(tmp_path / "big")
    monkeypatch.setattr(table_files.pq, "write_table", boom)
    with pytest.raises(OSError):
        _table(9).to_parquet(tmp_path / "big")
    assert len(read_table(tmp_path / "big")) == 10
    assert sorted(n[:3] for n in os.listdir(tmp_path / "big")) == [".v-", "cur"]


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


# -- the hash follows the rows (issue 10, item 5) ------------------------------

def test_a_filtered_table_never_keeps_its_parents_hash(tmp_path):
    table = _table(10)
    keep = table.frame["coverage"] > 0.5
    by_constructor = PatchTable(table.frame[keep], table.meta)
    assert by_constructor.hash != table.hash
    assert by_constructor.meta["inputs_hash"] == table.meta["inputs_hash"]
    by_assignment = _table(10)
    by_assignment.frame = by_assignment.frame[keep]
    assert by_assignment.hash == by_constructor.hash
    # the same rows give the same hash again (a rebuilt table is recognised)
    assert PatchTable(table.frame.copy(), table.meta).hash == table.hash
    # an edit in place is caught by the hash and when the table is written
    in_place = _table(10)
    in_place.frame.loc[0, "y"] = 1
    assert in_place.hash != table.hash
    path = in_place.to_parquet(tmp_path / "t.parquet")
    assert read_table(path).hash not in (table.hash, None)
    assert read_table(path).hash == PatchTable(in_place.frame, table.meta).hash


def test_is_as_built_tells_a_filtered_table_from_the_built_one():
    table = _table(10)
    meta = dict(table.meta, built_rows_hash=table_mod.rows_digest(table.frame))
    built = PatchTable(table.frame, meta)
    assert built.is_as_built
    assert not PatchTable(built.frame.iloc[:5], built.meta).is_as_built
    assert not table.is_as_built  # no record of what was built


# -- unreadable table files (issue 10, item 11) --------------------------------

def _truncated(tmp_path):
    path = _table(50).to_parquet(tmp_path / "good.parquet")
    data = open(path, "rb").read()
    bad = tmp_path / "truncated.parquet"
    bad.write_bytes(data[: len(data) // 2])
    return bad


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "csv", "flipped-footer"])
def test_an_unreadable_table_file_is_a_table_error_naming_it(tmp_path, kind):
    if kind == "truncated":
        bad = _truncated(tmp_path)
    else:
        bad = tmp_path / f"{kind}.parquet"
        if kind == "garbage":
            bad.write_bytes(b"PAR1" + bytes(range(256)) * 4)
        elif kind == "empty":
            bad.write_bytes(b"")
        elif kind == "csv":
            bad.write_text("image_id,y,x\n0,0,0\n")
        else:
            data = bytearray(open(_table(50).to_parquet(tmp_path / "g.parquet"), "rb").read())
            data[-12:-8] = b"\xff\xff\xff\x7f"  # footer length far past the file
            bad.write_bytes(bytes(data))
    with pytest.raises(TableError) as info:
        read_table(bad)
    message = str(info.value)
    assert str(bad) in message and "rebuild" in message


def test_a_zarr_folder_given_as_table_is_named_as_such(tmp_path):
    import zarr

    store = tmp_path / "image.zarr"
    zarr.open_array(store, mode="w", shape=(4, 4), dtype="u1")
    with pytest.raises(TableError, match=r"image\.zarr is a zarr store, not a coordinate table"):
        read_table(store)
    # and it is never overwritten by a table
    with pytest.raises(TableError, match="zarr store"):
        _table().to_parquet(store)
    assert (store / "zarr.json").exists()


def test_metadata_that_is_not_json_is_a_table_error(tmp_path):
    import pyarrow as pa

    bad = pa.Table.from_pandas(_table().frame).replace_schema_metadata({b"zarrdask": b"{nope"})
    pq.write_table(bad, tmp_path / "bad.parquet")
    with pytest.raises(TableError, match=r"bad\.parquet has unreadable zarrdask metadata"):
        read_table(tmp_path / "bad.parquet")


# -- unwritable targets (issue 10, item 14) ------------------------------------

def test_an_unwritable_target_is_named_not_its_temporary_file():
    target = "/proc/zarrdask-table.parquet"  # /proc refuses new files, also for root
    with pytest.raises(table_mod.TableWriteError) as info:
        _table().to_parquet(target)
    message = str(info.value)
    assert target in message and ".tmp-" not in message
    assert isinstance(info.value, OSError) and isinstance(info.value, TableError)

"""build_table(cache=...): never another table than the one asked for
(issue 10, items 5, 11 and 14)."""

from __future__ import annotations

import os

import pytest
import zarr

import zarrdask as zd
from zarrdask.errors import TableError
from zarrdask.grid.build import GridWarning, build_table
from zarrdask.table import PatchTable, TableWriteError


def test_a_filtered_table_written_to_the_cache_path_is_not_returned(tmp_path, slide_v2):
    cache = tmp_path / "grid.parquet"
    full = build_table(slide_v2, patch_size=64, cache=cache)
    keep = full.frame["x"] < 512
    filtered = PatchTable(full.frame[keep], full.meta)
    assert 0 < len(filtered) < len(full)
    filtered.to_parquet(cache)
    with pytest.warns(GridWarning, match="filtered or edited"):
        again = build_table(slide_v2, patch_size=64, cache=cache)
    assert len(again) == len(full) and again.equals(full)
    assert zd.read_table(cache).equals(full)
    # a table filtered by assigning its frame is caught the same way
    assigned = zd.read_table(cache)
    assigned.frame = assigned.frame.iloc[::2]
    assigned.to_parquet(cache)
    with pytest.warns(GridWarning, match="filtered or edited"):
        assert build_table(slide_v2, patch_size=64, cache=cache).equals(full)


def test_the_cached_table_is_returned_without_rebuilding(tmp_path, slide_v2):
    cache = tmp_path / "grid.parquet"
    first = build_table(slide_v2, patch_size=64, cache=cache)
    stamp = os.stat(cache).st_mtime_ns
    again = build_table(slide_v2, patch_size=64, cache=cache)
    assert again.equals(first) and again.is_as_built
    assert os.stat(cache).st_mtime_ns == stamp


@pytest.mark.parametrize("content", [b"", b"not parquet at all", b"PAR1" + b"\0" * 64 + b"PAR1"])
def test_a_corrupt_cache_file_is_rebuilt_with_a_warning(tmp_path, slide_v2, content):
    cache = tmp_path / "grid.parquet"
    expected = build_table(slide_v2, patch_size=128)
    cache.write_bytes(content)
    with pytest.warns(GridWarning, match=r"grid\.parquet could not be read; rebuilding it"):
        table = build_table(slide_v2, patch_size=128, cache=cache)
    assert table.equals(expected)
    assert zd.read_table(cache).equals(expected)


def test_a_truncated_cache_file_is_rebuilt(tmp_path, slide_v2):
    cache = tmp_path / "grid.parquet"
    expected = build_table(slide_v2, patch_size=128, cache=cache)
    data = cache.read_bytes()
    cache.write_bytes(data[: len(data) - 100])
    with pytest.warns(GridWarning, match="rebuilding"):
        assert build_table(slide_v2, patch_size=128, cache=cache).equals(expected)


def test_a_zarr_folder_as_cache_is_an_error_and_left_alone(tmp_path, slide_v2):
    store = tmp_path / "labels.zarr"
    zarr.open_array(store, mode="w", shape=(8, 8), dtype="u1")
    with pytest.raises(TableError, match=r"labels\.zarr is a zarr store, not a coordinate table"):
        build_table(slide_v2, patch_size=128, cache=store)
    assert (store / "zarr.json").exists()


def test_an_unwritable_cache_names_the_target_not_the_temporary_file(slide_v2):
    target = "/proc/zarrdask-cache.parquet"  # /proc takes no new files, also for root
    with pytest.raises(TableWriteError) as info:
        build_table(slide_v2, patch_size=128, cache=target)
    message = str(info.value)
    assert f"to {target}:" in message and ".tmp-" not in message
    assert isinstance(info.value, OSError)

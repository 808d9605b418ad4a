"""Cohort-scale table layout (issue 13, item 1): an images side table, part
files of whole images and a small manifest; no size grows with the images."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from zarrdask.errors import TableError
from zarrdask.table import PatchTable, read_table


def _entry(i: int) -> dict:
    return {"image_id": i, "name": f"/data/cohort/slide-{i:06d}.zarr", "dims": ["y", "x"],
            "shape": {"y": 512, "x": 512}, "level": 0, "mpp": 0.5}


def _cohort(n_images: int, rows_per_image: int = 2) -> PatchTable:
    ids = np.repeat(np.arange(n_images, dtype=np.int32), rows_per_image)
    k = np.tile(np.arange(rows_per_image), n_images)
    frame = pd.DataFrame({"image_id": ids, "y": k * 256, "x": k * 0, "chunk_id": k * 2,
                          "coverage": np.ones(len(ids), dtype=np.float32)})
    entries = [_entry(i) for i in range(n_images)]
    labels = [{"weak": i % 3} for i in range(n_images)]
    meta = {"grid": {"dims": ["y", "x"], "patch": {"y": 256, "x": 256}}, "images": entries,
            "modalities": {"images": entries, "labels": labels, "masks": [None] * n_images},
            "skipped": [{"index": 7, "source": "/data/cohort/broken.zarr", "error": "no array"}],
            "inputs_hash": f"cohort-{n_images}"}
    return PatchTable(frame, meta)


def _sizes(path: str) -> dict[str, int]:
    version = os.path.join(path, "current")
    parts = sorted(n for n in os.listdir(version) if n.startswith("part-"))
    return {
        "manifest": os.path.getsize(os.path.join(version, "_manifest.json")),
        "part_footer": pq.ParquetFile(os.path.join(version, parts[0])).metadata.serialized_size,
        "images_footer": pq.ParquetFile(os.path.join(version, "_images", "images-000000.parquet")
                                        ).metadata.serialized_size,
    }


def test_seventy_thousand_images_write_and_read_back_with_sizes_that_do_not_grow(tmp_path):
    small, large = _cohort(1_001), _cohort(70_000)
    small_path = small.to_parquet(tmp_path / "small.parquet")
    large_path = large.to_parquet(tmp_path / "large.parquet")
    back = read_table(large_path)
    assert back.equals(large) and back.hash == large.hash
    assert back.images == large.images and len(back.images) == 70_000
    assert back.meta["modalities"]["labels"][69_999] == {"weak": 69_999 % 3}
    assert back.meta["skipped"][0]["source"] == "/data/cohort/broken.zarr"
    s, big = _sizes(small_path), _sizes(large_path)
    # numbers in the manifest get a few digits longer; nothing per image
    assert big["manifest"] <= s["manifest"] + 64, (s, big)
    assert big["part_footer"] <= s["part_footer"] + 64, (s, big)
    assert big["images_footer"] <= s["images_footer"] + 64, (s, big)
    assert big["manifest"] < 4096
    # any Parquet tool reads both tables as they are
    assert len(pd.read_parquet(large_path)) == 140_000
    images = pd.read_parquet(os.path.join(large_path, "current", "_images"))
    assert len(images) == 70_000 and images["mpp"].iloc[5] == 0.5
    assert json.loads(images["entry"].iloc[5]) == large.images[5]
    manifest = json.load(open(os.path.join(large_path, "current", "_manifest.json")))
    assert manifest["format_version"] == 2 and manifest["rows"] == 140_000
    assert manifest["images"] == 70_000 and manifest["hash"] == large.hash


def test_small_tables_stay_single_files_with_their_metadata_in_the_footer(tmp_path):
    table = _cohort(10)
    path = table.to_parquet(tmp_path / "t.parquet")
    assert os.path.isfile(path)
    assert b"zarrdask" in pq.read_schema(path).metadata
    assert read_table(path).equals(table)
    # a path that is a folder table keeps that layout, also for a small table
    folder = _cohort(1_500).to_parquet(tmp_path / "f.parquet")
    table.to_parquet(folder)
    assert os.path.isdir(folder) and read_table(folder).equals(table)


def test_part_files_hold_whole_images(tmp_path, monkeypatch):
    import zarrdask.table as table_mod

    monkeypatch.setattr(table_mod, "_PART_ROWS", 5)
    table = _cohort(1_100, rows_per_image=3)
    path = table.to_parquet(tmp_path / "t.parquet")
    parts = pd.read_parquet(os.path.join(path, "current", "_partitions.parquet"))
    assert parts["rows"].sum() == len(table) and (parts["rows"] == 3).all()
    assert (parts["image_min"] == parts["image_max"]).all()
    assert read_table(path).equals(table)


def test_a_table_of_a_newer_format_asks_for_an_upgrade(tmp_path):
    path = _cohort(1_001).to_parquet(tmp_path / "t.parquet")
    manifest_path = os.path.join(path, "current", "_manifest.json")
    manifest = json.load(open(manifest_path))
    manifest["format_version"] = 99
    json.dump(manifest, open(manifest_path, "w"))
    with pytest.raises(TableError, match=r"version 99.*pip install -U zarrdask"):
        read_table(path)

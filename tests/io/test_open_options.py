"""Public options of the readers are checked: a wrong type or value is a
typed error naming the source, the option and what to pass, never a
traceback from deep in dask or zarr, never silently reinterpreted."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import zarrdask as zd
from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import DataGroupError, OptionError, UnsupportedFormatError, ZarrdaskError


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> str:
    """A 2-level OME-NGFF slide, 256² at level 0, chunks 64²."""
    root = tmp_path_factory.mktemp("options")
    return write_synthetic_slide(root / "slide.zarr", size=256, chunk=64, levels=2, seed=4)


# ------------------------------------------------------------- storage_options

@pytest.mark.parametrize("source", ["local", "s3://bucket/slide.zarr", "http://127.0.0.1:9/a.tif"])
@pytest.mark.parametrize("options", ["anon", '{"anon": true}', [("anon", True)], 1])
def test_storage_options_that_are_not_a_mapping(slide: str, source: str, options):
    source = slide if source == "local" else source
    for opener in (zd.open_image, zd.open_pyramid):
        with pytest.raises(OptionError) as info:
            opener(source, storage_options=options)
        message = str(info.value)
        assert "storage_options" in message and source in message
        assert "must be a dict" in message
        assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


def test_storage_options_string_suggests_the_dict(slide: str):
    with pytest.raises(OptionError, match=r"storage_options=\{'anon': True\}"):
        zd.open_image("s3://bucket/slide.zarr", storage_options="anon")


# ---------------------------------------------------------------------- chunks

@pytest.mark.parametrize("chunks", ["bad", (1, 2), {"q": 64}, True, (0, 64, 64)])
def test_chunks_dask_cannot_use(slide: str, chunks):
    with pytest.raises(OptionError) as info:
        zd.open_image(slide, chunks=chunks)
    message = str(info.value)
    assert f"chunks={chunks!r}" in message and slide in message
    assert "('c', 'y', 'x')" in message  # the dims, to say what a tuple must hold


def test_chunks_on_in_memory_sources_are_checked_too():
    with pytest.raises(OptionError, match="chunks='bad'"):
        zd.open_image(np.zeros((8, 8), dtype=np.uint8), chunks="bad")
    with pytest.raises(OptionError, match="chunks='bad'"):
        zd.open_image(xr.DataArray(np.zeros((8, 8)), dims=("y", "x")), chunks="bad")


def test_chunks_by_dim_name_keep_the_storage_chunks_elsewhere(slide: str):
    image = zd.open_image(slide, chunks={"y": 128})
    assert image.chunks == ((3,), (128, 128), (64, 64, 64, 64))
    assert image.chunks == zd.open_image(slide, chunks={1: 128}).chunks
    np.testing.assert_array_equal(image.values, zd.open_image(slide).values)


def test_chunks_of_a_dataarray_source_are_applied():
    arr = xr.DataArray(np.arange(64.0).reshape(8, 8), dims=("y", "x"))
    assert zd.open_image(arr, chunks={"y": 4}).chunks == ((4, 4), (8,))


# ----------------------------------------------------------------------- level

@pytest.mark.parametrize("level", [-1, -2])
def test_negative_levels_are_refused_not_counted_from_the_end(slide: str, level: int):
    with pytest.raises(DataGroupError) as info:
        zd.open_image(slide, level=level)
    message = str(info.value)
    assert f"level={level}" in message and slide in message
    assert "pass 0..1" in message and "level=1 for the coarsest" in message


@pytest.mark.parametrize("level", [1.0, 1.5, "1", True, None])
def test_levels_that_are_not_ints(slide: str, level):
    if level is None:  # the default: the source's own level
        assert zd.open_image(slide, level=level).attrs["level"] == 0
        return
    with pytest.raises(OptionError) as info:
        zd.open_image(slide, level=level)
    assert f"level={level!r}" in str(info.value) and "pass an int" in str(info.value)


def test_numpy_integer_levels_are_ints(slide: str):
    assert zd.open_image(slide, level=np.int64(1)).shape == (3, 128, 128)


# ------------------------------------------------------------- damaged metadata

@pytest.mark.parametrize("damage", [b"not json {", b"", b"\xff\xfe\x00garbage"])
def test_root_zarr_json_that_is_not_json_names_the_file(tmp_path: Path, damage: bytes):
    path = write_synthetic_slide(tmp_path / "slide.zarr", size=128, chunk=64, levels=1, seed=1)
    with open(os.path.join(path, "zarr.json"), "wb") as fh:
        fh.write(damage)
    for opener in (zd.open_image, zd.open_pyramid):
        with pytest.raises(UnsupportedFormatError) as info:
            opener(path)
        message = str(info.value)
        assert os.path.join(path, "zarr.json") in message or f"{path}/zarr.json" in message
        assert "not valid JSON" in message


def test_nested_array_metadata_that_is_not_json_names_the_file(tmp_path: Path):
    import zarr

    group = zarr.open_group(tmp_path / "plain.zarr", mode="w", zarr_format=3)
    group.create_array("raw", shape=(8, 8), chunks=(4, 4), dtype="u1")[:] = 1
    with open(tmp_path / "plain.zarr" / "raw" / "zarr.json", "w") as fh:
        fh.write('{"zarr_format": 3, "node_type": ')  # cut short
    with pytest.raises(ZarrdaskError) as info:
        zd.open_image(str(tmp_path / "plain.zarr"), data_group="raw")
    assert "raw/zarr.json" in str(info.value)
    assert isinstance(info.value, UnsupportedFormatError)

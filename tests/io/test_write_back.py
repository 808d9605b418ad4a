"""Opened images, masks and arrays derived from them write with xarray's own
writers (``to_zarr``, ``to_netcdf``); the reopen recipe describes only the
array it was recorded on, never a derived one, and never reaches the disk."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import cloudpickle
import numpy as np
import pytest
import xarray as xr

import zarrdask as zd
from zarrdask.datasets import write_synthetic_slide
from zarrdask.io.recipe import open_facts, recipe_of
from zarrdask.masks import mask_scale_of

WRITERS = ["zarr", "netcdf"]  # netCDF through scipy (netCDF3), installed with the project


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("write_back")
    return write_synthetic_slide(root / "slide.zarr", size=256, chunk=64, levels=3, seed=8)


def _write_and_reopen(arr: xr.DataArray, folder: Path, writer: str) -> xr.DataArray:
    name = arr.name or "data"
    dataset = arr.rename(name).to_dataset()
    if writer == "zarr":
        path = folder / f"{name}.zarr"
        dataset.to_zarr(path, mode="w")
        reopened = xr.open_zarr(path)
    else:
        path = folder / f"{name}.nc"
        if dataset[name].dtype.kind == "u":  # netCDF3 has no unsigned integer type
            dataset[name] = dataset[name].astype(np.int16)
        dataset.to_netcdf(path, engine="scipy")
        reopened = xr.open_dataset(path, engine="scipy")
    return reopened[name].load()


def _assert_plain_attrs(arr: xr.DataArray) -> None:
    """attrs hold only strings and numbers; ``units`` (if any) is the CF unit
    of the values, a string."""
    for key, value in arr.attrs.items():
        assert isinstance(value, str | int | float | np.number), (key, value)
    assert not isinstance(arr.attrs.get("units", ""), dict)


@pytest.mark.parametrize("writer", WRITERS)
def test_opened_image_writes_and_reads_back(slide: str, tmp_path: Path, writer: str):
    image = zd.open_image(slide, level=1, roi="(0,16,32):(-1,64,80)")
    _assert_plain_attrs(image)
    # a ROI cuts the storage chunks at its edges: zarr needs regular chunks
    back = _write_and_reopen(image.chunk({"y": 32, "x": 40}), tmp_path, writer)
    np.testing.assert_array_equal(back.values, image.values)
    assert back.dims == image.dims
    for key in ("source", "reader", "level", "levels"):
        assert back.attrs[key] == image.attrs[key]
    for d in ("y", "x"):  # per-dim geometry travels on the coordinates
        np.testing.assert_allclose(back[d].values, image[d].values)
        assert back[d].attrs["units"] == "micrometer"
        assert back[d].attrs["scale"] == pytest.approx(1.0)  # 0.5 um * 2


@pytest.mark.parametrize("writer", WRITERS)
def test_tissue_mask_writes_and_reads_back(slide: str, tmp_path: Path, writer: str):
    image = zd.open_image(slide)
    mask = zd.tissue_mask(image, mask_scale=1 / 8)
    _assert_plain_attrs(mask)
    assert mask_scale_of(mask) == {"y": 1 / 8, "x": 1 / 8}
    back = _write_and_reopen(mask, tmp_path, writer)
    np.testing.assert_array_equal(back.values.astype(bool), mask.values)
    assert 0 < back.values.mean() < 1  # a real mask, not all one value
    assert {d: back[d].attrs["mask_scale"] for d in ("y", "x")} == {"y": 1 / 8, "x": 1 / 8}


@pytest.mark.parametrize("writer", WRITERS)
def test_prediction_like_derived_array_writes_and_has_no_recipe(slide: str, tmp_path: Path,
                                                                writer: str):
    image = zd.open_image(slide)
    prediction = (image.mean("c") > 200).rename("prediction")
    assert recipe_of(prediction) is None and open_facts(prediction) == {}
    back = _write_and_reopen(prediction, tmp_path, writer)
    np.testing.assert_array_equal(back.values.astype(bool), prediction.values)
    _assert_plain_attrs(prediction)


def test_recipe_describes_only_the_opened_array(slide: str):
    image = zd.open_image(slide)
    recipe = recipe_of(image)
    assert recipe is not None and recipe.location == slide and recipe.key == "0"
    assert open_facts(image)["full_shape"] == {"c": 3, "y": 256, "x": 256}
    derived = {
        "isel": image.isel(y=slice(0, 64)),
        "arithmetic": image + 1,
        "where": image.where(image > 100),
        "reduction": image.mean("c"),
        "transpose": image.transpose("y", "x", "c"),
        "rechunk": image.chunk({"y": 128}),
        "astype": image.astype("float32"),
        "computed": image.compute(),
    }
    for what, arr in derived.items():
        assert recipe_of(arr) is None, what
        assert open_facts(arr) == {}, what
    # views that keep the opened array and its dims keep the record
    assert recipe_of(image.copy()) == recipe
    assert recipe_of(image.rename("other")) == recipe
    assert recipe_of(image.to_dataset()["image"]) == recipe
    # slices still know what they were sliced from, when asked
    assert recipe_of(derived["isel"], derived=True) == recipe
    assert recipe_of(derived["arithmetic"], derived=True) is None


def test_recipe_survives_pickling(slide: str):
    image = zd.open_image(slide, level=2)
    for dumps in (pickle.dumps, cloudpickle.dumps):
        again = pickle.loads(dumps(image))
        assert recipe_of(again) == recipe_of(image)
        assert open_facts(again)["storage_chunks"] == {"c": 3, "y": 64, "x": 64}
        np.testing.assert_array_equal(again.values, image.values)


def test_pyramid_levels_write_as_a_tree(slide: str, tmp_path: Path):
    tree = zd.open_pyramid(slide, roi="(0,0,0):(-1,128,128)")
    path = tmp_path / "tree.zarr"
    tree.to_zarr(path)
    back = xr.open_datatree(path, engine="zarr")
    for name in tree.attrs["levels"]:
        np.testing.assert_array_equal(back[name]["image"].values, tree[name]["image"].values)
        assert recipe_of(tree[name]["image"]) is not None
        assert "roi" in open_facts(tree[name]["image"])


def test_remote_credentials_never_reach_the_written_store(s3_server, tmp_path: Path):
    image = zd.open_image(s3_server.url("slide_v3.zarr"), level=1,
                          storage_options=s3_server.storage_options)
    assert recipe_of(image).storage_options["secret"] == s3_server.secret  # still reopens
    path = tmp_path / "copy.zarr"
    image.to_dataset().to_zarr(path)
    for folder, _dirs, files in os.walk(path):
        for name in files:
            with open(os.path.join(folder, name), "rb") as fh:
                raw = fh.read()
            assert s3_server.secret.encode() not in raw and s3_server.key.encode() not in raw
    np.testing.assert_array_equal(xr.open_zarr(path)["image"].values, image.values)

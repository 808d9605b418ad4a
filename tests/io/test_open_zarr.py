"""open_image / open_pyramid on zarr v2 and v3 stores written by the tests."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

import zarrdask as zd
from zarrdask.datasets import synthetic_slide
from zarrdask.io.recipe import open_facts


@pytest.mark.parametrize("fixture", ["slide_v3", "slide_v2"])
def test_ome_ngff_level0_values_dims_and_scale(request, fixture):
    path = request.getfixturevalue(fixture)
    arr = zd.open_image(path)
    raw = zarr.open_array(path + "/0", mode="r")
    assert arr.dims == ("c", "y", "x")
    assert arr.shape == raw.shape
    assert open_facts(arr)["scale"] == {"y": 0.5, "x": 0.5}
    assert open_facts(arr)["units"] == {"y": "micrometer", "x": "micrometer"}
    np.testing.assert_array_equal(arr[:, 100:300, 50:260].values, raw[:, 100:300, 50:260])
    assert float(arr.x[10]) == pytest.approx(5.0)


def test_synthetic_slide_is_deterministic_and_has_tissue_and_background():
    a = synthetic_slide(1024, chunk=256, seed=3).compute()
    b = synthetic_slide(1024, chunk=256, seed=3).compute()
    c = synthetic_slide(1024, chunk=256, seed=4).compute()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    grey = a.mean(axis=0)
    tissue_fraction = float((grey < 200).mean())
    assert 0.15 < tissue_fraction < 0.6


def test_level_and_data_group_select_the_same_array(slide_v3):
    by_level = zd.open_image(slide_v3, level=2)
    by_group = zd.open_image(slide_v3, data_group="2")
    assert by_level.shape == by_group.shape == (3, 512, 512)
    assert by_group.attrs["level"] == 2
    assert open_facts(by_group)["scale"] == {"y": 2.0, "x": 2.0}
    np.testing.assert_array_equal(by_level.values, by_group.values)


def test_pyramid_has_every_level_with_its_scale(slide_v3):
    tree = zd.open_pyramid(slide_v3)
    assert tree.attrs["levels"] == ["0", "1", "2", "3"]
    scales = [open_facts(tree[name]["image"])["scale"]["x"] for name in tree.attrs["levels"]]
    assert scales == [0.5, 1.0, 2.0, 4.0]
    # physical extent is the same at every level
    extents = [float(tree[n]["image"].x[-1] + s) for n, s in zip(tree.attrs["levels"], scales, strict=True)]
    assert extents == [1024.0] * 4


def test_roi_string_selects_a_box_and_keeps_physical_coords(slide_v3):
    arr = zd.open_image(slide_v3, roi="(0,100,200):(-1,50,60)")
    assert arr.shape == (3, 50, 60)
    assert float(arr.y[0]) == pytest.approx(50.0)
    full = zd.open_image(slide_v3)
    np.testing.assert_array_equal(arr.values, full[:, 100:150, 200:260].values)


def test_axes_override_and_case(slide_v3):
    arr = zd.open_image(slide_v3, axes="CYX")
    assert arr.dims == ("c", "y", "x")
    arr = zd.open_image(slide_v3, axes="syx")  # tifffile's S means channels
    assert arr.dims == ("c", "y", "x")


def test_numpy_dask_and_zarr_objects(tmp_path):
    data = np.arange(4 * 6 * 3, dtype=np.uint16).reshape(4, 6, 3)
    arr = zd.open_image(data, axes="YXC")
    assert arr.dims == ("y", "x", "c")
    np.testing.assert_array_equal(arr.values, data)
    z = zarr.create_array(tmp_path / "plain.zarr", shape=(10, 12), chunks=(5, 5), dtype="f4")
    z[:] = np.arange(120, dtype="f4").reshape(10, 12)
    arr = zd.open_image(z)
    assert arr.dims == ("y", "x") and arr.data.chunksize == (5, 5)
    np.testing.assert_array_equal(arr.values, z[:])
    arr = zd.open_image(str(tmp_path / "plain.zarr"))
    np.testing.assert_array_equal(arr.values, z[:])


def test_dask_and_xarray_objects_open_lazily_with_named_dims():
    import dask.array as da
    import xarray as xr

    data = np.arange(3 * 40 * 50, dtype=np.uint8).reshape(3, 40, 50)
    lazy = da.from_array(data, chunks=(3, 16, 16))
    arr = zd.open_image(lazy, axes="CYX", roi="(0,8,10):(-1,16,20)")
    assert arr.dims == ("c", "y", "x") and isinstance(arr.data, da.Array)
    np.testing.assert_array_equal(arr.values, data[:, 8:24, 10:30])

    labelled = xr.DataArray(data, dims=("C", "Y", "X"),
                            coords={"Y": np.arange(40) * 0.5, "X": np.arange(50) * 0.5})
    arr = zd.open_image(labelled)
    assert arr.dims == ("c", "y", "x") and isinstance(arr.data, da.Array)
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr["x"].values, np.arange(50) * 0.5)
    arr = zd.open_image(labelled.rename({"C": "a", "Y": "b", "X": "d"}), axes="CYX")
    assert arr.dims == ("c", "y", "x")

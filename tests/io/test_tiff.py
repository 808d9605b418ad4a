"""TIFF, BigTIFF and (pyramidal) OME-TIFF files written by tifffile, read back
through ``open_image`` / ``open_pyramid``."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile

import zarrdask as zd
from zarrdask.io.recipe import open_facts
from zarrdask.io.tiff_reader import _downsample_factor

RNG = np.random.default_rng(20240611)


def _write_pyramid(path: Path, base: np.ndarray, factors: tuple[int, ...] = (2, 4), *,
                   tile: tuple[int, int] = (128, 128), physical: float | None = 0.5
                   ) -> list[np.ndarray]:
    """A pyramidal BigTIFF OME-TIFF: ``base`` (CYX) then sub-resolutions as
    SubIFDs, each ``base[:, ::f, ::f]``. Returns the levels written."""
    levels = [base] + [base[:, ::f, ::f] for f in factors]
    metadata: dict = {"axes": "CYX"}
    if physical is not None:
        metadata.update({"PhysicalSizeX": physical, "PhysicalSizeY": physical,
                         "PhysicalSizeXUnit": "µm", "PhysicalSizeYUnit": "µm"})
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tif:
        tif.write(base, subifds=len(factors), tile=tile, photometric="minisblack",
                  metadata=metadata)
        for level in levels[1:]:
            tif.write(level, subfiletype=1, tile=tile, photometric="minisblack")
    return levels


# ------------------------------------------------------------------------ flat TIFF


def test_plain_greyscale_tiff_in_strips(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(300, 200), dtype=np.uint16)
    path = tmp_path / "grey.tif"
    tifffile.imwrite(path, data, rowsperstrip=64, compression="zlib")

    arr = zd.open_image(path)
    assert arr.attrs["reader"] == "tiff"
    assert arr.dims == ("y", "x")
    assert arr.dtype == np.uint16
    assert arr.attrs["levels"] == 1
    # one dask chunk per TIFF strip
    assert arr.data.chunksize == (64, 200)
    assert open_facts(arr)["storage_chunks"] == {"y": 64, "x": 200}
    assert open_facts(arr)["scale"] == {"y": 1.0, "x": 1.0}
    assert open_facts(arr)["units"] == {"y": "pixel", "x": "pixel"}
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr[70:130, 11:57].values, data[70:130, 11:57])


def test_rgb_tiff_samples_become_channels(tmp_path: Path):
    data = RNG.integers(0, 256, size=(90, 120, 3), dtype=np.uint8)
    path = tmp_path / "rgb.tiff"
    tifffile.imwrite(path, data, photometric="rgb")

    arr = zd.open_image(str(path))
    assert arr.dims == ("y", "x", "c")
    assert arr.shape == (90, 120, 3)
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr.sel(c=1).values, data[..., 1])


def test_tiled_bigtiff_chunks_are_its_tiles(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(300, 250), dtype=np.uint16)
    path = tmp_path / "big.tif"
    tifffile.imwrite(path, data, bigtiff=True, tile=(64, 64), compression="zlib")
    assert path.read_bytes()[:4] == b"II+\x00"  # really a BigTIFF

    arr = zd.open_image(path)
    assert arr.dims == ("y", "x")
    assert arr.data.chunksize == (64, 64)
    assert arr.data.numblocks == (5, 4)  # ceil(300/64), ceil(250/64)
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr[250:, 190:].values, data[250:, 190:])


def test_tiff_without_the_magic_extension_is_found_by_its_header(tmp_path: Path):
    data = RNG.integers(0, 256, size=(20, 30), dtype=np.uint8)
    path = tmp_path / "scan.raw_tiff_data"
    tifffile.imwrite(path, data, tile=(16, 16))
    arr = zd.open_image(path)
    assert arr.attrs["reader"] == "tiff"
    np.testing.assert_array_equal(arr.values, data)


# ------------------------------------------------------------------------ OME-TIFF


def test_ome_tiff_channels_and_physical_size(tmp_path: Path):
    data = RNG.integers(0, 4096, size=(2, 120, 160), dtype=np.uint16)
    path = tmp_path / "cells.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="minisblack",
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.25, "PhysicalSizeY": 0.4})

    arr = zd.open_image(path)
    assert arr.dims == ("c", "y", "x")
    assert open_facts(arr)["scale"] == {"y": 0.4, "x": 0.25}
    assert open_facts(arr)["units"] == {"y": "micrometer", "x": "micrometer"}
    assert float(arr.x[10]) == pytest.approx(2.5)
    assert float(arr.y[10]) == pytest.approx(4.0)
    assert arr.x.attrs["units"] == "micrometer"
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr.sel(c=1).values, data[1])


def test_ome_tiff_rgb_yxs(tmp_path: Path):
    data = RNG.integers(0, 256, size=(64, 80, 3), dtype=np.uint8)
    path = tmp_path / "rgb.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="rgb",
                     metadata={"axes": "YXS", "PhysicalSizeX": 0.5, "PhysicalSizeY": 0.5,
                               "PhysicalSizeXUnit": "nm", "PhysicalSizeYUnit": "nm"})
    arr = zd.open_image(path)
    assert arr.dims == ("y", "x", "c")
    assert open_facts(arr)["scale"] == {"y": 0.5, "x": 0.5}
    assert open_facts(arr)["units"] == {"y": "nanometer", "x": "nanometer"}
    np.testing.assert_array_equal(arr.values, data)


def test_ome_tiff_with_channels_and_samples_keeps_both(tmp_path: Path):
    data = RNG.integers(0, 256, size=(2, 32, 40, 3), dtype=np.uint8)
    path = tmp_path / "multi_rgb.ome.tif"
    tifffile.imwrite(path, data, ome=True, photometric="rgb", metadata={"axes": "CYXS"})
    arr = zd.open_image(path)
    # two channel-like axes: tifffile's S keeps its own name rather than clash with C
    assert arr.dims == ("c", "y", "x", "s")
    np.testing.assert_array_equal(arr.values, data)


# ------------------------------------------------------------------------- pyramids


def test_pyramidal_ome_tiff_levels_scales_and_values(tmp_path: Path):
    base = RNG.integers(0, 256, size=(2, 525, 770), dtype=np.uint8)
    path = tmp_path / "pyramid.ome.tif"
    written = _write_pyramid(path, base)

    tree = zd.open_pyramid(path)
    assert tree.attrs["levels"] == ["0", "1", "2"]
    assert tree.attrs["reader"] == "tiff"
    shapes = [tree[n]["image"].shape for n in tree.attrs["levels"]]
    assert shapes == [(2, 525, 770), (2, 263, 385), (2, 132, 193)]
    # level k: level-0 physical size x its downsampling factor (sizes rounded up)
    scales = [open_facts(tree[n]["image"])["scale"] for n in tree.attrs["levels"]]
    assert scales == [{"y": 0.5, "x": 0.5}, {"y": 1.0, "x": 1.0}, {"y": 2.0, "x": 2.0}]
    for name, expected in zip(tree.attrs["levels"], written, strict=True):
        image = tree[name]["image"]
        assert image.dims == ("c", "y", "x")
        assert image.data.chunksize == (1, 128, 128)  # a tile of one channel plane
        np.testing.assert_array_equal(image.values, expected)
    # the same physical point sits at the same coordinate on every level
    assert float(tree["1"]["image"].x[100]) == float(tree["0"]["image"].x[200]) == 100.0


def test_data_group_and_level_select_a_pyramid_level(tmp_path: Path):
    base = RNG.integers(0, 256, size=(2, 256, 384), dtype=np.uint8)
    path = tmp_path / "pyramid.ome.tif"
    written = _write_pyramid(path, base, tile=(64, 64))

    by_group = zd.open_image(path, data_group="1")
    assert by_group.attrs["level"] == 1
    assert by_group.attrs["data_group"] == "0/1"
    assert by_group.attrs["levels"] == 3
    np.testing.assert_array_equal(by_group.values, written[1])

    by_series_level = zd.open_image(path, data_group="0/2")
    np.testing.assert_array_equal(by_series_level.values, written[2])
    assert open_facts(by_series_level)["scale"] == {"y": 2.0, "x": 2.0}

    by_level = zd.open_image(path, level=2)
    np.testing.assert_array_equal(by_level.values, written[2])
    # an int works like its string, and level= overrides the level of data_group
    np.testing.assert_array_equal(zd.open_image(path, data_group=1).values, written[1])
    np.testing.assert_array_equal(zd.open_image(path, data_group="1", level=0).values, base)


def test_pyramid_without_physical_size_is_in_level0_pixels(tmp_path: Path):
    base = RNG.integers(0, 256, size=(1, 256, 256), dtype=np.uint8)
    path = tmp_path / "pixels.ome.tif"
    _write_pyramid(path, base, factors=(2, 4, 8), tile=(32, 32), physical=None)
    tree = zd.open_pyramid(path)
    assert [open_facts(tree[n]["image"])["scale"]["x"] for n in tree.attrs["levels"]] == [
        1.0, 2.0, 4.0, 8.0]
    assert {open_facts(tree[n]["image"])["units"]["x"] for n in tree.attrs["levels"]} == {"pixel"}


def test_single_channel_is_squeezed_like_tifffile_does(tmp_path: Path):
    base = RNG.integers(0, 256, size=(1, 128, 128), dtype=np.uint8)
    path = tmp_path / "one_channel.ome.tif"
    written = _write_pyramid(path, base, factors=(2,), tile=(64, 64))
    arr = zd.open_image(path, level=1)
    assert arr.dims == ("y", "x")  # tifffile's series drops length-1 axes
    np.testing.assert_array_equal(arr.values, written[1][0])
    assert tifffile.imread(path).shape == zd.open_image(path).shape == (128, 128)


def test_pyramid_roi_is_scaled_to_each_level(tmp_path: Path):
    base = RNG.integers(0, 256, size=(2, 256, 256), dtype=np.uint8)
    path = tmp_path / "roi.ome.tif"
    written = _write_pyramid(path, base, factors=(2,), tile=(64, 64))
    tree = zd.open_pyramid(path, roi="(0,64,32):(-1,128,64)")
    np.testing.assert_array_equal(tree["0"]["image"].values, base[:, 64:192, 32:96])
    np.testing.assert_array_equal(tree["1"]["image"].values, written[1][:, 32:96, 16:48])


def test_series_slash_level_picks_another_series(tmp_path: Path):
    first = RNG.integers(0, 256, size=(40, 50), dtype=np.uint8)
    second = RNG.integers(0, 2**16, size=(3, 30, 20), dtype=np.uint16)
    path = tmp_path / "two_series.tif"
    with tifffile.TiffWriter(path) as tif:
        tif.write(first, metadata={"axes": "YX"})
        tif.write(second, photometric="minisblack", metadata={"axes": "ZYX"})

    arr0 = zd.open_image(path)
    np.testing.assert_array_equal(arr0.values, first)
    arr1 = zd.open_image(path, data_group="1/0")
    assert arr1.dims == ("z", "y", "x")
    assert arr1.dtype == np.uint16
    np.testing.assert_array_equal(arr1.values, second)


# ------------------------------------------------------------- readers and workers


def test_tiff_image_pickles_and_reads_in_threads(tmp_path: Path):
    data = RNG.integers(0, 2**16, size=(256, 256), dtype=np.uint16)
    path = tmp_path / "threads.tif"
    tifffile.imwrite(path, data, tile=(32, 32), compression="zlib")
    arr = zd.open_image(path)
    # 64 tiles decoded concurrently from one open file give the right pixels
    np.testing.assert_array_equal(arr.data.compute(scheduler="threads"), data)
    clone = pickle.loads(pickle.dumps(arr))
    np.testing.assert_array_equal(clone[100:200, 5:90].values, data[100:200, 5:90])


@pytest.mark.parametrize(
    ("base", "size", "factor"),
    [(512, 256, 2.0), (525, 263, 2.0), (525, 262, 2.0), (770, 193, 4.0), (100, 100, 1.0),
     (1000, 300, 1000 / 300)],
)
def test_downsample_factor(base: int, size: int, factor: float):
    assert _downsample_factor(base, size) == pytest.approx(factor)

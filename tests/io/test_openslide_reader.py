"""The optional OpenSlide backend, on Aperio-style SVS and generic tiled TIFF
files written here with tifffile (OpenSlide reads both)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import tifffile
import wsi_files

import zarrdask as zd
from zarrdask.errors import CorruptChunkError, OptionError, UnsupportedFormatError
from zarrdask.io.recipe import open_facts, recipe_of

openslide = pytest.importorskip("openslide", reason="zarrdask[openslide] is not installed")


@pytest.fixture(scope="module")
def svs(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("os") / "slide.svs"
    wsi_files.write_svs(path, wsi_files.rgb_slide((1024, 768), seed=41), mpp=0.25, app_mag=40,
                        factors=(4,))
    return path


def test_svs_levels_values_scale_and_associated_images(svs):
    tree = zd.open_pyramid(svs, reader="openslide")
    assert tree.attrs["reader"] == "openslide"
    assert tree.attrs["objective_power"] == 40.0
    assert sorted(tree.attrs["associated_images"]) == ["label", "macro", "thumbnail"]
    names = tree.attrs["levels"]
    assert len(names) == 2
    for i, name in enumerate(names):
        image = tree[name]["image"]
        assert image.dims == ("y", "x", "c") and image.dtype == np.uint8
        # the slide's 256-pixel tiles (a level smaller than a tile is one chunk)
        assert image.data.chunksize == (min(256, image.shape[0]), min(256, image.shape[1]), 3)
        assert image.x.attrs == {"units": "micrometer", "scale": pytest.approx(0.25 * 4 ** i)}
        # the same JPEG tiles decode to the same pixels as through tifffile
        np.testing.assert_array_equal(image.values, tifffile.imread(svs, series=0, level=i))
    assert open_facts(tree[names[1]]["image"])["magnification"] == pytest.approx(10.0)


def test_generic_tiled_tiff_pyramid_and_mpp_selection(tmp_path: Path):
    path = tmp_path / "generic.tif"
    levels = wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((512, 640), seed=42),
                                             mpp=0.25, compression="zlib", subifds=False)
    image = zd.open_image(path, reader="openslide", mpp=0.5)
    assert image.attrs["level"] == 1 and image.attrs["reader"] == "openslide"
    assert image.x.attrs["scale"] == pytest.approx(0.5)
    np.testing.assert_array_equal(image.values, levels[1])  # lossless: exact
    # a window that is not tile-aligned reads the right pixels
    np.testing.assert_array_equal(image[37:101, 50:190].values, levels[1][37:101, 50:190])


def test_pickles_by_recipe_and_reads_on_a_cluster(svs):
    from distributed import Client, LocalCluster

    image = zd.open_image(svs, reader="openslide", level=1)
    assert recipe_of(image).reader == "openslide"
    assert len(pickle.dumps(image)) < 200_000  # no pixels, no open handle
    expected = tifffile.imread(svs, series=0, level=1)
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=True,
                      dashboard_address=":0") as cluster, Client(cluster) as client:
        values = client.compute(image.data).result()
    np.testing.assert_array_equal(values, expected)


def test_build_table_reads_through_openslide(svs):
    spec = {"source": str(svs), "reader": "openslide"}
    table = zd.build_table(spec, patch_size="64um", mpp=1.0)
    assert table.meta["images"][0]["level"] == 1
    assert table.meta["images"][0]["array"]["reader"] == "openslide"
    assert table.meta["grid"]["patch"] == {"y": 64, "x": 64}
    # the same rows as through tifffile (the metadata differs: it names the reader)
    through_tiff = zd.build_table(str(svs), patch_size="64um", mpp=1.0)
    assert table.frame.equals(through_tiff.frame) and len(table) == 12


def test_opening_reads_no_tile_and_a_damaged_tile_is_a_corrupt_chunk(tmp_path: Path):
    path = tmp_path / "damaged.svs"
    wsi_files.write_svs(path, wsi_files.rgb_slide((512, 512), seed=43), factors=(4,))
    wsi_files.damage_last_tile(path)
    image = zd.open_image(path, reader="openslide")  # metadata only
    assert image.shape == (512, 512, 3)
    with pytest.raises(CorruptChunkError, match="damaged.svs"):
        image[256:, 256:].compute()


def test_what_openslide_cannot_read_is_a_typed_error(tmp_path: Path):
    path = tmp_path / "j2k.tif"
    wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((256, 256), seed=44),
                                    compression="jpeg2000", subifds=False)
    with pytest.raises(UnsupportedFormatError, match="OpenSlide cannot read it"):
        zd.open_image(path, reader="openslide")
    with pytest.raises(OptionError, match="local files only"):
        zd.open_image("s3://bucket/slide.mrxs")
    with pytest.raises(OptionError, match="reader='bioformats' is unknown"):
        zd.open_image(path, reader="bioformats")

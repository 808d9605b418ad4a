"""Vendor and generic whole-slide TIFF flavours (written here with tifffile):
values, physical scale, objective power, associated images and laziness."""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pytest
import tifffile
import wsi_files

import zarrdask as zd
from zarrdask.errors import CorruptChunkError, DataGroupError
from zarrdask.io.recipe import open_facts

ROOT = Path(__file__).resolve().parents[2]


def _tiff_decoded(path: Path, series: int = 0, level: int = 0) -> np.ndarray:
    """What tifffile itself decodes for a series/level (the reference)."""
    return tifffile.imread(path, series=series, level=level)


def test_imagecodecs_is_a_runtime_dependency():
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.split(">")[0].split("=")[0].strip() == "imagecodecs" for d in deps)


def test_svs_mpp_objective_power_pyramid_and_associated_images(tmp_path: Path):
    base = wsi_files.rgb_slide((1024, 768), seed=1)
    path = tmp_path / "slide.svs"
    written = wsi_files.write_svs(path, base, mpp=0.499, app_mag=20, factors=(4,))

    image = zd.open_image(path)
    assert image.dims == ("y", "x", "c")
    assert image.shape == (1024, 768, 3)
    assert image.attrs["objective_power"] == 20.0
    assert image.x.attrs == {"units": "micrometer", "scale": 0.499}
    assert image.y.attrs["units"] == "micrometer"
    assert float(image.x[100]) == pytest.approx(49.9)
    facts = open_facts(image)
    assert facts["associated_images"] == ["thumbnail", "label", "macro"]
    assert facts["mpp"] == pytest.approx(0.499)
    assert facts["magnification"] == pytest.approx(20.0)
    # JPEG tiles decode to what tifffile decodes, and that is the image written
    values = image.values
    np.testing.assert_array_equal(values, _tiff_decoded(path))
    assert np.abs(values.astype(int) - base).mean() < 4

    tree = zd.open_pyramid(path)
    assert [tree[n]["image"].shape for n in tree.attrs["levels"]] == [(1024, 768, 3),
                                                                      (256, 192, 3)]
    level1 = tree[tree.attrs["levels"][1]]["image"]
    assert level1.x.attrs["scale"] == pytest.approx(0.499 * 4)
    assert open_facts(level1)["magnification"] == pytest.approx(5.0)
    np.testing.assert_array_equal(level1.values, _tiff_decoded(path, level=1))

    # the thumbnail, label and macro are not pyramid levels; each opens by name
    for name in ("thumbnail", "label", "macro"):
        assoc = zd.open_image(path, data_group=name)
        np.testing.assert_array_equal(assoc.values if name == "label" else assoc.shape,
                                      written[name] if name == "label"
                                      else written[name].shape)
        assert "objective_power" not in assoc.attrs
        assert assoc.x.attrs["units"] == "pixel"  # the slide's MPP is not theirs


def test_unknown_associated_name_lists_the_names(tmp_path: Path):
    path = tmp_path / "slide.svs"
    wsi_files.write_svs(path, wsi_files.rgb_slide((512, 512), seed=2))
    with pytest.raises(DataGroupError, match="'label'"):
        zd.open_image(path, data_group="overview")


@pytest.mark.parametrize("compression", ["jpeg", "jpeg2000"])
def test_generic_pyramidal_tiff_scale_from_resolution_tags(tmp_path: Path, compression):
    base = wsi_files.rgb_slide((512, 640), seed=3)
    path = tmp_path / f"generic-{compression}.tif"
    wsi_files.write_generic_pyramid(path, base, mpp=0.25, compression=compression)

    tree = zd.open_pyramid(path)
    names = tree.attrs["levels"]
    assert [open_facts(tree[n]["image"])["scale"] for n in names] == [
        pytest.approx({"y": 0.25, "x": 0.25}), pytest.approx({"y": 0.5, "x": 0.5}),
        pytest.approx({"y": 1.0, "x": 1.0})]
    for i, n in enumerate(names):
        image = tree[n]["image"]
        assert image.x.attrs["units"] == "micrometer"
        assert image.data.chunksize[:2] == (128, 128)
        np.testing.assert_array_equal(image.values, _tiff_decoded(path, level=i))
    assert np.abs(tree[names[0]]["image"].values.astype(int) - base).mean() < 4
    assert "objective_power" not in tree[names[0]]["image"].attrs  # the file states none


def test_resolution_in_inches_and_bigtiff(tmp_path: Path):
    base = wsi_files.rgb_slide((256, 256), seed=4)
    path = tmp_path / "inch.tif"
    written = wsi_files.write_generic_pyramid(path, base, mpp=0.5, unit="INCH", factors=(2,),
                                              compression="zlib", bigtiff=True)
    assert tifffile.TiffFile(path).is_bigtiff
    image = zd.open_image(path, level=1)
    assert image.x.attrs == {"units": "micrometer", "scale": pytest.approx(1.0)}
    np.testing.assert_array_equal(image.values, written[1])  # lossless: exact


@pytest.mark.parametrize("resolution, unit", [((72, 72), "INCH"), ((96, 96), "INCH"),
                                              ((1, 1), "NONE")])
def test_placeholder_resolutions_give_no_physical_size(tmp_path: Path, resolution, unit):
    path = tmp_path / "picture.tif"
    tifffile.imwrite(path, wsi_files.rgb_slide((64, 64), seed=5), photometric="rgb",
                     resolution=resolution, resolutionunit=unit)
    image = zd.open_image(path)
    assert image.x.attrs == {"units": "pixel", "scale": 1.0}


def test_fluorescence_ome_tiff_16bit_channels_scale_and_objective(tmp_path: Path):
    rng = np.random.default_rng(6)
    data = rng.integers(0, 65535, size=(3, 300, 200), dtype=np.uint16)
    path = tmp_path / "fluo.ome.tif"
    tifffile.imwrite(path, data, tile=(128, 128), compression="zlib", photometric="minisblack",
                     resolution=(1e4 / 0.9, 1e4 / 0.9), resolutionunit="CENTIMETER",
                     metadata={"axes": "CYX", "PhysicalSizeX": 0.325, "PhysicalSizeY": 0.325,
                               "Channel": {"Name": ["DAPI", "FITC", "TRITC"]}})
    image = zd.open_image(path)
    assert image.dtype == np.uint16 and image.dims == ("c", "y", "x")
    # OME PhysicalSize wins over the resolution tags
    assert image.x.attrs == {"units": "micrometer", "scale": 0.325}
    np.testing.assert_array_equal(image.values, data)


def test_opening_reads_no_tile_and_a_damaged_tile_fails_when_read(tmp_path: Path):
    base = wsi_files.rgb_slide((512, 512), seed=7)
    path = tmp_path / "lazy.svs"
    wsi_files.write_svs(path, base, factors=(4,))
    wsi_files.damage_last_tile(path)
    image = zd.open_image(path)  # metadata only: the damaged tile is not touched
    assert image.data.chunksize == (256, 256, 3)
    assert image.x.attrs["scale"] == 0.499
    assert np.abs(image[:256, :256].values.astype(int) - base[:256, :256]).mean() < 4
    with pytest.raises(CorruptChunkError, match="chunk 1.1.0"):
        image[256:, 256:].compute()


# -- NDPI-, SCN- and Philips-like files (tifffile reads each as its vendor kind) ----------

VENDOR_LIKE = {
    # writer, file name, tifffile's series kind, level-0 µm/px, level factors, objective
    "ndpi": (wsi_files.write_ndpi_like, "slide.tif", 0.4536, (1, 2, 4), 20.0, ["macro"]),
    "scn": (wsi_files.write_scn_like, "slide.scn", 0.5, (1, 4), 20.0, []),
    "philips": (wsi_files.write_philips_like, "slide.tiff", 0.25, (1, 2, 4), None, ["macro"]),
}


@pytest.mark.parametrize("kind", sorted(VENDOR_LIKE))
def test_vendor_like_files_physical_size_levels_values_and_laziness(tmp_path: Path, kind):
    write, name, mpp, factors, power, associated = VENDOR_LIKE[kind]
    base = wsi_files.rgb_slide((512, 384), seed=11)
    path = tmp_path / name
    levels = write(path, base)
    with tifffile.TiffFile(path) as tif:  # tifffile reads the flavour as that vendor's
        assert tif.series[0].kind == kind
        assert getattr(tif, f"is_{kind}")
    reference0 = _tiff_decoded(path)
    # the damaged last tile of level 0 shows the open reads no tile
    wsi_files.damage_last_tile(path)

    tree = zd.open_pyramid(path)
    names = tree.attrs["levels"]
    assert len(names) == len(factors)
    for i, (n, f) in enumerate(zip(names, factors, strict=True)):
        image = tree[n]["image"]
        assert image.shape == levels[i].shape and image.dims == ("y", "x", "c")
        assert image.x.attrs == {"units": "micrometer", "scale": pytest.approx(mpp * f)}
        assert image.y.attrs["scale"] == pytest.approx(mpp * f)
        assert image.data.chunksize[:2] == tuple(min(128, s) for s in image.shape[:2])
        if i:  # level 0 holds the damaged tile
            np.testing.assert_array_equal(image.values, _tiff_decoded(path, level=i))
            assert np.abs(image.values.astype(int) - levels[i]).mean() < 4
    image = zd.open_image(path)
    assert image.attrs.get("objective_power") == power
    facts = open_facts(image)
    assert facts["mpp"] == pytest.approx(mpp) and facts["associated_images"] == associated
    np.testing.assert_array_equal(image[:128, :128].values, reference0[:128, :128])
    with pytest.raises(CorruptChunkError):
        image[384:, 256:].compute()
    # µm requests land on the right level
    assert zd.open_image(path, mpp=mpp * factors[-1]).shape == levels[-1].shape
    table = zd.build_table(path, patch_size="32um", mpp=mpp * factors[1])
    assert table.meta["images"][0]["level"] == 1
    assert table.meta["grid"]["patch"] == {"y": round(32 / (mpp * factors[1]))} | {
        "x": round(32 / (mpp * factors[1]))}


def test_a_true_ndpi_needs_64_bit_offsets_that_tifffile_does_not_write(tmp_path: Path):
    """NDPI files are classic TIFFs with 64-bit IFD offsets; tifffile reads
    a ``.ndpi`` file that way, so the NDPI-like file written here must not
    be named ``.ndpi`` (docs/readers.md says so)."""
    path = tmp_path / "slide.ndpi"
    wsi_files.write_ndpi_like(path, wsi_files.rgb_slide((256, 256), seed=1), factors=(2,))
    with pytest.raises(CorruptChunkError, match="damaged or truncated"):
        zd.open_image(path)

"""``build_table(..., patch_size="128um", mpp=)``: grids in physical units on
slides written here with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wsi_files

import zarrdask as zd
from zarrdask.errors import GridParameterError, OptionError
from zarrdask.grid.physical import parse_length


@pytest.fixture(scope="module")
def two_scans(tmp_path_factory) -> tuple[Path, Path]:
    """The same tissue scanned at 0.25 µm/px (levels 0.25, 0.5, 1.0) and at
    0.5 µm/px (levels 0.5, 1.0)."""
    folder = tmp_path_factory.mktemp("scans")
    base = wsi_files.rgb_slide((1024, 768), seed=31)
    fine, coarse = folder / "fine.tif", folder / "coarse.tif"
    wsi_files.write_generic_pyramid(fine, base, mpp=0.25, compression="zlib", tile=128)
    wsi_files.write_generic_pyramid(coarse, np.ascontiguousarray(base[::2, ::2]), mpp=0.5,
                                    factors=(2,), compression="zlib", tile=128)
    return fine, coarse


def _physical_starts(table, image_id: int, scale0: float) -> set[tuple[float, float]]:
    rows = table.frame if hasattr(table, "frame") else table.to_pandas()
    rows = rows[rows["image_id"] == image_id]
    return {(y * scale0, x * scale0) for y, x in zip(rows["y"], rows["x"], strict=True)}


def test_um_patch_size_with_mpp_gives_the_same_physical_grid_on_both_scans(two_scans):
    fine, coarse = two_scans
    table = zd.build_table([fine, coarse], patch_size="64um", mpp=0.5)
    assert table.meta["grid"]["patch"] == {"y": 128, "x": 128}  # 64 µm at 0.5 µm/px
    images = table.meta["images"]
    assert [e["level"] for e in images] == [1, 0]  # the 0.5 µm/px level of each
    assert [e["mpp"] for e in images] == [pytest.approx(0.5), pytest.approx(0.5)]
    assert table.meta["physical"] == {"patch_size": "64um", "stride": None, "pad": None,
                                      "mpp": 0.5}
    # rows are in level-0 pixels of each slide: the same physical positions
    fine_starts = _physical_starts(table, 0, 0.25)
    assert len(fine_starts) == (1024 // 256) * (768 // 256)
    assert fine_starts == _physical_starts(table, 1, 0.5)


def test_um_patch_size_without_mpp_on_different_scans_is_refused(two_scans):
    with pytest.raises(GridParameterError, match=r"different patch sizes in pixels.*mpp="):
        zd.build_table(list(two_scans), patch_size="64um")


def test_um_sizes_per_axis_mixed_with_pixels(two_scans):
    fine, _ = two_scans
    table = zd.build_table(fine, patch_size={"y": "64um", "x": "32um"}, stride=(128, "16um"),
                           pad="2um", spatial_axes="YX")
    grid = table.meta["grid"]
    assert grid["patch"] == {"y": 256, "x": 128}  # level 0: 0.25 µm/px
    assert grid["stride"] == {"y": 128, "x": 64}
    assert grid["pad"] == {"y": 8, "x": 8}


def test_a_level_within_the_tolerance_counts_as_the_asked_mpp(tmp_path: Path):
    path = tmp_path / "scanner.svs"
    wsi_files.write_svs(path, wsi_files.rgb_slide((1024, 1024), seed=32), mpp=0.2527,
                        app_mag=40, factors=(4,))
    table = zd.build_table(path, patch_size="128um", mpp=0.25)
    assert table.meta["grid"]["patch"] == {"y": 512, "x": 512}
    assert table.meta["images"][0]["mpp"] == pytest.approx(0.2527)
    # without mpp= the stated pixel size is used as is: 128 / 0.2527 = 506.5
    assert zd.build_table(path, patch_size="128um").meta["grid"]["patch"]["x"] == 507


def test_um_patch_size_on_a_slide_without_scale_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "pixels.tif"
    wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((256, 256), seed=33), mpp=None,
                                    compression="zlib", tile=64)
    with pytest.raises(GridParameterError, match=r"pixels.tif.*no physical pixel size"):
        zd.build_table(path, patch_size="32um")
    with pytest.raises(OptionError, match="no physical pixel size"):
        zd.build_table(path, patch_size=32, mpp=0.5)


def test_mpp_on_an_in_memory_dataarray_is_checked_not_ignored(two_scans):
    image = zd.open_image(two_scans[1])  # 0.5 µm/px, one level in memory
    assert zd.build_table(image, patch_size="64um", mpp=0.5).meta["grid"]["patch"]["x"] == 128
    with pytest.raises(OptionError, match="finer than every level"):
        zd.build_table(image, patch_size=64, mpp=0.25)


@pytest.mark.parametrize("text, um", [("128um", 128.0), ("128 µm", 128.0), ("128μm", 128.0),
                                      ("0.128mm", 128.0), ("500nm", 0.5), ("64 microns", 64.0),
                                      ("128", None), ("um", None), ("-5um", None)])
def test_parse_length(text, um):
    assert parse_length(text) == (pytest.approx(um) if um is not None else None)


@pytest.fixture(scope="module")
def tissue_scans(tmp_path_factory) -> tuple[Path, Path]:
    """A round piece of tissue on a bright background, scanned at 0.25 and
    at 0.5 µm/px, each with a pyramid."""
    folder = tmp_path_factory.mktemp("tissue")
    yy, xx = np.mgrid[0:1024, 0:1024]
    image = np.full((1024, 1024, 3), 240, np.uint8)
    image[(yy - 512) ** 2 + (xx - 512) ** 2 < 300 ** 2] = (120, 60, 140)
    fine, coarse = folder / "fine.tif", folder / "coarse.tif"
    wsi_files.write_generic_pyramid(fine, image, mpp=0.25, compression="zlib",
                                    factors=(2, 4, 8, 16))
    wsi_files.write_generic_pyramid(coarse, np.ascontiguousarray(image[::2, ::2]), mpp=0.5,
                                    compression="zlib", factors=(2, 4, 8))
    return fine, coarse


def test_mask_mpp_gives_the_same_physical_tissue_mask_on_both_scans(tissue_scans):
    fine, coarse = tissue_scans
    table = zd.build_table([fine, coarse], patch_size="32um", mpp=0.5, masks="tissue",
                           mask_mpp=8)
    assert table.meta["mask_mpp"] == {"asked": 8.0, "images": [8.0, 8.0]}
    starts = [_physical_starts(table, i, s) for i, s in ((0, 0.25), (1, 0.5))]
    assert starts[0] == starts[1] and 0 < len(starts[0]) < (512 // 64) ** 2
    # a fixed mask_scale gives each scan another physical mask resolution
    fixed = zd.build_table([fine, coarse], patch_size="32um", mpp=0.5, masks="tissue")
    assert "mask_mpp" not in fixed.meta


def test_mask_mpp_errors(tissue_scans, tmp_path: Path):
    fine, _ = tissue_scans
    with pytest.raises(GridParameterError, match="both given"):
        zd.build_table(fine, patch_size=64, masks="tissue", mask_mpp=8,
                       tissue_options={"mask_scale": 0.1})
    with pytest.raises(GridParameterError, match="finer than level 0"):
        zd.build_table(fine, patch_size=64, masks="tissue", mask_mpp=0.1)
    with pytest.raises(GridParameterError, match="positive number"):
        zd.build_table(fine, patch_size=64, masks="tissue", mask_mpp=0)
    pixels = tmp_path / "pixels.tif"
    wsi_files.write_generic_pyramid(pixels, wsi_files.rgb_slide((256, 256), seed=34),
                                    mpp=None, compression="zlib", tile=64)
    with pytest.raises(GridParameterError, match="states no physical pixel size"):
        zd.build_table(pixels, patch_size=64, masks="tissue", mask_mpp=8)

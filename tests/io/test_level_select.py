"""``open_image(..., mpp=)`` and ``level="20x"``: the level chosen by
resolution, on slides written here with tifffile."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import wsi_files

import zarrdask as zd
from zarrdask.errors import OptionError
from zarrdask.io.level_select import MPP_TOLERANCE, parse_magnification
from zarrdask.io.recipe import open_facts


@pytest.fixture(scope="module")
def pyramid(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """A lossless 0.25 / 0.5 / 1.0 µm/px generic pyramidal TIFF."""
    path = tmp_path_factory.mktemp("mpp") / "pyramid.tif"
    levels = wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((512, 512), seed=11),
                                             mpp=0.25, compression="zlib", tile=64)
    return path, levels


@pytest.mark.parametrize("mpp, level", [
    (0.25, 0), (0.26, 0), (0.5, 1), (0.54, 1),  # a level within the tolerance
    (0.75, 1), (0.85, 1),  # no level matches: the finer one, never the coarser
    (0.95, 2), (1.0, 2), (1.05, 2), (4.0, 2),  # 0.95: 1.0 is within 10 %
])
def test_mpp_picks_the_coarsest_level_not_coarser_than_asked(pyramid, mpp, level):
    path, levels = pyramid
    image = zd.open_image(path, mpp=mpp)
    assert image.attrs["level"] == level
    np.testing.assert_array_equal(image.values, levels[level])
    # not resampled: the coordinates tell the pixel size that was read
    assert image.x.attrs["scale"] == pytest.approx(0.25 * 2 ** level)
    assert open_facts(image)["mpp"] == pytest.approx(0.25 * 2 ** level)
    assert open_facts(image)["open_kwargs"]["mpp"] == mpp


def test_slightly_coarser_level_within_tolerance_counts(pyramid):
    path, _ = pyramid
    asked = 0.5 / (1 + MPP_TOLERANCE) + 1e-6  # level 1 is just within the tolerance
    assert zd.open_image(path, mpp=asked).attrs["level"] == 1
    assert zd.open_image(path, mpp=0.5 / (1 + MPP_TOLERANCE) - 1e-3).attrs["level"] == 0


def test_mpp_finer_than_level0_is_an_error_not_an_upsample(pyramid):
    path, _ = pyramid
    with pytest.raises(OptionError, match=r"finer than every level.*does not upsample"):
        zd.open_image(path, mpp=0.1)


@pytest.mark.parametrize("bad", [0, -0.5, float("nan"), "0.5", True])
def test_mpp_must_be_a_positive_number(pyramid, bad):
    with pytest.raises(OptionError, match="mpp="):
        zd.open_image(pyramid[0], mpp=bad)


def test_mpp_and_level_together_are_refused(pyramid):
    with pytest.raises(OptionError, match="pass one"):
        zd.open_image(pyramid[0], mpp=0.5, level=1)


def test_mpp_on_an_image_without_physical_size_is_a_clear_error(tmp_path: Path):
    path = tmp_path / "pixels.tif"
    wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((256, 256), seed=12), mpp=None,
                                    compression="zlib", tile=64)
    with pytest.raises(OptionError, match=r"no physical pixel size.*pass level="):
        zd.open_image(path, mpp=0.5)
    with pytest.raises(OptionError, match="no objective power"):
        zd.open_image(path, level="20x")


def test_magnification_level_from_the_objective_power(tmp_path: Path):
    path = tmp_path / "slide.svs"
    written = wsi_files.write_svs(path, wsi_files.rgb_slide((1024, 1024), seed=13),
                                  mpp=0.25, app_mag=40, factors=(2, 4))
    assert zd.open_image(path, level="40x").attrs["level"] == 0
    assert zd.open_image(path, level="20X").attrs["level"] == 1
    ten = zd.open_image(path, level="10×")
    assert ten.attrs["level"] == 2
    assert ten.shape == written["levels"][2].shape
    assert open_facts(ten)["magnification"] == pytest.approx(10.0)
    # between levels: the finer (higher magnification) one
    assert zd.open_image(path, level="15x").attrs["level"] == 1
    assert zd.open_image(path, level="5x").attrs["level"] == 2
    with pytest.raises(OptionError, match="does not upsample"):
        zd.open_image(path, level="60x")
    # the same slide by µm/px agrees
    assert zd.open_image(path, mpp=0.5).attrs["level"] == 1


def test_parse_magnification():
    assert parse_magnification("20x") == 20.0
    assert parse_magnification(" 2.5 X ") == 2.5
    assert parse_magnification("20") is None
    assert parse_magnification("x20") is None

"""Alignment of user masks and labels with their image, through coordinates."""

from __future__ import annotations

import dask.array as da
import numpy as np
import pytest
import xarray as xr
import zarr

from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import MaskError
from zarrdask.io import open_image
from zarrdask.masks import (
    WSITissueMaskGenerator,
    as_mask,
    default_mask,
    mask_from_labels,
    mask_is_empty,
    mask_origin,
    mask_scale_factors,
    mask_scale_of,
    tissue_mask,
)

SIZE, PIXEL = 1024, 0.5  # level-0 pixels, micrometres per pixel


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("align") / "s.zarr"
    return write_synthetic_slide(path, size=SIZE, chunk=256, levels=3, seed=11,
                                 pixel_size=PIXEL)


@pytest.fixture(scope="module")
def image(slide):
    return open_image(slide)


def quadrant(n: int) -> np.ndarray:
    """An n x n mask, True on its top-left quadrant."""
    mask = np.zeros((n, n), dtype=bool)
    mask[: n // 2, : n // 2] = True
    return mask


# -- arrays at any resolution --------------------------------------------------------

@pytest.mark.parametrize("n", [SIZE // 16, round(SIZE / 7.3), SIZE * 2])
def test_numpy_mask_at_any_resolution_spans_the_image(image, n):
    mask = as_mask(quadrant(n), like=image)
    assert mask.dims == ("y", "x") and mask.dtype == bool and mask.shape == (n, n)
    assert isinstance(mask.data, da.Array)
    expected = n / SIZE  # mask pixels per image pixel
    assert mask_scale_of(mask) == pytest.approx({"y": expected, "x": expected})
    assert mask_scale_factors(mask, image) == pytest.approx({"y": expected, "x": expected})
    assert mask_origin(mask, image) == {"y": 0.0, "x": 0.0}
    # pixel sizes and positions in the image's physical space
    size = SIZE * PIXEL / n
    assert {d: mask[d].attrs["scale"] for d in ("y", "x")} == pytest.approx({"y": size, "x": size})
    assert {d: mask[d].attrs["units"] for d in ("y", "x")} == {"y": "micrometer", "x": "micrometer"}
    np.testing.assert_allclose(mask.x.values, np.arange(n) * size)
    # the mask's last pixel ends where the image's last pixel ends
    assert float(mask.x[-1]) + size == pytest.approx(float(image.x[-1]) + PIXEL)
    # the True quadrant sits over the image's top-left quadrant
    half = SIZE // 2 * PIXEL
    flags = mask.values
    assert flags[mask.y.values < half - size][:, mask.x.values < half - size].all()
    assert not flags[mask.y.values >= half + size].any()


def test_dask_and_zarr_masks(image):
    source = quadrant(64)
    store = zarr.create_array(zarr.storage.MemoryStore(), shape=(64, 64), dtype=bool,
                              chunks=(32, 32))
    store[:] = source
    for given in (da.from_array(source, chunks=16), store, source.astype(np.uint8) * 7):
        mask = as_mask(given, like=image)
        assert mask.dtype == bool
        np.testing.assert_array_equal(mask.values, source)
        assert mask_scale_of(mask) == {"y": 1 / 16, "x": 1 / 16}


def test_channel_dims_are_reduced_with_any(image):
    cyx = np.zeros((2, 64, 64), dtype=bool)
    cyx[0, :8] = True
    cyx[1, :, :8] = True
    mask = as_mask(cyx, like=image, axes="CYX")
    assert mask.dims == ("y", "x")
    np.testing.assert_array_equal(mask.values, cyx.any(axis=0))
    yxc = xr.DataArray(np.moveaxis(cyx, 0, -1), dims=("y", "x", "c"))
    np.testing.assert_array_equal(as_mask(yxc, like=image).values, cyx.any(axis=0))


def test_leading_length_one_axes_are_dropped(image):
    mask = as_mask(quadrant(32)[None, None], like=image)
    assert mask.shape == (32, 32)


# -- mismatched dims -------------------------------------------------------------------

def test_three_d_mask_for_a_two_d_image_is_rejected(image):
    with pytest.raises(MaskError) as err:
        as_mask(np.zeros((4, 64, 64), dtype=bool), like=image)
    text = str(err.value)
    assert "(4, 64, 64)" in text and str(tuple(image.shape)) in text  # both shapes
    assert "('y', 'x')" in text and "axes=" in text                   # the fix
    assert image.attrs["source"] in text                              # the image


def test_dataarray_with_other_spatial_dims_is_rejected(image):
    zyx = xr.DataArray(np.zeros((3, 8, 8), dtype=bool), dims=("z", "y", "x"))
    with pytest.raises(MaskError, match=r"spatial dims \('z', 'y', 'x'\).*\('y', 'x'\)"):
        as_mask(zyx, like=image)
    with pytest.raises(MaskError, match=r"has shape \(3, 8, 8\) \(3-D\)"):
        mask_from_labels(np.zeros((3, 8, 8), dtype=np.uint8), like=image)


def test_empty_or_unusable_masks_are_rejected(image):
    with pytest.raises(MaskError, match="empty"):
        as_mask(np.zeros((0, 8), dtype=bool), like=image)
    with pytest.raises(MaskError, match="cannot use a dict"):
        as_mask({"y": 1}, like=image)
    with pytest.raises(MaskError, match="like= must be the image"):
        as_mask(quadrant(8), like=np.zeros((8, 8)))


def test_masks_and_labels_with_another_aspect_ratio_are_rejected(image):
    # Spanning the image would stretch them: 2 mask pixels per 32 image
    # pixels along y but 1 along x (or the labels of a transposed image).
    with pytest.raises(MaskError, match=r"aspect ratio.*0\.0625 along y, 0\.03125 along x"):
        as_mask(np.ones((64, 32), dtype=bool), like=image)
    with pytest.raises(MaskError, match=r"labels .*aspect ratio.*transposed"):
        mask_from_labels(np.ones((32, 64), dtype=np.uint8), like=image)
    with pytest.raises(MaskError, match="aspect ratio"):  # what a callable returns, too
        as_mask(lambda level: np.ones((level.shape[-2], level.shape[-1] // 3), bool), like=image)


def test_masks_rounded_to_whole_pixels_keep_spanning_the_image(image):
    # round(1024 / 7.3) = 140: 140 or 141 pixels along either dim still fit
    mask = as_mask(np.ones((141, 140), dtype=bool), like=image)
    assert mask_scale_of(mask) == pytest.approx({"y": 141 / SIZE, "x": 140 / SIZE})


# -- masks that carry their own coordinates -------------------------------------------

def test_dataarray_with_physical_coords_keeps_them(image):
    # a 1/4-resolution mask of a sub-region starting at image pixel (256, 512)
    size = 4 * PIXEL
    coords = {"y": 256 * PIXEL + np.arange(32) * size, "x": 512 * PIXEL + np.arange(64) * size}
    sub = xr.DataArray(np.ones((32, 64), dtype=bool), dims=("y", "x"), coords=coords)
    mask = as_mask(sub, like=image)
    assert mask_scale_of(mask) == {"y": 0.25, "x": 0.25}
    assert mask_origin(mask, image) == {"y": 256.0, "x": 512.0}
    np.testing.assert_allclose(mask.x.values, coords["x"])


def test_coords_outside_the_image_are_rejected(image):
    far = xr.DataArray(np.ones((4, 4), dtype=bool), dims=("y", "x"),
                       coords={"y": 1e6 + np.arange(4.0), "x": np.arange(4.0)})
    with pytest.raises(MaskError, match="do not overlap"):
        as_mask(far, like=image)


def test_tissue_mask_round_trips_through_as_mask(slide, image):
    tissue = tissue_mask(slide)
    again = as_mask(tissue, like=image)
    np.testing.assert_array_equal(again.x.values, tissue.x.values)
    assert mask_scale_of(again) == mask_scale_of(tissue)


def test_mask_file_without_metadata_spans_the_image(tmp_path, image):
    path = tmp_path / "mask.zarr"
    zarr.save_array(str(path), quadrant(128).astype(np.uint8), zarr_format=3)
    mask = as_mask(str(path), like=image)
    assert mask_scale_of(mask) == {"y": 1 / 8, "x": 1 / 8}
    assert mask_origin(mask, image) == {"y": 0.0, "x": 0.0}
    np.testing.assert_array_equal(mask.values, quadrant(128))


def test_roi_image_keeps_the_whole_image_rule(slide):
    roi = open_image(slide, roi="(0,256,512):(3,512,256)")
    mask = as_mask(quadrant(64), like=roi)
    # the mask spans the whole stored image, so it starts before the region
    assert mask_origin(mask, roi) == {"y": -256.0, "x": -512.0}
    assert mask_scale_of(mask) == {"y": 1 / 16, "x": 1 / 16}


# -- callables and labels --------------------------------------------------------------

def test_callable_gets_the_coarsest_level(image):
    seen = {}

    def darker(arr: np.ndarray) -> np.ndarray:
        seen["shape"] = arr.shape
        return arr.mean(axis=0) < 200

    mask = as_mask(darker, like=image)
    assert seen["shape"] == (3, SIZE // 4, SIZE // 4)  # level 2, image dim order (c, y, x)
    assert mask.shape == (SIZE // 4, SIZE // 4)
    assert mask_scale_of(mask) == {"y": 0.25, "x": 0.25}
    tissue = tissue_mask(image, mask_scale=1 / 4).values
    assert (mask.values == tissue).mean() > 0.9


def test_zarrdataset_generator_as_a_mask_function(image):
    gen = WSITissueMaskGenerator(mask_scale=1 / 4)  # of the level it gets: 1/16 overall
    mask = as_mask(gen, like=image)
    assert mask_scale_of(mask) == {"y": 1 / 16, "x": 1 / 16}
    tissue = tissue_mask(image).values
    assert (mask.values == tissue).mean() > 0.9
    assert gen.threshold_ is not None


def test_failing_callable_names_the_function(image):
    def broken(arr):
        raise RuntimeError("boom")

    with pytest.raises(MaskError, match="broken failed .*boom"):
        as_mask(broken, like=image)


def test_masks_from_labels(image):
    labels = np.zeros((64, 64), dtype=np.int32)
    labels[:16, :16] = 1
    labels[32:, 32:] = 3
    mask = mask_from_labels(labels, like=image)
    assert mask.dtype == bool and mask_scale_of(mask) == {"y": 1 / 16, "x": 1 / 16}
    np.testing.assert_array_equal(mask.values, labels > 0)
    only3 = mask_from_labels(xr.DataArray(labels, dims=("y", "x")), like=image, classes=[3])
    np.testing.assert_array_equal(only3.values, labels == 3)
    with pytest.raises(MaskError, match="classes"):
        mask_from_labels(labels, like=image, classes=[])


# -- default and empty masks -----------------------------------------------------------

def test_default_mask_is_one_true_pixel_per_chunk(image):
    mask = default_mask(image)
    assert mask.shape == (SIZE // 256, SIZE // 256)
    assert bool(mask.all())
    assert mask_scale_of(mask) == {"y": 1 / 256, "x": 1 / 256}
    assert mask_origin(mask, image) == {"y": 0.0, "x": 0.0}


def test_empty_masks_are_detected(image):
    assert mask_is_empty(as_mask(np.zeros((16, 16), dtype=bool), like=image))
    assert not mask_is_empty(as_mask(quadrant(16), like=image))
    assert mask_is_empty(np.zeros(3, dtype=bool))


def test_scale_factors_need_matching_dims(image):
    with pytest.raises(MaskError, match="as_mask"):
        mask_scale_factors(xr.DataArray(np.ones(4, dtype=bool), dims=("x",)), image)

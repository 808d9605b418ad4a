"""ImageBase / ImageLoader / ImageCollection: axes, ROIs, padded reads,
rescaling, the cache, generated masks."""

from __future__ import annotations

import numpy as np
import pytest

import zarrdask.compat as zds
from zarrdask.errors import AxesError, RoiError


def test_source_axes_to_target_axes_permute_drop_and_insert(tczyx):
    path, data = tczyx
    loader = zds.ImageLoader(path, "TCZYX", axes="ZYXC", roi="(0,0,0,0,0):(1,-1,1,-1,-1)")
    assert loader.axes == "ZYXC" and loader._drop_axes == "T" and loader._new_axes == ""
    assert list(loader.shape) == [1, 500, 500, 3]
    assert list(loader.chunk_size) == [1, 128, 128, 3]
    out = loader[{"Y": slice(10, 40), "X": slice(100, 164)}]
    expected = np.moveaxis(data[0, :, 0, 10:40, 100:164], 0, -1)[None]
    assert out.shape == (1, 30, 64, 3)
    np.testing.assert_array_equal(out, expected)


def test_new_axes_are_length_one(level, slide):
    loader = zds.ImageLoader(slide, "CYX", data_group="1", axes="TZYXC")
    assert loader._new_axes == "TZ" and list(loader.shape) == [1, 1, 512, 512, 3]
    out = loader[{"Y": slice(0, 8), "X": slice(0, 4)}]
    np.testing.assert_array_equal(out[0, 0], np.moveaxis(level(1)[:, :8, :4], 0, -1))


def test_roi_string_without_parentheses_and_tuple_of_slices_agree(slide):
    a = zds.ImageLoader(slide, "CYX", data_group="1", roi="0,100,50:-1,200,300")
    b = zds.ImageLoader(slide, "CYX", data_group="1",
                        roi=(slice(None), slice(100, 300), slice(50, 350)))
    assert list(a.shape) == list(b.shape) == [3, 200, 300]
    np.testing.assert_array_equal(a[slice(None)], b[slice(None)])


def test_reads_outside_the_image_are_zero_padded_to_the_requested_size(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1")
    out = loader[{"Y": slice(-8, 24), "X": slice(500, 532)}]
    assert out.shape == (3, 32, 32)
    np.testing.assert_array_equal(out[:, 8:, :12], level(1)[:, :24, 500:512])
    assert not out[:, :8].any() and not out[:, :, 12:].any()


def test_the_region_of_interest_bounds_reads(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1", roi="(0,10,20):(-1,200,300)")
    out = loader[{"Y": slice(190, 230), "X": slice(-5, 10)}]
    assert out.shape == (3, 40, 15)
    np.testing.assert_array_equal(out[:, :10, 5:], level(1)[:, 200:210, 20:30])
    assert not out[:, 10:].any() and not out[:, :, :5].any()


def test_padding_mode_is_used_for_out_of_bounds_reads(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1")
    loader._padding_mode = "edge"
    out = loader[{"Y": slice(-4, 4), "X": slice(0, 4)}]
    np.testing.assert_array_equal(out[:, :4], np.repeat(level(1)[:, :1, :4], 4, axis=1))


def test_a_padded_read_never_changes_later_reads(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1")
    padded = loader[{"Y": slice(-64, 64), "X": slice(-64, 64)}]
    assert not padded[:, :64].any()
    again = loader[{"Y": slice(0, 64), "X": slice(0, 64)}]
    np.testing.assert_array_equal(again, level(1)[:, :64, :64])
    assert loader._iscached((slice(0, 3), slice(0, 64), slice(0, 64)))


def test_returned_arrays_are_copies(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1")
    first = loader[{"Y": slice(0, 16), "X": slice(0, 16)}]
    first[:] = 0
    np.testing.assert_array_equal(loader[{"Y": slice(0, 16), "X": slice(0, 16)}],
                                  level(1)[:, :16, :16])


def test_rescale_sets_scale_and_reads_take_reference_pixels(slide, level):
    loader = zds.ImageLoader(slide, "CYX", data_group="1")
    assert loader.scale == {"C": 1.0, "Y": 1.0, "X": 1.0}
    loader.rescale([1024, 1024], "YX")
    assert loader.scale == {"C": 1.0, "Y": 0.5, "X": 0.5}
    out = loader[{"Y": slice(256, 512), "X": slice(0, 128)}]
    np.testing.assert_array_equal(out, level(1)[:, 128:256, :64])


def test_numpy_input_and_int_index(level):
    data = level(1)[0]
    loader = zds.ImageLoader(data, "YX")
    np.testing.assert_array_equal(loader[(5, slice(2, 9))], data[5:6, 2:9])


def test_dropping_an_axis_longer_than_one_fails_naming_the_fix(slide):
    with pytest.raises(AxesError, match="roi"):
        zds.ImageLoader(slide, "CYX", data_group="1", axes="YX")


def test_wrong_number_of_source_axes_and_bad_roi_fail(slide):
    with pytest.raises(AxesError, match="source_axes='YX'"):
        zds.ImageLoader(slide, "YX", data_group="1")
    with pytest.raises(RoiError, match="2 axes"):
        zds.ImageLoader(slide, "CYX", data_group="1", roi="(0,0):(10,10)")
    with pytest.raises(RoiError, match="outside"):
        zds.ImageLoader(slide, "CYX", data_group="1", roi="(0,0,600):(-1,10,10)")


def test_image_func_result_is_read_at_its_own_scale(slide, level):
    gen = zds.WSITissueMaskGenerator(mask_scale=1 / 8, min_size=2, area_threshold=4, axes="YX")
    mask = zds.ImageLoader(slide, "CYX", data_group="1", axes="YXC", image_func=gen)
    assert mask.axes == "YX" and list(mask.shape) == [64, 64]
    mask.rescale([1024, 1024], "YX")
    assert mask.scale == {"Y": 1 / 16, "X": 1 / 16}
    expected = gen(np.moveaxis(level(1), 0, -1))
    np.testing.assert_array_equal(mask[slice(None)], expected)
    np.testing.assert_array_equal(mask[{"Y": slice(160, 320), "X": slice(0, 64)}],
                                  expected[10:20, 0:4])


def test_collection_adds_a_default_all_true_mask_of_one_pixel_per_chunk(slide):
    collection = zds.ImageCollection({"images": {"filename": slide, "data_group": "0",
                                                 "source_axes": "CYX"}})
    assert collection.reference_mode == "images" and collection.mask_mode == "masks"
    mask = collection.collection["masks"]
    assert type(mask) is zds.ImageBase
    assert list(mask.shape) == [4, 4] and mask.axes == "YX"
    assert mask.scale == {"Y": 4 / 1024, "X": 4 / 1024}
    assert mask[slice(None)].all()


def test_reset_scales_matches_modalities_to_the_reference(slide, level):
    labels = np.arange(256 * 256, dtype=np.int32).reshape(256, 256)
    collection = zds.ImageCollection({
        "images": {"filename": slide, "data_group": "0", "source_axes": "CYX"},
        "labels": {"filename": labels, "source_axes": "YX"},
        "masks": {"filename": np.ones((2, 2), bool), "source_axes": "YX"},
    })
    assert collection.mask_mode == "masks"
    assert collection.collection["labels"].scale == {"Y": 0.25, "X": 0.25}
    patches = collection[{"Y": slice(512, 768), "X": slice(256, 512)}]
    np.testing.assert_array_equal(patches["images"], level(0)[:, 512:768, 256:512])
    np.testing.assert_array_equal(patches["labels"], labels[128:192, 64:128])
    assert patches["masks"].shape == (1, 1) and patches["masks"].all()
    collection.collection["labels"].rescale([512, 512], "YX")
    assert collection.collection["labels"].scale["Y"] == 0.5
    collection.reset_scales()
    assert collection.collection["labels"].scale["Y"] == 0.25


def test_image2array_is_the_io_function_with_zarrdatasets_result_types(tmp_path):
    import zarr

    from zarrdask.io.image2array import image2array

    path = str(tmp_path / "a.zarr")
    zarr.create_array(path, data=np.arange(12, dtype=np.uint8).reshape(3, 4), chunks=(2, 2))
    ours, _ = zds.image2array(path)
    theirs, _ = image2array(path)
    assert ours.chunks == theirs.chunks == (2, 2)
    np.testing.assert_array_equal(ours[:], theirs[:])


def test_sixteen_bit_pil_images_keep_their_dtype(tmp_path):
    from PIL import Image

    data = (np.arange(40 * 30, dtype=np.uint16).reshape(40, 30) * 50)
    path = str(tmp_path / "deep.png")
    Image.fromarray(data).save(path)
    loader = zds.ImageLoader(path, "YX")
    out = loader[{"Y": slice(0, 40), "X": slice(0, 30)}]
    assert out.dtype == np.uint16
    np.testing.assert_array_equal(out, data)

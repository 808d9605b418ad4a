"""Pure geometry: table rows to read boxes per modality, padding, output dims."""

from __future__ import annotations

import numpy as np
import pytest

from zarrdask.dataset.boxes import (
    Geometry,
    chunk_ranges,
    clip_box,
    modality_boxes,
    pad_array,
    read_level_starts,
    round_half_up,
    to_output_dims,
)
from zarrdask.errors import DatasetError, TableError


def _entry(shape, scale, origin=0.0, scale0=None, chunks=64, roi=None, dims=("c", "y", "x")):
    sizes = dict(zip(("y", "x"), shape, strict=True))
    return {
        "dims": list(dims),
        "shape": {"c": 3, **sizes},
        "chunks": {"c": 3, "y": chunks, "x": chunks},
        "dtype": "uint8",
        "roi": roi or {},
        "scale": {"y": scale, "x": scale},
        "origin": {"y": origin, "x": origin},
        "scale0": {"y": scale0 or scale, "x": scale0 or scale},
        "origin0": {"y": 0.0, "x": 0.0},
    }


def test_round_half_up_is_not_bankers_rounding_and_absorbs_float_noise():
    assert round_half_up(np.array([0.5, 1.5, 2.5, -0.5, 31.999999999])).tolist() == [1, 2, 3, 0, 32]


def test_level1_reads_map_level0_positions_to_half():
    entry = _entry((512, 512), scale=1.0, scale0=0.5)
    starts = read_level_starts(np.array([[128, 256], [0, 64]]), entry, ["y", "x"])
    assert starts.tolist() == [[64, 128], [0, 32]]


def test_half_resolution_labels_get_half_size_boxes_of_the_same_region():
    image = Geometry.from_entry(_entry((1024, 1024), scale=0.5), ["y", "x"])
    labels = Geometry.from_entry(_entry((512, 512), scale=1.0), ["y", "x"])
    start, size = modality_boxes(np.array([[128, 64]]), [64, 64], [0, 0], image, labels)
    assert start.tolist() == [[64, 32]]
    assert size.tolist() == [32, 32]
    # with padding the physical box grows on both sides, in both modalities
    start, size = modality_boxes(np.array([[128, 64]]), [64, 64], [8, 8], image, labels)
    assert start.tolist() == [[60, 28]] and size.tolist() == [40, 40]
    start, size = modality_boxes(np.array([[128, 64]]), [64, 64], [8, 8], image, image)
    assert start.tolist() == [[120, 56]] and size.tolist() == [80, 80]


def test_origin_offsets_shift_the_modality_box():
    image = Geometry.from_entry(_entry((100, 100), scale=1.0), ["y", "x"])
    shifted = Geometry.from_entry(_entry((100, 100), scale=1.0, origin=10.0), ["y", "x"])
    start, size = modality_boxes(np.array([[30, 40]]), [16, 16], [0, 0], image, shifted)
    assert start.tolist() == [[20, 30]] and size.tolist() == [16, 16]


def test_geometry_uses_roi_as_the_readable_region_and_rejects_missing_grid_dims():
    geo = Geometry.from_entry(_entry((100, 80), scale=1.0, roi={"y": [10, 90]}), ["y", "x"])
    assert geo.valid_start == (0, 10, 0) and geo.valid_stop == (3, 90, 80)
    assert geo.grid_axes == (1, 2)
    with pytest.raises(TableError, match="grid dims"):
        Geometry.from_entry(_entry((100, 80), scale=1.0), ["z", "y", "x"])


def test_clip_box_splits_reads_and_pads_and_chunk_ranges_cover_it():
    read_lo, read_hi, widths = clip_box([0, -5, 90], [3, 20, 110], [0, 0, 0], [3, 100, 100])
    assert (read_lo, read_hi, widths) == ([0, 0, 90], [3, 20, 100], [(0, 0), (5, 0), (0, 10)])
    assert clip_box([0, 100], [3, 120], [0, 0], [3, 100]) is None
    assert chunk_ranges([0, 60], [3, 130], [3, 64]) == [range(0, 1), range(0, 3)]


def test_pad_array_zeros_and_reflect_match_numpy():
    a = np.arange(12).reshape(3, 4)
    assert pad_array(a, [(1, 0), (0, 2)], "constant").tolist() == np.pad(a, [(1, 0), (0, 2)]).tolist()
    np.testing.assert_array_equal(pad_array(a, [(2, 0), (0, 1)], "reflect"),
                                  np.pad(a, [(2, 0), (0, 1)], mode="reflect"))
    assert pad_array(a, [(0, 0), (0, 0)], "reflect") is a


def test_output_dims_transposes_inserts_and_refuses_dropping_data():
    a = np.zeros((3, 4, 5))
    assert to_output_dims(a, "cyx", "yxc").shape == (4, 5, 3)
    assert to_output_dims(a, "cyx", "zcyx").shape == (1, 3, 4, 5)
    assert to_output_dims(np.zeros((1, 4, 5)), "cyx", "yx").shape == (4, 5)
    with pytest.raises(DatasetError, match="leaves out"):
        to_output_dims(a, "cyx", "yx")


@pytest.mark.parametrize("mode", ["edge", "reflect", "symmetric", "wrap"])
def test_index_maps_equal_numpy_pad_of_the_whole_region_even_for_wide_pads(mode):
    from zarrdask.dataset.boxes import index_map

    region = np.arange(10, 17)  # readable [10, 17)
    padded = np.pad(region, (25, 30), mode=mode)  # padded[k] is position k - 25 + 10
    for lo, hi in [(-15, 5), (12, 15), (0, 47), (14, 40)]:
        got = region[index_map(lo, hi, 10, 17, mode) - 10]
        np.testing.assert_array_equal(got, padded[lo - 10 + 25:hi - 10 + 25])

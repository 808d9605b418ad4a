"""zarrdataset's helper functions, exported by zarrdask with the same
signatures and results: the documented examples of the seed API
(``seed/zarrdataset-api.rst``) and the semantics around them."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import zarr

import zarrdask
from zarrdask import (
    connect_s3,
    isconsolidated,
    map_axes_order,
    parse_metadata,
    parse_rois,
    scale_coords,
    select_axes,
    translate2roi,
)
from zarrdask.errors import DataGroupError, RoiError
from zarrdask.io.image2array import image2array

ALL = slice(None)


# --------------------------------------------------------------------------
# parse_metadata: the three documented examples


def test_parse_metadata_example_1_group_axes_and_one_roi():
    parsed = parse_metadata("test_file.zarr;0/0;TCZYX:YXC;(0,0,0,0,0):(1,-1,1,-1,-1)", "YX")
    assert parsed == [
        {
            "filename": "test_file.zarr",
            "data_group": "0/0",
            "source_axes": "TCZYX",
            "axes": "YXC",
            # index 0 of T and Z, every C, Y and X
            "roi": (slice(0, 1), ALL, slice(0, 1), ALL, ALL),
        }
    ]


def test_parse_metadata_example_2_two_rois_share_the_rest():
    parsed = parse_metadata("test_file.zarr;1;CYX;(0,0,0):(-1,4,3);(0,5,5):(-1,2,2)", "YX")
    assert [p["roi"] for p in parsed] == [
        (ALL, slice(0, 4), slice(0, 3)),
        (ALL, slice(5, 7), slice(5, 7)),
    ]
    for p in parsed:
        assert p["filename"] == "test_file.zarr"
        assert p["data_group"] == "1"
        assert p["source_axes"] == "CYX"
        # no target order in the string: the default target is the default source axes
        assert p["axes"] == "YX"


def test_parse_metadata_example_3_empty_group_and_no_roi():
    parsed = parse_metadata("test_array.zarr;;CYX:YXC", "YX", default_data_group="7")
    assert parsed == [
        {
            "filename": "test_array.zarr",
            "data_group": "7",  # an empty field takes the default
            "source_axes": "CYX",
            "axes": "YXC",
            "roi": None,  # the whole array
        }
    ]


# --------------------------------------------------------------------------
# parse_metadata: defaults and override_meta


def test_parse_metadata_plain_filename_takes_every_default():
    rois = [(slice(0, 10), slice(5, 9))]
    parsed = parse_metadata("slides/img.ome.tiff", "YXC", default_data_group="0/1",
                            default_axes="CYX", default_rois=rois)
    assert parsed == [
        {"filename": "slides/img.ome.tiff", "data_group": "0/1", "source_axes": "YXC",
         "axes": "CYX", "roi": rois[0]}
    ]


def test_parse_metadata_default_axes_fall_back_to_default_source_axes():
    (parsed,) = parse_metadata("img.png", "YXC")
    assert parsed["source_axes"] == parsed["axes"] == "YXC"
    assert parsed["data_group"] is None and parsed["roi"] is None


def test_parse_metadata_string_wins_unless_override_meta():
    name = "test_file.zarr;0/0;TCZYX:YXC;(0,0,0,0,0):(1,-1,1,-1,-1)"
    defaults = {"default_data_group": "1", "default_axes": "CYX",
                "default_rois": (ALL, slice(2, 3), ALL, ALL, ALL)}
    (kept,) = parse_metadata(name, "CZYX", **defaults)
    assert (kept["data_group"], kept["source_axes"], kept["axes"]) == ("0/0", "TCZYX", "YXC")
    assert kept["roi"] == (slice(0, 1), ALL, slice(0, 1), ALL, ALL)

    (overridden,) = parse_metadata(name, "CZYX", override_meta=True, **defaults)
    assert overridden == {
        "filename": "test_file.zarr",
        "data_group": "1",
        "source_axes": "CZYX",
        "axes": "CYX",
        "roi": (ALL, slice(2, 3), ALL, ALL, ALL),  # a single tuple ROI becomes one ROI
    }


def test_parse_metadata_override_meta_keeps_values_without_a_default():
    name = "test_file.zarr;1;CYX;(0,0,0):(-1,4,3);(0,5,5):(-1,2,2)"
    parsed = parse_metadata(name, "YX", default_axes="YXC", override_meta=True)
    # data group and ROIs have no default: the string's values stay
    assert [p["data_group"] for p in parsed] == ["1", "1"]
    assert [p["roi"] for p in parsed] == [(ALL, slice(0, 4), slice(0, 3)),
                                         (ALL, slice(5, 7), slice(5, 7))]
    # source and target axes have defaults: they win
    assert {(p["source_axes"], p["axes"]) for p in parsed} == {("YX", "YXC")}


def test_parse_metadata_filename_may_hold_semicolons_and_dots():
    (parsed,) = parse_metadata("run;2/v1.5/scan.zarr;0;CYX", "YX")
    assert parsed["filename"] == "run;2/v1.5/scan.zarr"
    assert parsed["data_group"] == "0" and parsed["source_axes"] == "CYX"


def test_parse_metadata_passes_non_string_sources_through():
    data = np.zeros((3, 4))
    (parsed,) = parse_metadata(data, "YX", default_rois=[(slice(0, 2), ALL)])
    assert parsed["filename"] is data
    assert parsed["roi"] == (slice(0, 2), ALL)


# --------------------------------------------------------------------------
# parse_rois


def test_parse_rois_lengths_and_open_ends():
    assert parse_rois(["(0,5,5):(-1,2,2)", "(3,0,2):(0,4,-1)"]) == [
        (ALL, slice(5, 7), slice(5, 7)),
        # length <= 0: from the start to the end (whole axis when start is 0)
        (slice(3, None), slice(0, 4), slice(2, None)),
    ]


def test_parse_rois_accepts_a_single_string_spaces_and_no_colon():
    assert parse_rois("( 1, 2 ):( 3, 4 )") == [(slice(1, 4), slice(2, 6))]
    assert parse_rois(["everything"]) == [ALL]
    assert parse_rois([]) == []


def test_parse_rois_rejects_malformed_rois_with_a_usable_message():
    with pytest.raises(RoiError, match="start values but"):
        parse_rois("(0,0,0):(1,1)")
    with pytest.raises(RoiError, match="integers"):
        parse_rois("(0,a):(1,1)")


# --------------------------------------------------------------------------
# map_axes_order and select_axes


@pytest.mark.parametrize(
    ("source", "target", "expected"),
    [
        ("TCZYX", "YXC", [0, 2, 3, 4, 1]),
        ("CYX", "YXC", [1, 2, 0]),
        ("YXC", "CYX", [2, 0, 1]),
        ("TCZYX", "YX", [0, 1, 2, 3, 4]),
        ("XYZCT", "ZYX", [3, 4, 2, 1, 0]),
        ("CYX", "TCZYX", [0, 1, 2]),  # target axes the source lacks are skipped
        ("YX", "YX", [0, 1]),
    ],
)
def test_map_axes_order_puts_unused_axes_first_in_source_order(source, target, expected):
    order = map_axes_order(source, target)
    assert order == expected
    transposed = "".join(source[i] for i in order)
    kept = [a for a in target if a in source]
    assert transposed.endswith("".join(kept))


def test_map_axes_order_default_target_is_yx():
    assert map_axes_order("CZYX") == [0, 1, 2, 3]
    assert map_axes_order("XYC") == [2, 1, 0]


def test_map_axes_order_is_deterministic_across_hash_seeds():
    # zarrdataset 0.2 ordered the unused axes through a set of strings, whose
    # order changes with PYTHONHASHSEED; every process must agree here.
    code = (
        "from zarrdask import map_axes_order as m;"
        "print(m('TCZYX','YXC'), m('ABCDEFYX','XY'), m('QWERTYX','Y'))"
    )
    outputs = set()
    for seed in ("0", "1", "2", "3", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              env=env, check=True, timeout=120)
        outputs.add(done.stdout.strip())
    assert outputs == {"[0, 2, 3, 4, 1] [0, 1, 2, 3, 4, 5, 7, 6] [0, 1, 2, 3, 4, 6, 5]"}
    # and repeated calls in this process
    assert {tuple(map_axes_order("ABCDEFYX", "XY")) for _ in range(50)} == {
        (0, 1, 2, 3, 4, 5, 7, 6)
    }


def test_select_axes_fixes_given_axes_and_keeps_the_rest():
    slices, unfixed = select_axes("TCZYX", {"T": slice(0, 1), "Z": slice(2, 3),
                                           "Y": slice(None), "Q": slice(0, 1)})
    assert slices == (slice(0, 1), ALL, slice(2, 3), ALL, ALL)
    # an axis given slice(None) is not fixed; letters absent from the source are ignored
    assert unfixed == "CYX"
    data = np.arange(2 * 3 * 4 * 5 * 6).reshape(2, 3, 4, 5, 6)
    assert data[slices].shape == (1, 3, 1, 5, 6)


def test_select_axes_open_ended_slices_count_as_fixed():
    slices, unfixed = select_axes("CYX", {"Y": slice(4, None), "X": slice(None, 2)})
    assert slices == (ALL, slice(4, None), slice(None, 2))
    assert unfixed == "C"


# --------------------------------------------------------------------------
# scale_coords and translate2roi


def test_scale_coords_rounds_starts_down_and_stops_up():
    assert scale_coords([slice(3, 7), slice(0, 5)], 0.5) == (slice(1, 4), slice(0, 3))
    assert scale_coords([slice(3, 7, 2)], 2) == (slice(6, 14, 2),)  # the step is kept


def test_scale_coords_every_selection_form_and_per_axis_scales():
    selection = [slice(4, 8), range(2, 6), (3, 9), 5, None, slice(None, 9)]
    scaled = scale_coords(selection, [0.25, 2, 1 / 3, 0.5, 4, 2])
    # a range keeps its step (1), as a slice does
    assert scaled == (slice(1, 2), slice(4, 12, 1), slice(1, 3), slice(2, 3), ALL, ALL)


def test_scale_coords_scaled_box_covers_the_original_region():
    rng = np.random.default_rng(0)
    for _ in range(200):
        start = int(rng.integers(0, 1000))
        stop = start + int(rng.integers(1, 500))
        s = float(rng.choice([0.5, 0.25, 1 / 3, 0.1]))
        (sl,) = scale_coords([slice(start, stop)], s)
        assert sl.start <= start * s and sl.stop >= stop * s
        assert sl.stop - sl.start <= (stop - start) * s + 2


def test_scale_coords_rejects_unknown_selections():
    with pytest.raises(ValueError, match="not supported"):
        scale_coords(["0:4"], 1.0)


def test_translate2roi_offsets_and_clips_to_the_roi():
    roi = (ALL, slice(10, 20), slice(5, 8))
    # Y relative to the ROI, X open-ended (up to the ROI's stop), C not indexed
    assert translate2roi({"Y": slice(2, 5), "X": slice(0, None)}, roi, "CYX", "YXC") == (
        ALL, slice(12, 15), slice(5, 8)
    )
    # a patch running past the ROI is clipped at its stop
    assert translate2roi({"Y": slice(8, 15), "X": slice(1, 2)}, roi, "CYX", "YXC") == (
        ALL, slice(18, 20), slice(6, 7)
    )


def test_translate2roi_axes_outside_the_target_keep_the_roi():
    roi = (slice(0, 1), ALL, slice(3, 4), ALL, ALL)
    index = {"Y": slice(0, 16), "X": slice(16, 32), "Z": slice(0, 2)}  # Z is not in axes
    assert translate2roi(index, roi, "TCZYX", "YXC") == (
        slice(0, 1), ALL, slice(3, 4), slice(0, 16), slice(16, 32)
    )
    # a whole-axis index on a whole-axis ROI stays a whole-axis slice
    assert translate2roi({"Y": ALL}, (ALL, ALL), "YX", "YX") == (ALL, ALL)


def test_translate2roi_reads_the_same_pixels_as_roi_then_index():
    data = np.arange(3 * 40 * 30).reshape(3, 40, 30)
    roi = (ALL, slice(10, 30), slice(4, 24))
    index = {"Y": slice(3, 9), "X": slice(2, 12)}
    direct = data[roi][:, 3:9, 2:12]
    assert np.array_equal(data[translate2roi(index, roi, "CYX", "YX")], direct)


# --------------------------------------------------------------------------
# isconsolidated and connect_s3


def _small_group(path: Path, zarr_format: int) -> str:
    group = zarr.open_group(path, mode="w", zarr_format=zarr_format)
    group.create_array("0", shape=(8, 8), chunks=(4, 4), dtype="uint8")
    return str(path)


@pytest.mark.parametrize("zarr_format", [2, 3])
def test_isconsolidated_local_stores(tmp_path, zarr_format):
    plain = _small_group(tmp_path / "plain.zarr", zarr_format)
    consolidated = _small_group(tmp_path / "consolidated.zarr", zarr_format)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr warns that v3 consolidation is not in the spec
        zarr.consolidate_metadata(consolidated)
    assert isconsolidated(plain) is False
    assert isconsolidated(consolidated) is True
    assert isconsolidated(Path(consolidated)) is True
    assert isconsolidated(consolidated + "/") is True
    assert isconsolidated(zarr.open_group(consolidated, mode="r")) is True
    assert isconsolidated(zarr.open_group(plain, mode="r")) is False


def test_isconsolidated_false_for_non_zarr_and_arrays(tmp_path):
    assert isconsolidated(str(tmp_path)) is False
    assert isconsolidated(str(tmp_path / "missing.zarr")) is False
    arr = zarr.create_array(tmp_path / "a.zarr", shape=(4,), dtype="i4")
    assert isconsolidated(arr) is False


def test_connect_s3_is_none_for_local_paths(tmp_path):
    assert connect_s3(str(tmp_path / "img.zarr")) is None
    assert connect_s3("relative/img.zarr") is None
    # a local folder whose name starts with "s3"/"http" is still local
    assert connect_s3("s3data/img.zarr") is None
    assert connect_s3("https_mirror/img.zarr") is None
    assert connect_s3(np.zeros(3)) is None


def test_connect_s3_names_bucket_and_endpoint_without_connecting():
    s3 = connect_s3("https://s3.example.org:9000/my-bucket/slides/a.zarr")
    assert s3["bucket_name"] == "my-bucket"
    assert s3["endpoint_url"] == "https://s3.example.org:9000"
    assert s3["s3"] is not None
    plain = connect_s3("s3://other-bucket/key.zarr")
    assert plain["bucket_name"] == "other-bucket"
    assert plain["endpoint_url"] is None


# --------------------------------------------------------------------------
# image2array


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> dict:
    """A zarr v3 OME-NGFF pyramid, a plain zarr v2 group, a tiled TIFF and a PNG."""
    import tifffile
    from PIL import Image

    from zarrdask.datasets import write_synthetic_slide

    root = tmp_path_factory.mktemp("image2array")
    rng = np.random.default_rng(3)
    out = {"rgb": rng.integers(0, 255, (70, 90, 3), dtype=np.uint8)}
    out["slide"] = write_synthetic_slide(root / "slide.zarr", size=256, chunk=64, levels=2,
                                         seed=4, zarr_format=3)
    group = zarr.open_group(root / "plain.zarr", mode="w", zarr_format=2)
    a = group.create_array("a", shape=(30, 40), chunks=(16, 16), dtype="u2")
    a[:] = np.arange(1200, dtype="u2").reshape(30, 40)
    group.create_array("b", shape=(5,), chunks=(5,), dtype="u1")
    out["plain"] = str(root / "plain.zarr")
    tifffile.imwrite(root / "img.tif", out["rgb"], tile=(32, 32), photometric="rgb")
    out["tiff"] = str(root / "img.tif")
    Image.fromarray(out["rgb"]).save(root / "img.png")
    out["png"] = str(root / "img.png")
    return out


def test_image2array_zarr_path_gives_the_zarr_array(sources):
    arr, store = image2array(sources["slide"])
    raw = zarr.open_array(sources["slide"] + "/0", mode="r")
    assert isinstance(arr, zarr.Array) and store is None
    assert arr.shape == raw.shape == (3, 256, 256) and arr.chunks == (3, 64, 64)
    np.testing.assert_array_equal(arr[:, 10:20, 30:50], raw[:, 10:20, 30:50])
    level1, _ = image2array(sources["slide"], data_group="1")
    assert level1.shape == (3, 128, 128)
    same, _ = image2array(sources["slide"], data_group=1, zarr_store=object())
    assert same.shape == (3, 128, 128)  # int groups work; zarr_store is ignored


def test_image2array_zarr_group_and_array_objects(sources):
    group = zarr.open_group(sources["plain"], mode="r")
    arr, store = image2array(group, data_group="a")
    assert isinstance(arr, zarr.Array) and store is None
    np.testing.assert_array_equal(arr[:], np.arange(1200).reshape(30, 40))
    opened = zarr.open_array(sources["plain"] + "/b", mode="r")
    assert image2array(opened, data_group="ignored") == (opened, None)
    with pytest.raises(DataGroupError, match="data_group"):
        image2array(group)  # two arrays and no multiscales: which one?


def test_image2array_tiff_gives_a_zarr_array_and_its_store(sources):
    arr, store = image2array(sources["tiff"])
    assert isinstance(arr, zarr.Array)
    assert arr.shape == (70, 90, 3) and arr.chunks == (32, 32, 3)
    assert type(store).__name__ == "ZarrTiffStore"
    np.testing.assert_array_equal(arr[:], sources["rgb"])
    store.close()


def test_image2array_pil_and_numpy(sources):
    arr, store = image2array(sources["png"])
    assert isinstance(arr, np.ndarray) and store is None
    np.testing.assert_array_equal(arr, sources["rgb"])
    data = np.ones((2, 3), dtype=np.float32)
    got, store = image2array(data)
    assert got is data and store is None


def test_image2array_is_exported_at_top_level():
    # the top-level name is zarrdataset's: zarrdask.io's function after a data_group
    # check, numpy results as one-chunk zarr arrays (docs/differences.md)
    import zarrdask.compat

    assert zarrdask.image2array is zarrdask.compat.image2array
    data = np.ones((2, 3), dtype=np.float32)
    arr, store = zarrdask.image2array(data)
    assert isinstance(arr, zarr.Array) and arr.chunks == (2, 3) and store is None
    np.testing.assert_array_equal(arr[:], image2array(data)[0])


def test_every_seed_helper_is_exported():
    for name in ("parse_metadata", "parse_rois", "map_axes_order", "select_axes",
                 "scale_coords", "translate2roi", "isconsolidated", "connect_s3"):
        assert name in zarrdask.__all__ and callable(getattr(zarrdask, name))

"""Patch-grid geometry: parameters, positions, chunk ids, coverage, keep rule."""

from __future__ import annotations

import itertools
import json
import math
import pickle
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zarrdask.errors import GridParameterError, MaskError
from zarrdask.grid import (
    GridSpec,
    axis_starts,
    chunk_ids,
    count_positions,
    grid_starts_in_box,
    keep_patches,
    normalize_grid_params,
    order_rows,
    window_coverage,
)

FAST = settings(max_examples=80, deadline=None)


def _spec(dims, patch, stride=None, *, allow_incomplete=False, min_area=1.0):
    stride = patch if stride is None else stride
    return GridSpec(dims=tuple(dims), patch=dict(zip(dims, patch, strict=True)),
                    stride=dict(zip(dims, stride, strict=True)), pad={d: 0 for d in dims},
                    min_area=min_area, allow_incomplete=allow_incomplete)


# -- normalize_grid_params --------------------------------------------------------

def test_int_patch_applies_to_every_present_spatial_axis():
    spec = normalize_grid_params(256, image_dims=("c", "y", "x"), image_shape=(3, 1000, 900))
    assert spec.dims == ("y", "x")
    assert spec.patch == {"y": 256, "x": 256}
    assert spec.stride == spec.patch, "stride=None must default to the patch size"
    assert spec.pad == {"y": 0, "x": 0}, "pad=None must default to 0"
    assert spec.min_area == 1.0 and spec.allow_incomplete is False


def test_z_of_size_one_gets_patch_one():
    spec = normalize_grid_params(64, stride=32, pad=8, image_dims=("t", "c", "z", "y", "x"),
                                 image_shape=(1, 3, 1, 500, 500))
    assert spec.dims == ("z", "y", "x")
    assert spec.patch == {"z": 1, "y": 64, "x": 64}
    assert spec.stride == {"z": 1, "y": 32, "x": 32}
    assert spec.pad == {"z": 0, "y": 8, "x": 8}


def test_3d_image_uses_z():
    spec = normalize_grid_params(16, image_dims=("z", "y", "x"), image_shape=(40, 100, 100))
    assert spec.patch == {"z": 16, "y": 16, "x": 16}


def test_sequence_follows_spatial_axes_order():
    spec = normalize_grid_params((4, 128, 64), stride=(2, 64, 32), pad=(0, 1, 2),
                                 image_dims=("z", "y", "x"), image_shape=(10, 300, 300))
    assert spec.patch == {"z": 4, "y": 128, "x": 64}
    assert spec.stride == {"z": 2, "y": 64, "x": 32}
    assert spec.pad == {"z": 0, "y": 1, "x": 2}
    spec_yx = normalize_grid_params((128, 64), spatial_axes="YX",
                                    image_dims=("y", "x"), image_shape=(300, 300))
    assert spec_yx.patch == {"y": 128, "x": 64}


def test_dict_keys_in_either_case_and_missing_axes():
    spec = normalize_grid_params({"Y": 100, "x": 50}, stride={"y": 10}, pad={"X": 3},
                                 image_dims=("z", "y", "x"), image_shape=(7, 400, 400))
    assert spec.patch == {"z": 1, "y": 100, "x": 50}, "an axis missing from a dict gets patch 1"
    assert spec.stride == {"z": 1, "y": 10, "x": 50}, "a missing stride defaults to the patch"
    assert spec.pad == {"z": 0, "y": 0, "x": 3}


def test_dict_ignores_known_non_spatial_axes():
    spec = normalize_grid_params({"C": 3, "Y": 8, "X": 8}, image_dims=("c", "y", "x"),
                                 image_shape=(3, 20, 20))
    assert spec.patch == {"y": 8, "x": 8}


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"patch_size": 0}, ["patch_size", ">= 1"]),
        ({"patch_size": -3}, ["patch_size"]),
        ({"patch_size": 8, "stride": 0}, ["stride", ">= 1"]),
        ({"patch_size": 8, "stride": (4, -1)}, ["stride"]),
        ({"patch_size": 8, "pad": -1}, ["pad", ">= 0"]),
        ({"patch_size": (8, 8, 8)}, ["patch_size", "spatial_axes", "one value"]),
        ({"patch_size": 8, "stride": (1, 2, 3)}, ["stride", "spatial_axes"]),
        ({"patch_size": {"Q": 8}}, ["patch_size", "unknown axis", "'Q'"]),
        ({"patch_size": 8, "pad": {"w": 1}}, ["pad", "unknown axis"]),
        ({"patch_size": 8, "min_area": -0.5}, ["min_area", ">= 0"]),
        ({"patch_size": 8, "min_area": float("nan")}, ["min_area"]),
        ({"patch_size": 2.5}, ["patch_size", "integer"]),
        ({"patch_size": "256"}, ["patch_size", "string"]),
        ({"patch_size": 8, "spatial_axes": "ZZ"}, ["spatial_axes", "repeats"]),
        ({"patch_size": 8, "spatial_axes": "Z"}, ["spatial_axes", "none of"]),
    ],
)
def test_bad_parameters_raise_a_message_naming_the_argument(kwargs, words):
    kwargs = {"spatial_axes": "YX", **kwargs}
    with pytest.raises(GridParameterError) as info:
        normalize_grid_params(image_dims=("t", "y", "x"), image_shape=(1, 64, 64), **kwargs)
    message = str(info.value)
    for word in words:
        assert word in message, f"{word!r} missing from the error message {message!r}"
    assert isinstance(info.value, ValueError), "GridParameterError must also be a ValueError"


def test_spec_round_trips_through_json_and_pickle():
    spec = normalize_grid_params((4, 32, 16), stride=(2, 16, 16), pad=1, min_area=0.25,
                                 allow_incomplete_patches=True, image_dims=("z", "y", "x"),
                                 image_shape=(9, 99, 77))
    back = GridSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    assert hash(back) == hash(spec), "equal specs must hash equally"
    assert pickle.loads(pickle.dumps(spec)) == spec
    with pytest.raises(GridParameterError, match="lacks the key"):
        GridSpec.from_dict({"dims": ["y"]})


# -- positions ------------------------------------------------------------------

def _brute_starts(size, patch, stride, allow_incomplete):
    return [s for s in range(0, size, stride) if allow_incomplete or s + patch <= size]


@FAST
@given(size=st.integers(0, 400), patch=st.integers(1, 120), stride=st.integers(1, 150),
       allow_incomplete=st.booleans())
def test_counts_match_the_closed_form_and_enumeration(size, patch, stride, allow_incomplete):
    starts = axis_starts(size, patch, stride, allow_incomplete=allow_incomplete)
    n = count_positions(size, patch, stride, allow_incomplete=allow_incomplete)
    assert starts.dtype == np.int64
    assert starts.tolist() == _brute_starts(size, patch, stride, allow_incomplete)
    assert n == len(starts)
    if allow_incomplete:
        assert n == math.ceil(size / stride)
        assert np.all(starts < size)
        if stride <= patch:
            covered = np.zeros(size, bool)
            for s in starts:
                covered[s:s + patch] = True
            assert covered.all(), "with stride <= patch, incomplete patches cover every pixel"
    else:
        assert n == ((size - patch) // stride + 1 if size >= patch else 0)
        assert np.all(starts + patch <= size), "no patch may cross the border"


def test_stride_smaller_than_patch_never_crosses_the_border():
    # zarrdataset 0.2.2 placed floor(100 / 32) = 3 patches here, the last one at 64..128.
    assert axis_starts(100, 64, 32, allow_incomplete=False).tolist() == [0, 32]
    assert axis_starts(100, 64, 32, allow_incomplete=True).tolist() == [0, 32, 64, 96]
    assert count_positions(10, 20, 5, allow_incomplete=False) == 0
    assert count_positions(10, 20, 5, allow_incomplete=True) == 2


def test_bad_axis_arguments_raise():
    with pytest.raises(GridParameterError):
        axis_starts(10, 0, 1, allow_incomplete=False)
    with pytest.raises(GridParameterError):
        count_positions(10, 4, 0, allow_incomplete=True)


def _full_grid(shape, spec):
    axes = [axis_starts(shape[i], spec.patch[d], spec.stride[d],
                        allow_incomplete=spec.allow_incomplete) for i, d in enumerate(spec.dims)]
    return np.array(list(itertools.product(*axes)), dtype=np.int64).reshape(-1, len(shape))


@FAST
@given(data=st.data(), ndim=st.integers(1, 3), allow_incomplete=st.booleans())
def test_chunk_boxes_partition_the_full_grid(data, ndim, allow_incomplete):
    dims = ("z", "y", "x")[3 - ndim:]
    shape = [data.draw(st.integers(1, 90 if ndim < 3 else 30)) for _ in dims]
    patch = [data.draw(st.integers(1, 25)) for _ in dims]
    stride = [data.draw(st.integers(1, 25)) for _ in dims]
    chunk = [data.draw(st.integers(1, 40)) for _ in dims]
    spec = _spec(dims, patch, stride, allow_incomplete=allow_incomplete)
    image = dict(zip(dims, shape, strict=True))
    full = _full_grid(shape, spec)
    parts = []
    ranges = [range(0, s, c) for s, c in zip(shape, chunk, strict=True)]
    for expected_id, corner in enumerate(itertools.product(*ranges)):
        lo = dict(zip(dims, corner, strict=True))
        hi = {d: min(lo[d] + c, s) for d, c, s in zip(dims, chunk, shape, strict=True)}
        got = grid_starts_in_box(lo, hi, image, spec)
        assert got.dtype == np.int64 and got.shape[1] == ndim
        assert np.all(got >= np.array(corner)) and np.all(got < np.array(list(hi.values())))
        assert got.tolist() == sorted(got.tolist()), "rows must be in row-major order"
        if len(got):
            ids = chunk_ids(got, chunk, shape)
            assert np.all(ids == expected_id), "chunk ids must be the C-order chunk index"
        parts.append(got)
    joined = np.concatenate(parts)
    assert len(joined) == len(full), "no patch missing or duplicated across chunks"
    assert sorted(map(tuple, joined.tolist())) == sorted(map(tuple, full.tolist()))


def test_grid_starts_in_box_is_proportional_to_output():
    spec = _spec(("y", "x"), (256, 256))
    huge = {"y": 10**12, "x": 10**12}
    t0 = time.perf_counter()
    got = grid_starts_in_box({"y": 5 * 10**11, "x": 10**11}, {"y": 5 * 10**11 + 1024,
                                                             "x": 10**11 + 1024}, huge, spec)
    assert time.perf_counter() - t0 < 0.5
    assert len(got) == 16
    assert got[0].tolist() == [-(-5 * 10**11 // 256) * 256, -(-10**11 // 256) * 256]


def test_box_outside_image_or_empty_gives_nothing():
    spec = _spec(("y", "x"), (10, 10))
    img = {"y": 50, "x": 50}
    assert grid_starts_in_box({"y": 50, "x": 0}, {"y": 80, "x": 50}, img, spec).shape == (0, 2)
    assert grid_starts_in_box({"y": 5, "x": 5}, {"y": 5, "x": 50}, img, spec).shape == (0, 2)
    assert grid_starts_in_box({"y": -30, "x": -30}, {"y": 1, "x": 1}, img, spec).tolist() == [[0, 0]]


# -- chunk ids and ordering ------------------------------------------------------

@FAST
@given(data=st.data(), ndim=st.integers(1, 3))
def test_chunk_ids_are_c_order_indices(data, ndim):
    shape = [data.draw(st.integers(1, 500)) for _ in range(ndim)]
    chunk = [data.draw(st.integers(1, 200)) for _ in range(ndim)]
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    starts = np.stack([rng.integers(0, s, 50) for s in shape], axis=1)
    grid = [math.ceil(s / c) for s, c in zip(shape, chunk, strict=True)]
    expected = np.ravel_multi_index(tuple((starts // np.array(chunk)).T), grid)
    assert chunk_ids(starts, chunk, shape).tolist() == expected.tolist()


def test_chunk_ids_reject_positions_outside_the_image():
    with pytest.raises(GridParameterError, match="outside the image"):
        chunk_ids(np.array([[0, 100]]), [10, 10], [100, 100])


@FAST
@given(data=st.data(), ndim=st.integers(1, 3))
def test_order_rows_is_chunk_major_then_row_major(data, ndim):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    n = data.draw(st.integers(0, 60))
    cid = rng.integers(0, 5, n)
    starts = rng.integers(0, 4, (n, ndim))
    order = order_rows(cid, starts)
    rows = [(int(cid[i]), *starts[i].tolist()) for i in order]
    assert rows == sorted(rows)
    assert sorted(order.tolist()) == list(range(n)), "order must be a permutation"


# -- window coverage ----------------------------------------------------------------

def _brute_coverage(mask, scale, starts, patch, origin):
    """Explicit per-mask-pixel overlap of every window (no summed-area table)."""
    out = []
    for s in starts:
        weight = np.ones(())
        for d in range(mask.ndim):
            a = (s[d] - origin[d]) * scale[d]
            b = (s[d] + patch[d] - origin[d]) * scale[d]
            j = np.arange(mask.shape[d])
            overlap = np.clip(np.minimum(b, j + 1) - np.maximum(a, j), 0, None)
            weight = np.multiply.outer(weight, overlap)
        out.append(float((weight * mask).sum()) / float(np.prod(np.multiply(patch, scale))))
    return np.array(out)


SCALES = st.one_of(st.sampled_from([1 / 16, 0.37, 0.5, 1.0, 2.0, 3.0, 1 / 3]),
                   st.floats(0.05, 4.0))


@FAST
@given(data=st.data(), ndim=st.sampled_from([2, 3]), density=st.floats(0.0, 1.0))
def test_window_coverage_matches_brute_force(data, ndim, density):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mshape = [data.draw(st.integers(1, 12 if ndim == 2 else 6)) for _ in range(ndim)]
    mask = rng.random(mshape) < density
    scale = [data.draw(SCALES) for _ in range(ndim)]
    origin = [data.draw(st.sampled_from([0.0, 0.0, 2.0, -3.5, 1.25])) for _ in range(ndim)]
    patch = [data.draw(st.integers(1, 20)) for _ in range(ndim)]
    # Windows partly or wholly outside the mask extent too.
    hi = [int(m / s + o) + 5 for m, s, o in zip(mshape, scale, origin, strict=True)]
    starts = np.stack([rng.integers(-patch[d] - 3, hi[d], 40) for d in range(ndim)], axis=1)
    got = window_coverage(mask, scale, starts, patch, mask_origin=origin)
    want = _brute_coverage(mask, scale, starts, patch, origin)
    assert got.dtype == np.float64 and got.shape == (40,)
    assert np.all((got >= 0) & (got <= 1))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-9)


@FAST
@given(data=st.data(), ndim=st.sampled_from([1, 2, 3]))
def test_window_coverage_extremes_are_exact(data, ndim):
    # Power-of-two scales keep the brute force exact too, so 0 and 1 must match exactly.
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    mshape = [data.draw(st.integers(1, 10)) for _ in range(ndim)]
    mask = rng.random(mshape) < data.draw(st.sampled_from([0.05, 0.5, 0.95]))
    scale = [data.draw(st.sampled_from([1 / 16, 1 / 4, 0.5, 1.0, 2.0])) for _ in range(ndim)]
    patch = [data.draw(st.integers(1, 12)) for _ in range(ndim)]
    starts = np.stack([rng.integers(-4, int(m / s) + 2, 30)
                       for m, s in zip(mshape, scale, strict=True)], axis=1)
    got = window_coverage(mask, scale, starts, patch)
    want = _brute_coverage(mask, scale, starts, patch, [0.0] * ndim)
    assert np.array_equal(got == 0, want == 0), "uncovered windows must have coverage exactly 0"
    assert np.array_equal(got == 1, want == 1), "fully covered windows must have coverage exactly 1"
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_window_coverage_simple_cases():
    mask = np.zeros((4, 4), bool)
    mask[1, 2] = True          # image pixels [16, 32) x [32, 48) at scale 1/16
    cov = window_coverage(mask, [1 / 16, 1 / 16], np.array([[16, 32], [8, 40], [0, 0], [16, 24]]),
                          [16, 16])
    assert cov.tolist() == [1.0, 0.25, 0.0, 0.5]
    # A window half outside the mask extent counts the outside part as uncovered.
    full = np.ones((2, 2), bool)
    assert window_coverage(full, [1, 1], np.array([[1, 1], [-1, 0]]), [2, 2]).tolist() == [0.25, 0.5]
    # The mask of a sub-region: mask pixel 0 sits at image pixel (10, 20).
    assert window_coverage(full, [1, 1], np.array([[10, 20], [9, 20]]), [2, 2],
                           mask_origin=[10, 20]).tolist() == [1.0, 0.5]


def test_window_coverage_many_windows_and_empty_input():
    rng = np.random.default_rng(3)
    mask = rng.random((64, 64)) < 0.3
    starts = np.stack(np.meshgrid(np.arange(0, 4096 - 16, 16), np.arange(0, 4096 - 16, 16),
                                  indexing="ij"), axis=-1).reshape(-1, 2)
    t0 = time.perf_counter()
    cov = window_coverage(mask, [1 / 64, 1 / 64], starts, [16, 16])
    assert time.perf_counter() - t0 < 5, "window_coverage must be vectorised"
    expect = mask[starts[:, 0] // 64, starts[:, 1] // 64].astype(float)
    np.testing.assert_array_equal(cov, expect)  # 16-px windows on a 16-px grid never straddle
    half = window_coverage(mask, [1 / 64, 1 / 64], starts + 8, [16, 16])
    want = _brute_coverage(mask, [1 / 64] * 2, starts[:2000] + 8, [16, 16], [0, 0])
    np.testing.assert_allclose(half[:2000], want, rtol=0, atol=1e-12)
    assert window_coverage(mask, [1, 1], np.empty((0, 2), np.int64), [4, 4]).shape == (0,)


def test_window_coverage_of_a_few_windows_on_a_large_mask():
    # Only the reached part of the mask is summed; results must not change.
    rng = np.random.default_rng(5)
    mask = rng.random((300, 200)) < 0.5
    starts = np.array([[1000, 1300], [1013, 1311], [1990, 10], [4790, 3190]])
    scale, origin = [0.37, 1 / 16], [7.5, -3.0]
    got = window_coverage(mask, scale, starts, [37, 50], mask_origin=origin)
    want = _brute_coverage(mask, scale, starts, [37, 50], origin)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert got[-1] == 0.0, "a window past the mask extent is uncovered"


def test_window_coverage_rejects_mismatched_dims():
    with pytest.raises(MaskError, match="do not match"):
        window_coverage(np.ones((3, 3), bool), [1, 1], np.zeros((2, 3), np.int64), [1, 1])
    with pytest.raises(MaskError, match="scale"):
        window_coverage(np.ones((3, 3), bool), [1, 0], np.zeros((2, 2), np.int64), [1, 1])


# -- keep rule ------------------------------------------------------------------------

@FAST
@given(cov=st.lists(st.one_of(st.just(0.0), st.just(1.0), st.floats(0, 1),
                              st.floats(1e-300, 1e-6)), max_size=30),
       area=st.integers(1, 10**6))
def test_min_area_one_keeps_exactly_the_covered_patches(cov, area):
    cov = np.array(cov, dtype=np.float64)
    assert np.array_equal(keep_patches(cov, 1, area), cov > 0)
    assert np.array_equal(keep_patches(cov, 0, area), cov > 0), "min_area=0 still needs coverage"


@FAST
@given(cov=st.floats(0, 1), frac=st.floats(0, 0.999), area=st.integers(1, 4096))
def test_fractional_min_area(cov, frac, area):
    keep = bool(keep_patches(np.array([cov]), frac, area)[0])
    assert keep == (cov > 0 and cov * area >= frac * area - 1e-9)


def test_pixel_min_area_counts_partly_covered_pixels():
    area = 100
    cov = np.array([0.05, 0.051, 0.0, 0.001, 1.0])
    assert keep_patches(cov, 5, area).tolist() == [True, True, False, False, True]
    assert keep_patches(cov, 6, area).tolist() == [False, True, False, False, True]
    assert keep_patches(cov, 100, area).tolist() == [False, False, False, False, True]
    assert keep_patches(cov, 101, area).tolist() == [False] * 5
    # The exact fraction 0.25 of a 16x16 patch is 64 pixels, despite float noise.
    assert keep_patches(np.array([0.25 * (1 + 1e-15), 0.25 * (1 - 1e-15)]), 64, 256).all()
    assert keep_patches(np.array([0.25 * (1 - 1e-15)]), 0.25, 256).all()


def test_keep_patches_rejects_bad_thresholds():
    with pytest.raises(GridParameterError):
        keep_patches(np.array([0.5]), -1, 10)
    with pytest.raises(GridParameterError):
        keep_patches(np.array([0.5]), 0.5, 0)

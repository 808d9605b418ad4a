"""Blue-noise (Poisson-disc) positions: determinism, spacing, bounds, chunk independence."""

from __future__ import annotations

import itertools
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial import cKDTree

from zarrdask.grid import GridSpec, blue_noise_starts, normalize_grid_params

FAST = settings(max_examples=50, deadline=None)


def _spec(dims, patch, *, allow_incomplete=False):
    return GridSpec(dims=tuple(dims), patch=dict(zip(dims, patch, strict=True)),
                    stride=dict(zip(dims, patch, strict=True)), pad={d: 0 for d in dims},
                    min_area=1.0, allow_incomplete=allow_incomplete)


def _min_box_gap(points, radius):
    """True when no two points are closer than ``radius`` along every dim.

    Exhaustive: a k-d tree in the box (Chebyshev) metric on coordinates
    divided by ``radius`` finds every pair at scaled distance < 1; small sets
    are also checked by brute force over all pairs.
    """
    if len(points) < 2:
        return True
    radius = np.asarray(radius, dtype=np.float64)
    pairs = cKDTree(points / radius).query_pairs(1 - 1e-9, p=np.inf, output_type="ndarray")
    if len(points) <= 1500:
        delta = np.abs(points[:, None, :] - points[None, :, :])
        close = np.all(delta < radius[None, None, :], axis=-1)
        np.fill_diagonal(close, False)
        assert close.any() == (len(pairs) > 0), "k-d tree and brute force disagree"
    return len(pairs) == 0


def _boxes_intersect(points, patch):
    """Pairwise check that the boxes [p, p + patch) of two points share a pixel
    (brute force over all pairs: keep ``points`` small)."""
    lo = points[:, None, :]
    hi = points[:, None, :] + np.asarray(patch)
    overlap = np.all((lo < hi.transpose(1, 0, 2)) & (lo.transpose(1, 0, 2) < hi), axis=-1)
    np.fill_diagonal(overlap, False)
    return overlap.any()


def test_same_seed_same_points_and_different_seeds_differ():
    spec = _spec(("y", "x"), (32, 32))
    shape = {"y": 700, "x": 900}
    a = blue_noise_starts(shape, spec, seed=7)
    b = blue_noise_starts(shape, spec, seed=7)
    c = blue_noise_starts(shape, spec, seed=8)
    assert a.dtype == np.int64 and a.shape[1] == 2 and len(a) > 100
    np.testing.assert_array_equal(a, b)
    assert not (len(a) == len(c) and np.array_equal(a, c)), "different seeds must differ"
    assert a.tolist() == sorted(a.tolist()), "rows must be in row-major order"


@FAST
@given(data=st.data(), ndim=st.sampled_from([1, 2, 3]), allow_overlap=st.booleans(),
       allow_incomplete=st.booleans())
def test_spacing_and_bounds(data, ndim, allow_overlap, allow_incomplete):
    dims = ("z", "y", "x")[3 - ndim:]
    patch = [data.draw(st.integers(1, 24 if ndim < 3 else 10)) for _ in dims]
    shape = [data.draw(st.integers(0, 260 if ndim < 3 else 60)) for _ in dims]
    seed = data.draw(st.integers(0, 2**32 - 1))
    spec = _spec(dims, patch, allow_incomplete=allow_incomplete)
    pts = blue_noise_starts(dict(zip(dims, shape, strict=True)), spec, seed=seed,
                            allow_overlap=allow_overlap)
    assert pts.dtype == np.int64 and pts.shape[1] == ndim
    assert np.all(pts >= 0)
    limit = np.array(shape) if allow_incomplete else np.array(shape) - np.array(patch) + 1
    assert np.all(pts < limit), "positions must stay inside the image"
    if np.any(limit <= 0):
        assert len(pts) == 0
    elif not allow_incomplete:
        assert len(pts) >= 1, "an image at least one patch large holds a position"
    if allow_overlap:
        assert _min_box_gap(pts, np.array(patch) / 2), "points closer than half a patch"
    else:
        assert _min_box_gap(pts, patch)
        if len(pts) <= 1500:
            assert not _boxes_intersect(pts, patch), "patch boxes must not overlap"
    assert len({tuple(p) for p in pts.tolist()}) == len(pts), "no duplicate position"


def test_non_square_patches_do_not_overlap_and_fill_the_image():
    spec = _spec(("y", "x"), (10, 40))
    pts = blue_noise_starts({"y": 300, "x": 500}, spec, seed=3)
    assert not _boxes_intersect(pts, (10, 40))
    # Poisson-disc sets are near maximal: far more than a quarter of the perfect tiling.
    tiling = (300 // 10) * (500 // 40)
    assert len(pts) > 0.4 * tiling, f"{len(pts)} points for a tiling of {tiling}"


def test_overlap_allows_closer_points():
    spec = _spec(("y", "x"), (32, 32))
    shape = {"y": 640, "x": 640}
    apart = blue_noise_starts(shape, spec, seed=1)
    close = blue_noise_starts(shape, spec, seed=1, allow_overlap=True)
    assert len(close) > 2.5 * len(apart)
    assert _boxes_intersect(close, (32, 32)), "with allow_overlap some patches overlap"
    assert _min_box_gap(close, (16, 16))


@FAST
@given(data=st.data(), ndim=st.sampled_from([2, 3]))
def test_box_subsets_reassemble_the_global_set(data, ndim):
    dims = ("z", "y", "x")[3 - ndim:]
    patch = [data.draw(st.integers(2, 16)) for _ in dims]
    shape = [data.draw(st.integers(1, 200 if ndim == 2 else 50)) for _ in dims]
    chunk = [data.draw(st.integers(max(1, s // 5), 80)) for s in shape]
    seed = data.draw(st.integers(0, 1000))
    spec = _spec(dims, patch)
    image = dict(zip(dims, shape, strict=True))
    whole = blue_noise_starts(image, spec, seed=seed)
    parts = []
    for corner in itertools.product(*[range(0, s, c) for s, c in zip(shape, chunk, strict=True)]):
        lo = dict(zip(dims, corner, strict=True))
        hi = {d: lo[d] + c for d, c in zip(dims, chunk, strict=True)}
        part = blue_noise_starts(image, spec, seed=seed, box_start=lo, box_stop=hi)
        assert np.all(part >= np.array(corner)) and np.all(part < np.array(corner) + chunk)
        parts.append(part)
    joined = np.concatenate(parts) if parts else np.empty((0, ndim), np.int64)
    assert sorted(joined.tolist()) == whole.tolist(), "chunks must reassemble the global set"


def test_size_one_z_axis_and_tiny_images():
    spec = normalize_grid_params(16, image_dims=("z", "y", "x"), image_shape=(1, 100, 100))
    pts = blue_noise_starts({"z": 1, "y": 100, "x": 100}, spec, seed=0)
    assert len(pts) > 0 and np.all(pts[:, 0] == 0)
    small = _spec(("y", "x"), (64, 64))
    assert blue_noise_starts({"y": 63, "x": 500}, small, seed=0).shape == (0, 2)
    inc = _spec(("y", "x"), (64, 64), allow_incomplete=True)
    assert blue_noise_starts({"y": 10, "x": 10}, inc, seed=0).shape == (1, 2)


def test_whole_slide_is_fast():
    spec = _spec(("y", "x"), (256, 256))
    t0 = time.perf_counter()
    pts = blue_noise_starts({"y": 65536, "x": 65536}, spec, seed=0)
    elapsed = time.perf_counter() - t0
    assert elapsed < 10, f"blue noise on 65536^2 took {elapsed:.1f} s"
    assert len(pts) > 0.4 * 256 * 256
    assert np.all(pts <= 65536 - 256)


@pytest.mark.parametrize("seed", [0, 1])
def test_positions_are_spread_not_aligned(seed):
    # Blue noise, not a jittered lattice: offsets inside the patch-sized cells vary widely.
    pts = blue_noise_starts({"y": 2048, "x": 2048}, _spec(("y", "x"), (64, 64)), seed=seed)
    offsets = pts % 64
    assert offsets.std(axis=0).min() > 10

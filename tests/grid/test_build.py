"""build_table: the dask-built coordinate table against direct numpy, on a
real distributed cluster, with caching and bad input."""

from __future__ import annotations

import itertools
import os
import warnings

import numpy as np
import pytest
import zarr

import zarrdask as zd
from zarrdask.errors import GridParameterError, MaskError, SourceNotFoundError
from zarrdask.grid.build import GridWarning, build_table
from zarrdask.grid.geometry import axis_starts, keep_patches, window_coverage


def _direct(shape, chunk, patch, stride, mask=None, mask_scale=None, min_area=1):
    """The table computed directly with numpy, for comparison."""
    ys = axis_starts(shape[0], patch, stride, allow_incomplete=False)
    xs = axis_starts(shape[1], patch, stride, allow_incomplete=False)
    starts = np.array(list(itertools.product(ys, xs)), dtype=np.int64).reshape(-1, 2)
    cov = np.ones(len(starts))
    if mask is not None:
        cov = window_coverage(mask, mask_scale, starts, [patch, patch])
        keep = keep_patches(cov, min_area, patch * patch)
        starts, cov = starts[keep], cov[keep]
    n_cx = -(-shape[1] // chunk)
    cid = (starts[:, 0] // chunk) * n_cx + starts[:, 1] // chunk
    order = np.lexsort((starts[:, 1], starts[:, 0], cid))
    return starts[order], cid[order], cov[order]


def test_grid_without_mask_equals_direct_computation(slide_v3):
    table = build_table(slide_v3, patch_size=96, stride=80)
    starts, cid, _ = _direct((2048, 2048), 256, 96, 80)
    np.testing.assert_array_equal(table.positions(), starts)
    np.testing.assert_array_equal(table.frame["chunk_id"].to_numpy(), cid)
    assert (table.frame["coverage"] == 1).all()
    assert table.patch_size == {"y": 96, "x": 96}
    # no patch runs past the border although stride < patch
    assert (table.positions() + 96 <= 2048).all()


def test_user_mask_at_low_resolution_matches_direct(slide_v3):
    rng = np.random.default_rng(0)
    mask = rng.random((128, 128)) > 0.7  # 1/16 of 2048
    table = build_table(slide_v3, patch_size=128, masks=mask, min_area=0.25)
    starts, cid, cov = _direct((2048, 2048), 256, 128, 128, mask, [1 / 16, 1 / 16], 0.25)
    np.testing.assert_array_equal(table.positions(), starts)
    np.testing.assert_allclose(table.frame["coverage"].to_numpy(), cov, rtol=1e-6)
    assert len(table) > 0 and (table.frame["coverage"] >= 0.25).all()


def test_tissue_mask_keeps_patches_on_tissue(slide_v3):
    table = build_table(slide_v3, patch_size=128, masks="tissue", min_area=0.5)
    img = zd.open_image(slide_v3)
    assert 0 < len(table) < 256
    grey = img.isel(c=0).values.astype(float)
    for y, x in table.positions()[:20]:
        # a kept patch is mostly darker than the white background
        assert (grey[y:y + 128, x:x + 128] < 215).mean() > 0.3


def test_level_and_roi_positions_are_level0_pixels(slide_v3):
    roi = {"y": slice(64, 512), "x": slice(128, 640)}
    table = build_table({"source": slide_v3, "level": 1, "roi": roi}, patch_size=64)
    pos = table.positions()
    # level-1 grid starts at the ROI origin (64, 128) and steps by 64, i.e. 128 at level 0
    assert pos[:, 0].min() == 128 and pos[:, 1].min() == 256
    assert set(np.diff(np.unique(pos[:, 1]))) == {128}
    entry = table.images[0]
    assert entry["level"] == 1 and entry["scale"]["x"] == 1.0 and entry["scale0"]["x"] == 0.5
    assert len(table) == (448 // 64) * (512 // 64)


def test_many_images_one_graph_and_ordering(slide_v3, slide_v2):
    table = build_table([slide_v3, slide_v2], patch_size=256)
    assert table.frame["image_id"].tolist() == [0] * 64 + [1] * 16
    assert [e["name"] for e in table.images] == [slide_v3, slide_v2]
    sub = table.frame[table.frame.image_id == 0]
    assert sub["chunk_id"].is_monotonic_increasing


def test_cache_reuses_and_rebuilds(tmp_path, slide_v2):
    cache = tmp_path / "grid.parquet"
    first = build_table(slide_v2, patch_size=128, cache=cache)
    stamp = os.stat(cache).st_mtime_ns
    again = build_table(slide_v2, patch_size=128, cache=cache)
    assert again.equals(first) and os.stat(cache).st_mtime_ns == stamp
    changed = build_table(slide_v2, patch_size=64, cache=cache)
    assert changed.hash != first.hash and len(changed) == 4 * len(first)
    assert zd.read_table(cache).hash == changed.hash


def test_hash_changes_when_the_image_is_rewritten(tmp_path):
    from zarrdask.datasets import write_synthetic_slide

    path = write_synthetic_slide(tmp_path / "s.zarr", size=512, chunk=128, levels=1, seed=0)
    first = build_table(path, patch_size=128)
    arr = zarr.open_array(path + "/0", mode="r+")
    arr[:, :128, :128] = 0
    assert build_table(path, patch_size=128).hash != first.hash


def test_bad_inputs_are_named(slide_v3, tmp_path):
    with pytest.raises(GridParameterError, match="patch"):
        build_table(slide_v3, patch_size=0)
    with pytest.raises(SourceNotFoundError, match=r"image 1 .*missing\.zarr"):
        build_table([slide_v3, str(tmp_path / "missing.zarr")], patch_size=256)
    with pytest.warns(GridWarning, match="skipping image 1"):
        table = build_table([slide_v3, str(tmp_path / "missing.zarr")], patch_size=256,
                            on_error="skip")
    assert len(table.images) == 1 and table.meta["skipped"][0]["index"] == 1
    with pytest.warns(GridWarning, match="smaller than the patch"):
        assert len(build_table(slide_v3, patch_size=4096)) == 0
    with pytest.warns(GridWarning, match="selects no patch"):
        build_table(slide_v3, patch_size=256, masks=np.zeros((64, 64), bool))
    with pytest.raises(MaskError):
        build_table(slide_v3, patch_size=256, masks=np.ones((4, 64, 64), bool))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_table(slide_v3, patch_size=4096, allow_incomplete_patches=True)


def test_blue_noise_table_is_seeded_in_mask_and_non_overlapping(slide_v3):
    kwargs = {"patch_size": 128, "sampler": "blue-noise", "masks": "tissue", "min_area": 0.5}
    a = build_table(slide_v3, seed=1, **kwargs)
    b = build_table(slide_v3, seed=1, **kwargs)
    c = build_table(slide_v3, seed=2, **kwargs)
    assert a.equals(b) and not np.array_equal(a.positions(), c.positions())
    pos = a.positions()
    assert len(pos) > 3 and (a.frame["coverage"] >= 0.5).all()
    d = np.abs(pos[:, None, :] - pos[None, :, :]).max(axis=2)
    np.fill_diagonal(d, 10**9)
    assert d.min() >= 128


def test_single_plane_stack_takes_a_2d_mask():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (1, 3, 1, 256, 256), dtype=np.uint8)
    mask = np.zeros((16, 16), bool)
    mask[:8, :8] = True  # the top-left quarter: 128x128 image pixels
    table = build_table({"source": img, "axes": "TCZYX"}, patch_size=64, masks=mask)
    assert table.dims == ["z", "y", "x"] and table.patch_size == {"z": 1, "y": 64, "x": 64}
    assert table.positions().tolist() == [[0, 0, 0], [0, 0, 64], [0, 64, 0], [0, 64, 64]]


@pytest.mark.parametrize("shape,chunks,per_task", [
    ({"y": 4096, "x": 4096}, {"y": 512, "x": 512}, 16),
    ({"y": 1000, "x": 7000}, {"y": 256, "x": 256}, 5),
    ({"z": 3, "y": 700, "x": 300}, {"z": 1, "y": 128, "x": 100}, 7),
    ({"x": 999}, {"x": 10}, 4),
])
def test_task_boxes_partition_the_image_into_runs_of_chunks(shape, chunks, per_task):
    """Grid task boxes cover every pixel once, hold at most ``per_task``
    chunks, and short rows of chunks are grouped (4096² in 512²: 4 tasks)."""
    from zarrdask.grid.graph import expected_tasks, task_boxes

    dims = list(shape)
    boxes = task_boxes({d: 0 for d in dims}, shape, chunks, dims, per_task)
    assert len(boxes) == expected_tasks(shape, chunks, per_task)
    seen = np.zeros([shape[d] for d in dims], dtype=int)
    for start, stop in boxes:
        seen[tuple(slice(start[d], stop[d]) for d in dims)] += 1
        assert np.prod([-(-(stop[d] - start[d]) // chunks[d]) for d in dims]) <= per_task
    assert (seen == 1).all()
    if shape == {"y": 4096, "x": 4096}:
        assert len(boxes) == 4


def test_tissue_mask_of_a_spec_with_source_axes_reads_the_image_axes(slide_v3, tmp_path):
    # a channels-last copy: the tissue mask must open it with the spec's axes,
    # whether they are given as ``axes`` or as zarrdataset's ``source_axes``
    yxc = np.moveaxis(zd.open_image(slide_v3).values, 0, -1)
    path = str(tmp_path / "yxc.zarr")
    zarr.create_array(path, data=yxc, chunks=(256, 256, 3))
    by_axes = build_table({"source": path, "axes": "YXC"}, patch_size=128, masks="tissue",
                          min_area=0.5)
    by_source_axes = build_table({"source": path, "source_axes": "YXC"}, patch_size=128,
                                 masks="tissue", min_area=0.5)
    reference = build_table(slide_v3, patch_size=128, masks="tissue", min_area=0.5)
    assert 0 < len(reference)
    np.testing.assert_array_equal(by_axes.positions(), reference.positions())
    np.testing.assert_array_equal(by_source_axes.positions(), reference.positions())

"""PatchSampler and BlueNoisePatchSampler: parameters, the dicts user code
reads, compute_chunks/compute_patches, and their agreement with ZarrDataset."""

# zarrdataset code seeds numpy's global random state; these tests do too.
# ruff: noqa: NPY002

from __future__ import annotations

import numpy as np
import pytest

import zarrdask.compat as zds
from zarrdask.errors import GridParameterError


def _collection(source, axes="YX", mask=None, **kwargs):
    args = {"images": {"filename": source, "source_axes": axes, **kwargs}}
    if mask is not None:
        args["masks"] = {"filename": mask, "source_axes": "YX"}
    return zds.ImageCollection(args)


def _starts(patches, axes="YX"):
    return [tuple(p[a].start for a in axes) for p in patches]


def test_parameter_dicts_are_keyed_by_spatial_axis():
    ps = zds.PatchSampler(patch_size=dict(Y=512, X=256))
    assert ps._patch_size == {"Z": 1, "Y": 512, "X": 256}
    assert ps._stride == {"Z": 1, "Y": 512, "X": 256}
    assert ps._pad == {"Z": 0, "Y": 0, "X": 0}
    ps = zds.PatchSampler(64, stride=(1, 32, 16), pad=8, spatial_axes="ZYX")
    assert ps._patch_size == {"Z": 64, "Y": 64, "X": 64}
    assert ps._stride == {"Z": 1, "Y": 32, "X": 16}
    assert ps._pad == {"Z": 8, "Y": 8, "X": 8}
    assert ps._min_area == 1 and ps._allow_incomplete_patches is False
    assert ps.spatial_axes == "ZYX"
    assert repr(ps) == (f"{zds.PatchSampler} for sampling patches of size "
                        "{'Z': 64, 'Y': 64, 'X': 64}.")


@pytest.mark.parametrize("kwargs, match", [
    ({"patch_size": (64, 64)}, "spatial_axes='ZYX' has 3"),
    ({"patch_size": -3}, "patch_size must be >= 1"),  # 0 is a placeholder
    ({"patch_size": 64, "pad": -1}, "pad must be >= 0"),
    ({"patch_size": {"Q": 3}}, "unknown axis 'Q'"),
    ({"patch_size": 64, "min_area": -1}, "min_area"),
])
def test_bad_parameters_fail_naming_the_argument(kwargs, match):
    with pytest.raises(GridParameterError, match=match):
        zds.PatchSampler(**kwargs)


def test_chunks_and_patches_are_chunk_major_then_row_major():
    image = np.zeros((512, 512), np.uint8)
    ps = zds.PatchSampler(dict(Y=128, X=256))
    collection = _collection(image)
    chunks = ps.compute_chunks(collection)
    assert [(c["Y"].start, c["X"].start) for c in chunks] == [(0, 0)]
    patches = ps.compute_patches(collection, chunks[0])
    assert _starts(patches) == [(0, 0), (0, 256), (128, 0), (128, 256), (256, 0), (256, 256),
                                (384, 0), (384, 256)]
    assert patches[0]["Z"] == slice(0, 1) and patches[0]["Y"] == slice(0, 128)


def test_chunk_order_and_patch_slices_on_a_chunked_slide(slide):
    ps = zds.PatchSampler(dict(Y=128, X=256), pad=4)
    collection = _collection(slide, "CYX", data_group="1")
    chunks = ps.compute_chunks(collection)
    assert [(c["Y"], c["X"]) for c in chunks] == [
        (slice(0, 256), slice(0, 256)), (slice(0, 256), slice(256, 512)),
        (slice(256, 512), slice(0, 256)), (slice(256, 512), slice(256, 512))]
    assert ps._max_chunk_size == {"Z": 1, "Y": 256, "X": 256}
    patches = [p for c in chunks for p in ps.compute_patches(collection, c)]
    # the order zarrdataset 0.2.2 gives for this image and sampler
    assert [(p["Y"].start + 4, p["X"].start + 4) for p in patches] == [
        (0, 0), (128, 0), (0, 256), (128, 256), (256, 0), (384, 0), (256, 256), (384, 256)]
    assert patches[0]["Y"] == slice(-4, 132) and patches[0]["X"] == slice(-4, 260)


def test_no_patch_crosses_the_border_unless_incomplete_patches_are_allowed():
    image = np.zeros((100, 100), np.uint8)
    collection = _collection(image)
    strict = zds.PatchSampler(64, stride=32)
    assert _starts(strict.compute_patches(collection, {"Y": slice(None), "X": slice(None)})) == [
        (0, 0), (0, 32), (32, 0), (32, 32)]
    loose = zds.PatchSampler(64, stride=32, allow_incomplete_patches=True)
    starts = _starts(loose.compute_patches(collection, {"Y": slice(None), "X": slice(None)}))
    assert len(starts) == 16 and (96, 96) in starts


def test_min_area_is_measured_on_the_patch_window():
    image = np.zeros((256, 256), np.uint8)
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = True  # covers image pixels [0, 64)²
    box = {"Y": slice(None), "X": slice(None)}
    any_cover = zds.PatchSampler(96, stride=32)
    starts = _starts(any_cover.compute_patches(_collection(image, mask=mask), box))
    assert starts == [(0, 0), (0, 32), (32, 0), (32, 32)]
    quarter = zds.PatchSampler(96, stride=32, min_area=0.25)
    # (32, 32): the window [32, 128)² holds 32² mask pixels = 1/9 of it
    assert _starts(quarter.compute_patches(_collection(image, mask=mask), box)) == [(0, 0)]
    pixels = zds.PatchSampler(96, stride=32, min_area=32 * 64)
    assert _starts(pixels.compute_patches(_collection(image, mask=mask), box)) == [
        (0, 0), (0, 32), (32, 0)]


def test_compute_patches_agree_with_zarrdataset_positions(slide):
    mask = np.zeros((8, 8), bool)
    mask[2:5, 1:6] = True
    sampler = zds.PatchSampler(96, stride=80)
    collection = _collection(slide, "CYX", data_group="1", mask=mask)
    expected = [s for c in sampler.compute_chunks(collection)
                for s in _starts(sampler.compute_patches(collection, c))]
    dataset = zds.ZarrDataset([zds.ImagesDatasetSpecs(slide, "CYX", data_group="1"),
                               zds.MasksDatasetSpecs([mask], "YX")],
                              patch_sampler=sampler, return_positions=True)
    got = [tuple(pos[1:, 0].tolist()) for pos, _ in dataset]
    assert got == expected and len(got) > 4


def test_blue_noise_positions_are_covered_by_the_mask_and_never_overlap(slide):
    np.random.seed(3)
    mask = np.zeros((16, 16), bool)
    mask[4:12, 2:14] = True
    sampler = zds.BlueNoisePatchSampler(48)
    collection = _collection(slide, "CYX", data_group="1", mask=mask)
    patches = [p for c in sampler.compute_chunks(collection)
               for p in sampler.compute_patches(collection, c)]
    starts = np.array(_starts(patches))
    assert len(starts) > 10
    assert sampler._base_chunk_tls.shape[1] == 3
    # the mask spans 512 px with 16 cells: windows [s, s + 48) must meet rows 4..11 / cols 2..13
    assert np.all(starts[:, 0] + 48 > 4 * 32) and np.all(starts[:, 0] < 12 * 32)
    assert np.all(starts[:, 1] + 48 > 2 * 32) and np.all(starts[:, 1] < 14 * 32)
    diff = np.abs(starts[:, None, :] - starts[None, :, :])
    overlap = np.all(diff < 48, axis=-1) & ~np.eye(len(starts), dtype=bool)
    assert not overlap.any()


def test_blue_noise_is_reproducible_with_numpy_seed_and_resamples_on_force(slide):
    collection = _collection(slide, "CYX", data_group="1")

    def positions(sampler):
        return [s for c in sampler.compute_chunks(collection)
                for s in _starts(sampler.compute_patches(collection, c))]

    np.random.seed(11)
    first = positions(zds.BlueNoisePatchSampler(64, allow_overlap=True))
    np.random.seed(11)
    sampler = zds.BlueNoisePatchSampler(64, allow_overlap=True)
    assert positions(sampler) == first
    before = sampler._base_chunk_tls.copy()
    sampler.compute_sampling_positions(force=True)
    assert not np.array_equal(before, sampler._base_chunk_tls)
    resampling = zds.BlueNoisePatchSampler(64, resample_positions=True)
    assert positions(resampling) != positions(resampling)


def test_overlap_allowed_packs_more_patches(slide):
    collection = _collection(slide, "CYX", data_group="1")
    counts = []
    for overlap in (False, True):
        sampler = zds.BlueNoisePatchSampler(64, allow_overlap=overlap)
        counts.append(sum(len(sampler.compute_patches(collection, c))
                          for c in sampler.compute_chunks(collection)))
    assert counts[1] > 2 * counts[0]


def test_coverage_helpers():
    ps = zds.PatchSampler(4)
    corners = ps._compute_corners(np.array([[0.0, 0.0], [10.0, 20.0]]), np.array([2.0, 4.0]))
    assert corners.shape == (4, 2, 2)
    np.testing.assert_allclose(corners[:, 1], [[10, 20], [12, 20], [10, 24], [12, 24]], atol=1e-3)
    edges, idx = ps._compute_reference_indices(np.array([[0, 0], [0, 8], [8, 0]]), np.array([8, 8]))
    assert edges[0].tolist() == [-np.inf, 0, 8, 16] and idx == [(1, 1), (1, 2), (2, 1)]
    coverage, cells = ps._compute_overlap(ps._compute_corners(np.array([[6.0, 6.0]]),
                                                              np.array([4.0, 4.0])), edges)
    assert cells.shape == (4, 1, 2) and coverage.shape == (4, 1)
    np.testing.assert_allclose(coverage[0, 0], 4.0)

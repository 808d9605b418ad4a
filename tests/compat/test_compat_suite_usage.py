"""The compat API called the way zarrdataset's own test suite (and its users) call it.

Each test covers one cause of a failure of zarrdataset's suite run against
zarrdask (issue 16): in-memory arrays with a ``data_group`` still set, specs
built from their defaults, ``data_group`` of a wrong type, ``ImageBase`` chunk
sizes, ``image2array`` results, and the modules without optional packages.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import dask.array as dsa
import numpy as np
import pytest
import tifffile
import xarray as xr
import zarr

import zarrdask as zds
from zarrdask.errors import AxesError, DataGroupError


def _image(shape=(3, 64, 48), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, shape, dtype=np.uint8)


def _in_memory(data: np.ndarray, chunks) -> zarr.Array:
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    return group.create_array("0", data=data, chunks=chunks)


# -- 1. data_group given with a source that is already one array ------------------------------

def test_dataset_ignores_data_group_of_an_in_memory_array_with_a_warning():
    data = _image()
    image = _in_memory(data, (3, 32, 16))
    mask = _in_memory(np.ones((32, 24), bool), (16, 16))
    specs = [zds.ImagesDatasetSpecs(filenames=image, data_group="0", source_axes="CYX"),
             zds.MasksDatasetSpecs(filenames=mask, data_group="masks/0", source_axes="YX")]
    with pytest.warns(UserWarning, match="data_group='0' is ignored"):
        dataset = zds.ZarrDataset(specs, patch_sampler=zds.PatchSampler(16),
                                  return_positions=True)
    samples = list(dataset)
    assert len(samples) == (64 // 16) * (48 // 16)
    for pos, patch in samples:
        (c0, c1), (y0, y1), (x0, x1) = pos
        np.testing.assert_array_equal(patch, data[:, y0:y1, x0:x1])


def test_dataset_ignores_data_group_of_a_numpy_array():
    data = _image((40, 30), seed=1)
    with pytest.warns(UserWarning, match="already one array"):
        dataset = zds.ZarrDataset(zds.ImagesDatasetSpecs(filenames=data, data_group="0",
                                                         source_axes="YX"))
    (whole,) = list(dataset)
    np.testing.assert_array_equal(whole, data)


def test_image_loader_ignores_data_group_of_an_in_memory_array():
    data = _image(seed=2)
    with pytest.warns(UserWarning, match="already one array"):
        img = zds.ImageLoader(_in_memory(data, (3, 16, 16)), source_axes="CYX", data_group="0")
    np.testing.assert_array_equal(img[:], data)


@pytest.mark.parametrize("make", [np.asarray, lambda a: _in_memory(a, a.shape),
                                  dsa.from_array, xr.DataArray])
def test_every_in_memory_array_drops_data_group(make):
    from zarrdask.compat._sources import effective_data_group

    with pytest.warns(UserWarning, match="already one array"):
        assert effective_data_group(make(_image((4, 4))), "0/0", what="test") is None
    assert effective_data_group(make(_image((4, 4))), "", what="test") is None
    assert effective_data_group("slide.zarr", "0/0", what="test") == "0/0"


def test_a_group_still_needs_an_existing_data_group():
    group = zarr.open_group(zarr.storage.MemoryStore(), mode="w")
    group.create_array("0", data=_image(seed=3), chunks=(3, 32, 32))
    dataset = zds.ZarrDataset(zds.ImagesDatasetSpecs(filenames=group, data_group="1",
                                                     source_axes="CYX"))
    with pytest.raises(DataGroupError, match="data_group='1'"):
        next(iter(dataset))


# -- 2. specs constructed with their defaults ---------------------------------------------------

@pytest.mark.parametrize("spec_class", [zds.DatasetSpecs, zds.ImagesDatasetSpecs,
                                        zds.MasksDatasetSpecs, zds.LabelsDatasetSpecs])
def test_specs_with_empty_defaults_are_accepted_until_the_data_is_read(spec_class):
    spec = spec_class(modality="generic", filenames="", source_axes="")
    dataset = zds.ZarrDataset()
    dataset.add_modality(**spec)
    assert "generic" in repr(dataset)
    with pytest.raises(AxesError, match="no source_axes"):
        next(iter(dataset))


def test_dataset_from_specs_with_default_source_axes_names_the_fix():
    dataset = zds.ZarrDataset([zds.ImagesDatasetSpecs(filenames=_image(), source_axes="")])
    with pytest.raises(AxesError, match="pass source_axes="):
        next(iter(dataset))


# -- 3. a data_group of a type no reader takes --------------------------------------------------

def test_mapping_data_group_is_a_value_error_naming_the_file(tmp_path):
    path = tmp_path / "img.ome.tiff"
    tifffile.imwrite(path, _image((8, 8, 3)), photometric="rgb")
    for call in (lambda: zds.image2array(str(path), data_group={"data_group": "0"}),
                 lambda: zds.ImageLoader(str(path), source_axes="YXC",
                                         data_group={"data_group": "0"})):
        with pytest.raises(ValueError, match="img.ome.tiff") as info:
            call()
        assert isinstance(info.value, DataGroupError)
        assert type(info.value).__name__ == "DataGroupTypeError"
        assert "dict" in str(info.value)
    arr, store = zds.image2array(str(path), data_group=0)
    assert arr.shape == (8, 8, 3)
    store.close()


# -- 5. inputs zarrdataset could not read ----------------------------------------------------

def test_a_plain_group_with_one_array_opens_it_and_with_two_names_the_fix(tmp_path):
    # zarrdataset raised ValueError without data_group; zarrdask reads the only array
    # (a documented difference) and still refuses to guess between several
    path = str(tmp_path / "plain.zarr")
    group = zarr.open_group(path, mode="w")
    data = _image((1, 2, 2), seed=5)
    group.create_array("0", data=data, chunks=(1, 2, 2))
    arr, _ = zds.image2array(path)
    np.testing.assert_array_equal(arr[:], data)
    np.testing.assert_array_equal(zds.ImageLoader(path, source_axes="CYX")[:], data)
    group.create_array("1", data=data, chunks=(1, 2, 2))
    with pytest.raises(DataGroupError, match="pass data_group="):
        zds.image2array(path)


@pytest.mark.parametrize("name", ["image.unknown", "image.txt", "image.zip"])
def test_empty_files_of_unknown_formats_are_value_errors(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(b"")
    with pytest.raises(ValueError, match=name):
        zds.image2array(str(path))


def test_connect_s3_gives_the_filesystem_zarrdask_reads_through():
    found = zds.connect_s3("https://live.staticflickr.com/4908/31072787307_59f7943caa_o.jpg")
    assert found["bucket_name"] == "4908"
    assert found["endpoint_url"] == "https://live.staticflickr.com"
    assert type(found["s3"]).__name__ == "S3FileSystem"
    assert found["s3"].endpoint_url == "https://live.staticflickr.com"
    assert zds.connect_s3("test.png") is None


# -- 4. ImageBase chunk sizes; image2array always gives chunks -------------------------------

def test_image_base_reports_the_chunk_size_it_was_given():
    img = zds.ImageBase([16, 16, 3], chunk_size=[8, 8, 2], source_axes="YXC", mode="images")
    assert img.shape == [16, 16, 3]
    assert img.chunk_size == [8, 8, 2]
    assert zds.ImageBase([16, 16, 3], source_axes="YXC").chunk_size == [16, 16, 3]
    with pytest.raises(AxesError, match="chunk_size"):
        zds.ImageBase([16, 16, 3], chunk_size=[8, 8], source_axes="YXC")


def test_image2array_of_numpy_is_a_one_chunk_zarr_array_with_the_same_pixels():
    data = _image((20, 3, 12), seed=4)
    arr, store = zds.image2array(data, data_group="0")
    assert store is None
    assert isinstance(arr, zarr.Array)
    assert arr.chunks == data.shape and arr.dtype == data.dtype
    np.testing.assert_array_equal(arr[:], data)


# -- 6./7. sampler chunks and blue-noise positions per chunk ----------------------------------

def _tall_collection(mask=None) -> zds.ImageCollection:
    """A 512 x 1024 (Y, X) image in 128 x 256 chunks, stored Z C X Y T."""
    image = _in_memory(np.zeros((1, 3, 1024, 512, 1), np.float32), (1, 3, 256, 128, 1))
    args = {"images": {"filename": image, "source_axes": "ZCXYT"}}
    if mask is not None:
        args["masks"] = {"filename": mask, "source_axes": "YX"}
    return zds.ImageCollection(collection_args=args)


@pytest.mark.parametrize("incomplete, expected", [
    (False, []),
    (True, [{"Z": slice(0, 1), "Y": slice(0, 1024), "X": slice(0, 1024)}]),
])
def test_a_chunk_is_listed_when_its_patch_would_cross_the_border(incomplete, expected):
    collection = _tall_collection()
    sampler = zds.PatchSampler(1024, allow_incomplete_patches=incomplete)
    chunks = sampler.compute_chunks(collection)
    assert chunks[0] == {"Z": slice(0, 1), "Y": slice(0, 128), "X": slice(0, 256)}
    assert [p for c in chunks for p in sampler.compute_patches(collection, c)] == expected


@pytest.mark.parametrize("kwargs", [
    {"patch_size": {"X": 32, "Y": 32, "Z": 1}, "spatial_axes": "XYZ", "allow_overlap": True,
     "resample_positions": True},
    {"patch_size": {"X": 32, "Y": 32}, "spatial_axes": "YX"},
])
def test_blue_noise_base_chunk_positions_are_those_of_the_chunk_sampled(kwargs):
    np.random.seed(447788)  # noqa: NPY002 - the sampler draws its seed from it
    collection = _tall_collection()
    sampler = zds.BlueNoisePatchSampler(**kwargs)
    chunks = sampler.compute_chunks(collection)
    image_positions = {tuple(p) for p in sampler._image_tls.tolist()}
    seen = set()
    axes = sampler.spatial_axes
    for chunk in chunks:
        patches = sampler.compute_patches(collection, chunk)
        assert len(patches) == len(sampler._base_chunk_tls) > 0
        offset = np.array([chunk[a].start for a in axes])
        from_base = {tuple(p) for p in (sampler._base_chunk_tls + offset).tolist()}
        from_patches = {tuple(p[a].start for a in axes) for p in patches}
        assert from_base == from_patches
        seen |= from_patches
    assert seen == image_positions


def test_blue_noise_mask_at_an_odd_scale_places_no_patch_past_the_border():
    mask = np.ones((3, 5), bool)
    np.random.seed(447788)  # noqa: NPY002 - the sampler draws its seed from it
    sampler = zds.BlueNoisePatchSampler({"X": 1024, "Y": 1024})
    assert sampler.compute_chunks(_tall_collection(mask)) == []
    np.random.seed(447788)  # noqa: NPY002 - the sampler draws its seed from it
    sampler = zds.BlueNoisePatchSampler({"X": 1024, "Y": 1024}, allow_incomplete_patches=True)
    collection = _tall_collection(mask)
    patches = [p for c in sampler.compute_chunks(collection)
               for p in sampler.compute_patches(collection, c)]
    assert len(patches) == 1
    assert patches[0]["Y"].stop - patches[0]["Y"].start == 1024


# -- 8. PatchSampler(0): zarrdataset's placeholder patch size ---------------------------------

def test_patch_size_zero_is_accepted_until_a_grid_is_computed():
    from zarrdask.errors import GridParameterError

    sampler = zds.PatchSampler(0)
    assert sampler._patch_size == {"Z": 0, "Y": 0, "X": 0}
    dataset = zds.ZarrDataset(zds.ImagesDatasetSpecs(_image((16, 16)), "YX"),
                              patch_sampler=sampler)
    assert f"Using {sampler}" in repr(dataset)
    with pytest.raises(GridParameterError, match="patch_size must be >= 1"):
        next(iter(dataset))
    collection = zds.ImageCollection({"images": {"filename": _image((16, 16)),
                                                 "source_axes": "YX"}})
    with pytest.raises(GridParameterError, match="patch_size must be >= 1"):
        sampler.compute_chunks(collection)
    with pytest.raises(GridParameterError):
        zds.PatchSampler(-1)
    assert zds.PatchSampler({"X": 0, "Y": 8}, spatial_axes="YX")._patch_size == {"Y": 8, "X": 0}


# -- 9. optional packages -----------------------------------------------------------------------

def _run_without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    blocker = "import sys\n" + "".join(f"sys.modules[{m!r}] = None\n" for m in modules)
    return subprocess.run([sys.executable, "-c", blocker + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120)


def test_compat_imports_without_torch_or_tqdm_with_the_features_off():
    done = _run_without(["torch", "tqdm"], """
        import numpy as np
        import zarrdask as zds
        from zarrdask.compat import zarrdataset as m
        from zarrdask.errors import DatasetError
        assert m.ZarrDataset.__bases__ == (object,)
        assert not m.TORCH_SUPPORT and not m.TQDM_SUPPORT
        assert list(m.tqdm(range(3))) == [0, 1, 2]
        m.zarrdataset_worker_init_fn(None)
        m.chained_zarrdataset_worker_init_fn(None)
        ds = zds.ZarrDataset(zds.ImagesDatasetSpecs(np.zeros((8, 8), np.uint8), "YX"),
                             progress_bar=True)
        assert "PyTorch support:False" in repr(ds)
        try:
            next(iter(ds))
        except DatasetError as exc:
            assert "install torch" in str(exc)
        else:
            raise AssertionError("iterating without torch should name the fix")
        print("ok")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"


def test_compat_flags_with_every_package_installed():
    from zarrdask.compat import imageloaders, zarrdataset

    assert imageloaders.TIFFFILE_SUPPORT is True
    assert zarrdataset.TORCH_SUPPORT is True and zarrdataset.TQDM_SUPPORT is True
    import torch
    import tqdm

    assert zarrdataset.tqdm is tqdm.tqdm
    assert issubclass(zarrdataset.ZarrDataset, torch.utils.data.IterableDataset)


def test_progress_bar_without_tqdm_reads_the_samples():
    done = _run_without(["tqdm"], """
        import numpy as np
        import zarrdask as zds
        data = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64)
        ds = zds.ZarrDataset(zds.ImagesDatasetSpecs(data, "YX"), progress_bar=True,
                             patch_sampler=zds.PatchSampler(32))
        patches = list(ds)
        assert len(patches) == 4 and all(p.shape == (32, 32) for p in patches)
        np.testing.assert_array_equal(np.sort(np.concatenate([p.ravel() for p in patches])),
                                      data.ravel())
        print("ok")
    """)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "ok"

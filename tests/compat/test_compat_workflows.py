"""zarrdataset's documented workflows (docs/examples of the zarrdataset
repository), run unchanged except for the data: local synthetic slides and
volumes instead of IDR images.

* basic_example: whole images of a chosen level, patches, specs, shuffle;
* basic_example_pytorch: DataLoader with several workers, blue noise;
* basic_masked_datasets_example: a hand-made low-resolution mask;
* advanced_masked_datasets_example: a mask as a modality in the output, and
  WSITissueMaskGenerator as image_loader_func on a low-resolution level;
* basic_labeled_datasets_example: weak and dense labels;
* advanced_example_pytorch: 3-D patches, ChainDataset, positions, worker ids;
* advanced_example_pytorch_inference: padded tiles stitched back into zarr.
"""

# zarrdataset code seeds numpy's global random state; these tests do too.
# ruff: noqa: NPY002

from __future__ import annotations

import random

import numpy as np
import torch
import zarr
from torch.utils.data import ChainDataset, DataLoader

import zarrdask.compat as zds
from zarrdask.grid.geometry import window_coverage


def test_basic_example(slide, level):
    np.random.seed(478963)
    random.seed(478965)
    my_dataset = zds.ZarrDataset()
    my_dataset.add_modality(modality="image", filenames=[slide], source_axes="CYX",
                            data_group="1")
    ds_iterator = iter(my_dataset)
    sample = next(ds_iterator)
    assert isinstance(sample, np.ndarray)
    np.testing.assert_array_equal(sample, level(1))

    patch_size = dict(Y=256, X=256)
    patch_sampler = zds.PatchSampler(patch_size=patch_size)
    assert "{'Z': 1, 'Y': 256, 'X': 256}" in repr(patch_sampler)
    my_dataset = zds.ZarrDataset(patch_sampler=patch_sampler)
    my_dataset.add_modality(modality="image", filenames=[slide], source_axes="CYX",
                            data_group="0")
    assert "Modalities: image" in repr(my_dataset)
    ds_iterator = iter(my_dataset)
    samples = [next(ds_iterator) for _ in range(3)]
    assert all(s.shape == (3, 256, 256) and s.dtype == np.uint8 for s in samples)
    np.testing.assert_array_equal(samples[2], level(0)[:, :256, 512:768])

    samples = []
    for i, sample in enumerate(my_dataset):
        samples.append(np.moveaxis(sample, 0, -1))
        if i >= 4:
            break
    assert np.hstack(samples).shape == (256, 5 * 256, 3)

    image_specs = zds.ImagesDatasetSpecs(filenames=[slide], data_group="0", source_axes="CYX")
    my_dataset = zds.ZarrDataset(dataset_specs=[image_specs], patch_sampler=patch_sampler,
                                 shuffle=True)
    shuffled = [s.tobytes() for s in my_dataset]
    ordered = [s.tobytes() for s in zds.ZarrDataset([image_specs], patch_sampler=patch_sampler)]
    assert sorted(shuffled) == sorted(ordered) and shuffled != ordered


def test_basic_example_pytorch_with_workers(slide, level):
    torch.manual_seed(478964)
    np.random.seed(478963)
    random.seed(478965)
    patch_sampler = zds.BlueNoisePatchSampler(patch_size=dict(Y=128, X=128))
    image_specs = zds.ImagesDatasetSpecs(filenames=[slide], data_group="1", source_axes="CYX")
    my_dataset = zds.ZarrDataset(image_specs, patch_sampler=patch_sampler, shuffle=True,
                                 return_positions=True)
    my_dataset.add_transform("images", zds.ToDtype(dtype=np.float32))
    in_process = sorted(tuple(p[1:, 0].tolist()) for p, _ in my_dataset)
    for init in (zds.zarrdataset_worker_init_fn, None):
        my_dataloader = DataLoader(my_dataset, num_workers=2, worker_init_fn=init, batch_size=4)
        seen = []
        for pos, sample in my_dataloader:
            assert sample.dtype == torch.float32 and sample.shape[1:] == (3, 128, 128)
            for p, s in zip(pos, sample, strict=True):
                (y0, y1), (x0, x1) = p[1:].tolist()
                np.testing.assert_array_equal(s.numpy(), level(1)[:, y0:y1, x0:x1])
                seen.append((y0, x0))
        assert sorted(seen) == in_process and len(seen) == len(set(seen)) > 5


def _hits(mask: np.ndarray, size: int, patch: int) -> list[tuple[int, int]]:
    """Grid patches whose window meets a True cell of a mask spanning the image."""
    cell = np.array([size / mask.shape[0], size / mask.shape[1]])
    out = []
    for y in range(0, size - patch + 1, patch):
        for x in range(0, size - patch + 1, patch):
            for my, mx in zip(*np.nonzero(mask), strict=True):
                if (y < (my + 1) * cell[0] and my * cell[0] < y + patch
                        and x < (mx + 1) * cell[1] and mx * cell[1] < x + patch):
                    out.append((y, x))
                    break
    return out


def test_basic_masked_datasets_example(slide, level):
    mask = np.array([
        [0, 0, 0, 0],
        [0, 0, 1, 0],
        [0, 1, 0, 0],
    ], dtype=bool)
    patch_sampler = zds.PatchSampler(patch_size=dict(Y=128, X=128))
    image_specs = zds.ImagesDatasetSpecs(filenames=[slide], data_group="0", source_axes="CYX")
    masks_specs = zds.MasksDatasetSpecs(filenames=[mask], source_axes="YX")
    my_dataset = zds.ZarrDataset([image_specs, masks_specs], patch_sampler=patch_sampler,
                                 draw_same_chunk=False, shuffle=True, return_positions=True)
    got = sorted(tuple(p[1:, 0].tolist()) for p, _ in my_dataset)
    # cell (1, 2) spans rows [341.3, 682.7) and columns [512, 768): 4 x 2 patches;
    # cell (2, 1) rows [682.7, 1024) and columns [256, 512): 3 x 2 patches
    assert got == sorted(_hits(mask, 1024, 128)) and len(got) == 8 + 6
    sample = next(iter(zds.ZarrDataset([image_specs, masks_specs], patch_sampler=patch_sampler)))
    assert isinstance(sample, np.ndarray) and sample.shape == (3, 128, 128)


def test_advanced_masked_datasets_example(slide, level):
    mask = np.zeros((16, 16), bool)
    mask[3:9, 5:12] = True
    patch_sampler = zds.PatchSampler(patch_size=dict(Y=128, X=128))
    image_specs = zds.ImagesDatasetSpecs(filenames=[slide], data_group="0", source_axes="CYX")
    masks_specs = zds.LabelsDatasetSpecs(filenames=[mask], source_axes="YX", axes="ZYX",
                                         modality="masks")
    my_dataset = zds.ZarrDataset([image_specs, masks_specs], patch_sampler=patch_sampler,
                                 return_positions=True)
    out = list(my_dataset)
    assert sorted(tuple(p[1:, 0]) for p, _, _ in out) == sorted(_hits(mask, 1024, 128))
    pos, sample, sample_mask = out[0]
    (y0, y1), (x0, x1) = pos[1:].tolist()
    np.testing.assert_array_equal(sample, level(0)[:, y0:y1, x0:x1])
    np.testing.assert_array_equal(sample_mask[0], mask[y0 // 64:y1 // 64, x0 // 64:x1 // 64])

    # a mask made per image by WSITissueMaskGenerator on the low-resolution level "1"
    patch_sampler = zds.PatchSampler(patch_size=dict(Y=128, X=128), min_area=1 / 16)
    mask_func = zds.WSITissueMaskGenerator(mask_scale=1 / 4, min_size=4, area_threshold=16,
                                           axes="ZYX")
    masks_specs = zds.MasksDatasetSpecs(filenames=[slide], data_group="1", source_axes="CYX",
                                        axes="YXC", image_loader_func=mask_func)
    my_dataset = zds.ZarrDataset([image_specs, masks_specs], patch_sampler=patch_sampler,
                                 shuffle=True, return_positions=True)
    got = sorted(tuple(p[1:, 0].tolist()) for p, _ in my_dataset)
    tissue = mask_func(np.moveaxis(level(1), 0, -1))[0]
    assert tissue.shape == (128, 128)  # 1/4 of level "1": the generated mask's own scale
    starts = np.array([(y, x) for y in range(0, 1024, 128) for x in range(0, 1024, 128)])
    cover = window_coverage(tissue, [128 / 1024, 128 / 1024], starts, [128, 128])
    expected = sorted(map(tuple, starts[cover >= 1 / 16].tolist()))
    assert got == expected and 0 < len(got) < 64
    grey = [level(0)[:, y:y + 128, x:x + 128].mean() for y, x in got]
    background = level(0)[:, :, :].mean(axis=0)
    assert np.mean(grey) < np.percentile(background, 90)


def test_basic_labeled_datasets_example(slide, level):
    patch_size = dict(Y=256, X=256)
    patch_sampler = zds.PatchSampler(patch_size=patch_size)
    image_specs = zds.ImagesDatasetSpecs(filenames=[slide], data_group="0", source_axes="CYX")
    labels_specs = zds.LabelsDatasetSpecs(filenames=[np.array([1])], source_axes="L")
    my_dataset = zds.ZarrDataset([image_specs, labels_specs], patch_sampler=patch_sampler,
                                 shuffle=True)
    for i, (sample, label) in enumerate(my_dataset):
        assert sample.shape == (3, 256, 256) and label.tolist() == [1]
        if i >= 4:
            break

    # dense labels at 1/8 of the image's resolution
    grey = level(1).mean(axis=0)
    labels = grey[::4, ::4] < 200
    labels_specs = zds.LabelsDatasetSpecs(filenames=[labels], source_axes="YX")
    my_dataset = zds.ZarrDataset([image_specs, labels_specs], patch_sampler=patch_sampler,
                                 shuffle=True, return_positions=True)
    count = 0
    for pos, sample, label in my_dataset:
        (y0, y1), (x0, x1) = pos[1:].tolist()
        assert label.shape == (32, 32) and label.dtype == bool
        np.testing.assert_array_equal(label, labels[y0 // 8:y1 // 8, x0 // 8:x1 // 8])
        np.testing.assert_array_equal(sample, level(0)[:, y0:y1, x0:x1])
        count += 1
    assert count == 16


def test_advanced_example_pytorch_3d_chain(volumes):
    torch.manual_seed(478964)
    patch_size = dict(Z=4, Y=32, X=32)
    patch_sampler = zds.PatchSampler(patch_size=patch_size)
    img_preprocessing = zds.ToDtype(dtype=np.float16)
    my_datasets = [
        zds.ZarrDataset(
            [zds.ImagesDatasetSpecs(filenames=fn, data_group=None, source_axes="TCZYX",
                                    transform=img_preprocessing)],
            patch_sampler=patch_sampler, shuffle=True, return_positions=True,
            return_worker_id=True)
        for fn, _ in volumes
    ]
    my_chain_dataset = ChainDataset(my_datasets)
    my_dataloader = DataLoader(my_chain_dataset, num_workers=2,
                               worker_init_fn=zds.chained_zarrdataset_worker_init_fn,
                               batch_size=2)
    seen, readers = [], {}
    for wid, pos, sample in my_dataloader:
        assert sample.shape == (2, 1, 1, 4, 32, 32) and sample.dtype == torch.float16
        for w, p, s in zip(wid, pos, sample, strict=True):
            assert p[:2].tolist() == [[0, -1], [0, -1]]
            box = tuple(slice(None) if b < 0 else slice(a, b) for a, b in p.tolist())
            match = [k for k, (_, data) in enumerate(volumes)
                     if np.array_equal(data[box].astype(np.float16), s.numpy())]
            assert len(match) == 1
            seen.append((match[0], tuple(p[2:, 0].tolist())))
            readers.setdefault(match[0], set()).add(int(w))
    assert len(seen) == len(set(seen)) == 3 * 2 * 2 * 2
    assert all(len(w) == 1 for w in readers.values())  # each volume read whole by one worker
    assert set().union(*readers.values()) == {0, 1}


def test_advanced_example_pytorch_inference(tczyx):
    path, data = tczyx
    patch_size = dict(Y=128, X=128)
    pad = dict(Y=16, X=16)
    patch_sampler = zds.PatchSampler(patch_size=patch_size, pad=pad,
                                     allow_incomplete_patches=True)
    image_specs = zds.ImagesDatasetSpecs(filenames=[path], data_group="", source_axes="TCZYX",
                                         axes="YXC", roi="0,0,0,0,0:1,-1,1,-1,-1")
    my_dataset = zds.ZarrDataset(image_specs, patch_sampler=patch_sampler, return_positions=True)
    assert "{'Z': 1, 'Y': 128, 'X': 128}" in repr(my_dataset)

    def to_tensor(image):  # torchvision.transforms.ToTensor for float HWC arrays
        return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))

    my_dataset.add_transform("images", [zds.ToDtype(dtype=np.float32), to_tensor])
    my_dataloader = DataLoader(my_dataset, num_workers=2)
    z_arr = zarr.open_array(path, mode="r")
    H, W = z_arr.shape[-2], z_arr.shape[-1]
    pad_H, pad_W = (128 - H) % 128, (128 - W) % 128
    z_prediction = zarr.zeros((3, H + pad_H, W + pad_W), dtype=np.float32, chunks=(3, 128, 128))

    def model(x):  # the identity
        return x

    tiles = 0
    for pos, sample in my_dataloader:
        assert sample.shape == (1, 3, 160, 160)
        pred_pos = (slice(None),
                    slice(pos[0, 0, 0].item() + 16, pos[0, 0, 1].item() - 16),
                    slice(pos[0, 1, 0].item() + 16, pos[0, 1, 1].item() - 16))
        pred = model(sample)
        z_prediction[pred_pos] = pred.detach().cpu().numpy()[0, :, 16:-16, 16:-16]
        tiles += 1
    assert tiles == 4 * 4
    stitched = z_prediction[:, :H, :W]
    np.testing.assert_array_equal(stitched, data[0, :, 0].astype(np.float32))
    assert not z_prediction[:, H:, :].any() and not z_prediction[:, :, W:].any()

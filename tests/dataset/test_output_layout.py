"""One output layout per modality across the formats of a table: zarr and
TIFF images both come out channel-first and collate; tables whose patches
cannot be stacked fail at construction with the fix."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
from torch.utils.data import DataLoader

from zarrdask.dataset import PatchDataset
from zarrdask.errors import DatasetError


def _ome_tiff(path, data: np.ndarray) -> str:
    tifffile.imwrite(path, data, tile=(64, 64), photometric="rgb" if data.ndim == 3 else None,
                     ome=True)
    return str(path)


@pytest.fixture(scope="module")
def rgb_tiff(tmp_path_factory) -> tuple[str, np.ndarray]:
    data = np.random.default_rng(3).integers(0, 255, (320, 384, 3), dtype=np.uint8)
    return _ome_tiff(tmp_path_factory.mktemp("tif") / "rgb.ome.tif", data), data


def test_zarr_and_ome_tiff_images_are_both_channel_first_and_collate(slide3, rgb_tiff, make_table,
                                                                     pixels):
    path, tiff = rgb_tiff
    table = make_table([slide3, path], patch=64, stride=128)
    ds = PatchDataset(table, shuffle=True, seed=2)
    zarr0 = pixels(slide3, 0)
    seen = 0
    for batch in DataLoader(ds, batch_size=8, num_workers=2):
        assert tuple(batch["images"].shape[1:]) == (3, 64, 64)
        for img, image_id, pos in zip(batch["images"].numpy(), batch["image_id"].tolist(),
                                      batch["position"].numpy(), strict=True):
            (y0, y1), (x0, x1) = pos.tolist()
            expected = zarr0[:, y0:y1, x0:x1] if image_id == 0 else \
                tiff[y0:y1, x0:x1].transpose(2, 0, 1)
            np.testing.assert_array_equal(img, expected)
            seen += 1
    assert seen == len(table) and {0, 1} <= set(table.frame["image_id"])
    # output_dims still chooses the order, for every image alike
    last = next(iter(PatchDataset(table, output_dims={"images": "yxc"})))
    assert last["images"].shape == (64, 64, 3)
    # each source's stored order cannot be batched: said at construction
    with pytest.raises(DatasetError, match=r"(?s)patch shapes.*\(3, 64, 64\).*\(64, 64, 3\)"):
        PatchDataset(table, output_dims="stored")


def test_mixed_dtypes_fail_at_construction_naming_images_and_the_fix(slide3, tmp_path, make_table):
    data = np.random.default_rng(4).integers(0, 4000, (256, 256, 3), dtype=np.uint16)
    path = _ome_tiff(tmp_path / "deep.ome.tif", data)
    table = make_table([slide3, path], patch=64)
    with pytest.raises(DatasetError, match=r"(?s)mix dtypes.*uint8.*slide3.*uint16.*deep\.ome\.tif"
                                           r".*transforms=\{'images': fn\}"):
        PatchDataset(table)
    # a transform that makes them uniform is the fix: construction then trusts it
    ds = PatchDataset(table, transforms={"images": lambda a: a.astype(np.float32)})
    batch = next(iter(DataLoader(ds, batch_size=len(table))))
    assert batch["images"].dtype.is_floating_point and len(batch["images"]) == len(table)


def test_mixed_channel_counts_fail_at_construction(slide3, tmp_path, make_table):
    gray = np.random.default_rng(5).integers(0, 255, (256, 256), dtype=np.uint8)
    path = _ome_tiff(tmp_path / "gray.ome.tif", gray)
    table = make_table([slide3, path], patch=64)
    with pytest.raises(DatasetError, match=r"(?s)channel counts.*\(3, 64, 64\).*\(1, 64, 64\)"
                                           r".*gray\.ome\.tif"):
        PatchDataset(table)


def test_compat_layer_keeps_each_source_order_for_its_axes_stages():
    import zarrdask as zds

    image = np.random.default_rng(6).integers(0, 255, (120, 100, 3), dtype=np.uint8)
    ds = zds.ZarrDataset(patch_sampler=zds.PatchSampler(32))
    ds.add_modality("image", image, "YXC", axes="CYX")
    np.testing.assert_array_equal(next(iter(ds)), image[:32, :32].transpose(2, 0, 1))

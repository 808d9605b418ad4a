"""Direct tile decoding of local tiled TIFF levels (dataset/tiff_tiles.py):
the same pixels as tifffile's own read for JPEG, deflate with a predictor,
edge tiles and SubIFD levels; other layouts keep the zarr path; damaged
tiles are typed errors; DataLoader worker processes reopen the file."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile
import wsi_files
from torch.utils.data import DataLoader

from zarrdask.dataset import PatchDataset, PatchLoader
from zarrdask.errors import CorruptChunkError


def _check_all(ds, reference: np.ndarray) -> int:
    n = 0
    for s in ds:
        (y0, y1), (x0, x1) = s["position"].tolist()
        want = np.zeros_like(s["images"])  # channel-first; padded past the edge
        part = reference[y0:y1, x0:x1].transpose(2, 0, 1)
        want[:, :part.shape[1], :part.shape[2]] = part
        np.testing.assert_array_equal(s["images"], want)
        n += 1
    return n


@pytest.mark.parametrize("compression", ["jpeg", "zlib"])
def test_levels_decode_like_tifffile_with_edge_tiles(tmp_path, make_table, compression):
    base = wsi_files.rgb_slide((300, 420), seed=2)  # not a multiple of the 128² tiles
    path = str(tmp_path / f"p-{compression}.tif")
    wsi_files.write_generic_pyramid(path, base, factors=(2,), compression=compression)
    for level in (0, 1):
        table = make_table([path], patch=96, stride=80, level=level, allow_incomplete=True)
        ds = PatchDataset(table)
        assert _check_all(ds, tifffile.imread(path, level=level)) == len(ds) > 0
        assert set(ds.read_stats()["modes"].values()) == {"tiff-direct"}


def test_a_predictor_and_grayscale_decode_like_tifffile(tmp_path, make_table):
    rng = np.random.default_rng(3)
    image = rng.integers(0, 4000, (200, 150), dtype=np.uint16)
    path = str(tmp_path / "gray.tif")
    tifffile.imwrite(path, image, tile=(64, 64), compression="zlib", predictor=True)
    table = make_table([path], patch=50, stride=50, axes="yx", allow_incomplete=True)
    ds = PatchDataset(table)
    for s in ds:
        (y0, y1), (x0, x1) = s["position"].tolist()
        part = image[y0:y1, x0:x1]
        np.testing.assert_array_equal(s["images"][:part.shape[0], :part.shape[1]], part)
    assert set(ds.read_stats()["modes"].values()) == {"tiff-direct"}


def test_stripped_tiffs_keep_the_zarr_path(tmp_path, make_table):
    image = wsi_files.rgb_slide((130, 100), seed=4)
    path = str(tmp_path / "strips.tif")
    tifffile.imwrite(path, image, photometric="rgb", rowsperstrip=16)
    table = make_table([path], patch=32)
    ds = PatchDataset(table)
    assert _check_all(ds, image) == len(ds)
    assert set(ds.read_stats()["modes"].values()) == {"zarr"}


@pytest.mark.timeout(120)
def test_worker_processes_and_loader_threads_read_the_tiles(tmp_path, make_table):
    base = wsi_files.rgb_slide((512, 384), seed=5)
    path = str(tmp_path / "w.tif")
    wsi_files.write_generic_pyramid(path, base, factors=(2,), compression="jpeg")
    reference = tifffile.imread(path)
    table = make_table([path], patch=64)
    seen = 0
    for batch in DataLoader(PatchDataset(table, shuffle=True), batch_size=8, num_workers=2):
        for img, pos in zip(batch["images"], batch["position"], strict=True):
            (y0, y1), (x0, x1) = pos.tolist()
            np.testing.assert_array_equal(img.numpy(), reference[y0:y1, x0:x1].transpose(2, 0, 1))
            seen += 1
    assert seen == len(table)
    loader = PatchLoader(table, batch_size=16, threads=2)
    assert sum(len(b["images"]) for b in loader) == len(table)
    assert set(loader.read_stats()["modes"].values()) == {"tiff-direct"}


def test_a_damaged_tile_is_a_corrupt_chunk_naming_it(tmp_path, make_table):
    path = tmp_path / "bad.tif"
    wsi_files.write_generic_pyramid(path, wsi_files.rgb_slide((256, 256), seed=6), factors=(2,),
                                    compression="jpeg")
    wsi_files.damage_last_tile(path)
    table = make_table([str(path)], patch=128)
    with pytest.raises(CorruptChunkError, match=r"chunk \(1, 1, 0\) of images.*bad\.tif"):
        for _ in PatchDataset(table):
            pass


@pytest.mark.parametrize("write", [wsi_files.write_svs, wsi_files.write_ndpi_like,
                                   wsi_files.write_scn_like, wsi_files.write_philips_like],
                         ids=["svs", "ndpi-like", "scn-like", "philips-like"])
def test_vendor_levels_read_directly_give_tifffiles_pixels(tmp_path, make_table, write):
    path = str(tmp_path / "slide.tif")
    write(path, wsi_files.rgb_slide((512, 384), seed=8))
    table = make_table([path], patch=100, stride=90, allow_incomplete=True)
    ds = PatchDataset(table)
    assert _check_all(ds, tifffile.imread(path)) == len(ds) > 0
    assert set(ds.read_stats()["modes"].values()) == {"tiff-direct"}

"""Stitching is exact: what the writer blends is what the patches said."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import zarr

import zarrdask as zds
from zarrdask.dataset import PatchDataset
from zarrdask.predict import PredictionWriter, blend_window


def _run(table, out, model, *, batch_size=8, **kwargs) -> PredictionWriter:
    loader = torch.utils.data.DataLoader(PatchDataset(table), batch_size=batch_size)
    with PredictionWriter(table, out, **kwargs) as writer:
        for batch in loader:
            writer.write(model(batch), batch["position"], batch["image_id"])
    return writer


def _pixel_size(image) -> dict[str, float]:
    return {d: image.coords[d].attrs["scale"] for d in ("y", "x")}


def _level0(writer: PredictionWriter, image_id: int = 0) -> np.ndarray:
    return zarr.open_array(f"{writer.outputs[image_id]}/0", mode="r")[:]


@pytest.mark.parametrize("blend", ["mean", "gaussian", "cosine", "max"])
def test_identity_model_gives_back_the_input_exactly(overlap_table, slide_pixels, tmp_path, blend):
    # overlapping (stride 48 < 64), padded (pad 8 cropped), incomplete edge
    # patches (300 is not 48 k + 64), output chunks (100²) cut by patches
    writer = _run(overlap_table, tmp_path / "out", lambda b: b["images"].float(), channels=3,
                  blend=blend, chunks=100)
    assert writer.complete == {0: True}
    np.testing.assert_array_equal(_level0(writer), slide_pixels.astype(np.float32))


def test_a_constant_model_gives_a_constant_map_where_patches_are(slide, tmp_path):
    # 64² patches with stride 80 leave 16-pixel gaps; no incomplete patches
    table = zds.build_table([slide], patch_size=64, stride=80)
    writer = _run(table, tmp_path / "out",
                  lambda b: torch.full((len(b["image_id"]), 1, 64, 64), 2.5), blend="gaussian")
    out = _level0(writer)[0]
    covered = np.zeros(out.shape, bool)
    for y in range(0, 300 - 63, 80):
        for x in range(0, 300 - 63, 80):
            covered[y:y + 64, x:x + 64] = True
    assert covered.sum() < covered.size
    np.testing.assert_array_equal(out[covered], 2.5)
    assert np.isnan(out[~covered]).all(), "pixels no patch predicted must read as NaN"


@pytest.mark.parametrize("blend", ["mean", "gaussian", "cosine"])
def test_blending_weights_each_patch_by_its_window(overlap_table, tmp_path, blend):
    # every patch predicts its own constant: the output must be the
    # window-weighted mean of the constants of the patches over each pixel
    def model(batch):
        pos = batch["position"][:, :, 0].double()
        value = (pos[:, 0] * 1000 + pos[:, 1]) / 7.0
        return value[:, None, None, None].expand(-1, 1, 80, 80).float()  # padded size

    writer = _run(overlap_table, tmp_path / "out", model, blend=blend, chunks=100)
    num = np.zeros((300, 300))
    den = np.zeros((300, 300))
    window = blend_window((64, 64), blend)
    for (y, x) in zip(overlap_table.frame["y"], overlap_table.frame["x"], strict=True):
        value = np.float32((y * 1000 + x) / 7.0)
        h, w = min(64, 300 - y), min(64, 300 - x)
        num[y:y + h, x:x + w] += window[:h, :w] * value
        den[y:y + h, x:x + w] += window[:h, :w]
    np.testing.assert_allclose(_level0(writer)[0], num / den, rtol=1e-6)


def test_blend_windows_are_positive_peaked_and_symmetric():
    for blend in ("gaussian", "cosine"):
        w = blend_window((16, 10), blend)
        assert w.shape == (16, 10) and (w > 0).all() and w.max() == 1.0
        np.testing.assert_allclose(w, w[::-1, ::-1])
        assert w[8, 5] > w[0, 0]
    np.testing.assert_array_equal(blend_window((4, 4), "mean"), np.ones((4, 4)))


def test_per_patch_scores_land_one_value_per_patch(slide, tmp_path):
    table = zds.build_table([slide], patch_size=64, stride=64)

    def model(batch):
        return batch["position"][:, :, 0].float()  # (batch, 2): the patch's start

    writer = _run(table, tmp_path / "out", model, channels=2, level="patch")
    out = _level0(writer)
    assert out.shape == (2, 5, 5)  # starts 0, 64, ..., 256 (the last patch is incomplete)
    starts = np.arange(4) * 64
    np.testing.assert_array_equal(out[0, :4, :4], np.repeat(starts[:, None], 4, axis=1))
    np.testing.assert_array_equal(out[1, :4, :4], np.repeat(starts[None], 4, axis=0))
    assert np.isnan(out[:, 4]).all() and np.isnan(out[:, :, 4]).all()
    # physically: one pixel per patch, centred on it
    image = zds.open_image(writer.outputs[0])
    assert _pixel_size(image) == {"y": 32.0, "x": 32.0}
    np.testing.assert_allclose(image.coords["y"].values[:4], 10.0 + starts * 0.5)
    np.testing.assert_allclose(image.coords["x"].values[:4], 20.0 + starts * 0.5)


def test_a_coarser_heat_map_is_placed_at_its_level(overlap_table, slide_pixels, tmp_path):
    # level 2: one output pixel per 4x4 input pixels; the model pools by 4
    def model(batch):
        return torch.nn.functional.avg_pool2d(batch["images"].double(), 4).float()

    writer = _run(overlap_table, tmp_path / "out", model, channels=3, level=2)
    out = _level0(writer)
    assert out.shape == (3, 75, 75)
    expected = slide_pixels.astype(np.float64).reshape(3, 75, 4, 75, 4).mean(axis=(2, 4))
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    image = zds.open_image(writer.outputs[0])
    assert _pixel_size(image) == {"y": 2.0, "x": 2.0}


def test_max_blend_keeps_masks_binary(overlap_table, slide_pixels, tmp_path):
    def model(batch):
        return (batch["images"][:, :1] > 128).to(torch.uint8)

    writer = _run(overlap_table, tmp_path / "out", model, dtype="uint8", blend="max", chunks=100)
    out = _level0(writer)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out[0], (slide_pixels[0] > 128).astype(np.uint8))
    levels = zds.open_pyramid(writer.outputs[0])
    assert set(np.unique(levels["1"]["image"].values)) <= {0, 1}


def test_each_image_of_a_table_gets_its_own_output(slide, tmp_path):
    from zarrdask.datasets import write_synthetic_slide

    other = write_synthetic_slide(tmp_path / "other.zarr", size=200, chunk=64, levels=1, seed=8)
    table = zds.build_table([slide, other, slide], patch_size=64, stride=48, pad=8,
                            allow_incomplete_patches=True)
    writer = _run(table, tmp_path / "out", lambda b: b["images"].float(), channels=3,
                  blend="gaussian", chunks=100)
    assert writer.complete == {0: True, 1: True, 2: True}
    assert [p.rsplit("/", 1)[-1] for p in writer.outputs.values()] == [
        "slide-0.ome.zarr", "other.ome.zarr", "slide-2.ome.zarr"]
    for image_id, source in enumerate([slide, other, slide]):
        np.testing.assert_array_equal(_level0(writer, image_id),
                                      zarr.open_array(f"{source}/0", mode="r")[:].astype(np.float32))


def test_a_table_read_at_level_1_writes_at_level_1(slide, tmp_path):
    table = zds.build_table([{"source": slide, "level": 1}], patch_size=32, stride=24, pad=4,
                            allow_incomplete_patches=True)
    writer = _run(table, tmp_path / "out", lambda b: b["images"].float(), channels=3)
    level1 = zds.open_image(slide, level=1)
    np.testing.assert_array_equal(_level0(writer), level1.values.astype(np.float32))
    out = zds.open_image(writer.outputs[0])
    assert _pixel_size(out) == _pixel_size(level1) == {"y": 1.0, "x": 1.0}
    for d in ("y", "x"):
        np.testing.assert_allclose(out.coords[d].values, level1.coords[d].values)


def test_a_3d_grid_stitches_a_volume_exactly(tmp_path):
    volume = np.random.default_rng(0).integers(0, 255, (20, 70, 90), dtype=np.uint8)
    store = zarr.create_array(str(tmp_path / "vol.zarr"), shape=volume.shape, chunks=(10, 32, 32),
                              dtype="uint8")
    store[:] = volume
    table = zds.build_table([{"source": str(tmp_path / "vol.zarr"), "axes": "ZYX"}],
                            patch_size=16, stride=12, pad=2, spatial_axes="ZYX",
                            allow_incomplete_patches=True)
    writer = _run(table, tmp_path / "out", lambda b: b["images"].float()[:, None], chunks=32)
    np.testing.assert_array_equal(_level0(writer)[0], volume.astype(np.float32))
    pyramid = zds.open_pyramid(writer.outputs[0])
    assert pyramid["1"]["image"].sizes == {"c": 1, "z": 20, "y": 35, "x": 45}  # z kept whole

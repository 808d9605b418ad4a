"""The output is a valid OME-NGFF 0.5 image in the input's physical space,
and bad arguments fail with a PredictionError naming the fix."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import zarr

import zarrdask as zds
from zarrdask.dataset import PatchDataset
from zarrdask.predict import PredictionError, PredictionWriter


@pytest.fixture(scope="module")
def written(overlap_table, tmp_path_factory):
    out = tmp_path_factory.mktemp("written")
    loader = torch.utils.data.DataLoader(PatchDataset(overlap_table), batch_size=8)
    with PredictionWriter(overlap_table, out, channels=3, chunks=100) as writer:
        for batch in loader:
            writer.write(batch["images"].float(), batch["position"], batch["image_id"])
    return writer


def test_multiscales_metadata_reads_back_in_the_inputs_space(written, slide):
    path = written.outputs[0]
    assert path.endswith("/slide.ome.zarr")
    meta = json.loads(open(f"{path}/zarr.json").read())
    assert meta["zarr_format"] == 3 and meta["node_type"] == "group"
    ome = meta["attributes"]["ome"]
    assert ome["version"] == "0.5"
    ms = ome["multiscales"][0]
    assert [a["name"] for a in ms["axes"]] == ["c", "y", "x"]
    assert ms["axes"][1] == {"name": "y", "type": "space", "unit": "micrometer"}
    assert [d["path"] for d in ms["datasets"]] == ["0", "1", "2"]  # 300 -> 150 -> 75 (< 100)
    pyramid = zds.open_pyramid(path)
    source = zds.open_pyramid(slide)
    for level in ("0", "1"):
        got, want = pyramid[level]["image"], source[level]["image"]
        assert got.shape == want.shape
        for d in ("y", "x"):  # the prediction overlays the slide: same physical pixels
            np.testing.assert_allclose(got.coords[d].values, want.coords[d].values)
    assert pyramid["2"]["image"].shape == (3, 75, 75)
    # level 1 is the mean of 2x2 blocks of level 0
    level0 = pyramid["0"]["image"].values.astype(np.float64)
    np.testing.assert_allclose(pyramid["1"]["image"].values,
                               level0.reshape(3, 150, 2, 150, 2).mean(axis=(2, 4)), rtol=1e-6)


def test_chunks_carry_crc32c_checksums_after_the_compressor(written):
    for level in ("0", "1", "2"):
        meta = json.loads(open(f"{written.outputs[0]}/{level}/zarr.json").read())
        names = [c["name"] for c in meta["codecs"]]
        assert names == ["bytes", "blosc", "crc32c"], names
        assert meta["dimension_names"] == ["c", "y", "x"]


def test_a_corrupted_chunk_is_detected_by_its_checksum(written, tmp_path):
    import shutil

    copy = tmp_path / "copy.ome.zarr"
    shutil.copytree(written.outputs[0], copy)
    chunk = copy / "0" / "c" / "0" / "1" / "1"
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(Exception, match="(?i)checksum|crc"):
        zarr.open_array(copy / "0", mode="r")[:, 100:200, 100:200]


def test_no_scratch_is_left_behind(written):
    import os

    assert not os.path.exists(os.path.join(written.out, ".zarrdask-predict"))


def _one_batch(table):
    return next(iter(torch.utils.data.DataLoader(PatchDataset(table), batch_size=4)))


def test_bad_writes_name_the_fix(overlap_table, tmp_path):
    batch = _one_batch(overlap_table)
    writer = PredictionWriter(overlap_table, tmp_path / "out", channels=2)
    with pytest.raises(PredictionError, match="channels=2"):
        writer.write(batch["images"].float(), batch["position"], batch["image_id"])
    with pytest.raises(PredictionError, match="pixels along 'y'"):
        writer.write(torch.zeros(4, 2, 50, 80), batch["position"], batch["image_id"])
    moved = batch["position"].clone()
    moved[:, 0] += 1
    with pytest.raises(PredictionError, match="not a row of the writer's table"):
        writer.write(torch.zeros(4, 2, 80, 80), moved, batch["image_id"])
    with pytest.raises(PredictionError, match="image_id 5 has no rows"):
        writer.write(torch.zeros(4, 2, 80, 80), batch["position"], torch.full((4,), 5))
    broken = torch.zeros(4, 2, 80, 80)
    broken[2, 1, 5, 5] = float("nan")  # in the pad: cropped, harmless
    writer.write(broken, batch["position"], batch["image_id"])
    broken[2, 1, 40, 40] = float("nan")
    start = {"y": int(batch["position"][2, 0, 0]), "x": int(batch["position"][2, 1, 0])}
    with pytest.raises(PredictionError, match=re.escape(f"at position {start} holds NaN")):
        writer.write(broken, batch["position"], batch["image_id"])
    assert isinstance(PredictionError("x"), ValueError)


def test_bad_options_name_the_fix(overlap_table, tmp_path):
    with pytest.raises(PredictionError, match="blend='median'"):
        PredictionWriter(overlap_table, tmp_path / "o", blend="median")
    with pytest.raises(PredictionError, match="does not divide the patch size"):
        PredictionWriter(overlap_table, tmp_path / "o", level=7)
    with pytest.raises(PredictionError, match="level='coarse'"):
        PredictionWriter(overlap_table, tmp_path / "o", level="coarse")
    patch_level = PredictionWriter(overlap_table, tmp_path / "o", level="patch")
    batch = _one_batch(overlap_table)
    with pytest.raises(PredictionError, match="one value per patch"):
        patch_level.write(torch.zeros(4, 1, 64, 64), batch["position"], batch["image_id"])


def test_an_existing_output_of_another_shape_is_not_overwritten(overlap_table, tmp_path):
    batch = _one_batch(overlap_table)
    first = PredictionWriter(overlap_table, tmp_path / "out", channels=1)
    first.write(torch.zeros(4, 1, 64, 64), batch["position"], batch["image_id"])
    second = PredictionWriter(overlap_table, tmp_path / "out", channels=2)
    with pytest.raises(PredictionError, match="remove it or write to another `out`"):
        second.write(torch.zeros(4, 2, 64, 64), batch["position"], batch["image_id"])


def test_ome_zarr_py_reads_the_output(written, slide_pixels):
    pytest.importorskip("ome_zarr")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    node = next(iter(Reader(parse_url(written.outputs[0]))()))
    assert [tuple(d.shape) for d in node.data] == [(3, 300, 300), (3, 150, 150), (3, 75, 75)]
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "y", "x"]
    transforms = node.metadata["coordinateTransformations"][0]
    assert transforms == [{"type": "scale", "scale": [1.0, 0.5, 0.5]},
                          {"type": "translation", "translation": [0.0, 10.0, 20.0]}]
    np.testing.assert_array_equal(np.asarray(node.data[0]), slide_pixels.astype(np.float32))

"""Predictions written to S3 (moto's server on loopback) read back the same."""

from __future__ import annotations

import numpy as np
import torch

import zarrdask as zds
from zarrdask.dataset import PatchDataset
from zarrdask.predict import PredictionWriter


def test_predictions_written_to_s3_read_back(s3_server, overlap_table, slide_pixels):
    out = s3_server.url("predictions/run1")
    loader = torch.utils.data.DataLoader(PatchDataset(overlap_table), batch_size=8)
    with PredictionWriter(overlap_table, out, channels=3, chunks=100,
                          storage_options=s3_server.storage_options) as writer:
        for batch in loader:
            writer.write(batch["images"].float(), batch["position"], batch["image_id"])
    assert writer.complete == {0: True}
    assert writer.outputs[0] == f"{out}/slide.ome.zarr"
    image = zds.open_image(writer.outputs[0], storage_options=s3_server.storage_options)
    np.testing.assert_array_equal(image.values, slide_pixels.astype(np.float32))
    pyramid = zds.open_pyramid(writer.outputs[0], storage_options=s3_server.storage_options)
    assert list(pyramid.children) == ["0", "1", "2"]

    from zarrdask.io.location import get_filesystem

    fs, path = get_filesystem(out, s3_server.storage_options)
    keys = fs.find(path)
    assert keys and not any(".zarrdask-predict" in k for k in keys)

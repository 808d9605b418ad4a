"""The synthetic OME-TIFF slide reads back as the pixels and scale it was given."""

from __future__ import annotations

import numpy as np

import zarrdask as zd
from zarrdask.datasets import synthetic_slide, write_synthetic_ome_tiff


def test_synthetic_ome_tiff_reads_back_pixels_pyramid_and_scale(tmp_path):
    path = write_synthetic_ome_tiff(tmp_path / "s.ome.tif", size=600, tile=256, seed=3,
                                    pixel_size=0.25)
    image = zd.open_image(path)
    assert image.dims == ("y", "x", "c") and image.shape == (600, 600, 3)
    expected = synthetic_slide(600, chunk=256, seed=3).compute()
    np.testing.assert_array_equal(np.moveaxis(image.values, -1, 0), expected)
    assert float(image.x[1] - image.x[0]) == 0.25
    assert image.x.attrs["units"] == "micrometer"
    pyramid = zd.open_pyramid(path)
    assert len(pyramid.children) == 2
    level1 = zd.open_image(path, level=1)
    assert level1.shape == (300, 300, 3) and float(level1.x[1] - level1.x[0]) == 0.5

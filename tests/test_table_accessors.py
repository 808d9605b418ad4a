"""``PatchTable.images_frame``: the per-image side table (issue 15)."""

from __future__ import annotations

import zarrdask as zd


def test_images_frame_names_each_image_and_joins_onto_the_rows(slide_v2):
    table = zd.build_table([slide_v2, {"source": slide_v2, "level": 1}], patch_size=128)
    images = table.images_frame()
    assert list(images.index) == [0, 1] and images.index.name == "image_id"
    assert list(images["name"]) == [slide_v2, slide_v2]
    assert list(images["level"]) == [0, 1] and list(images["mpp"]) == [0.5, 1.0]
    assert list(images["reader"]) == ["zarr", "zarr"]
    rows = table.frame.join(images, on="image_id")
    assert len(rows) == len(table) == 8 * 8 + 4 * 4
    assert (rows["level"] == rows["image_id"]).all() and (rows["name"] == slide_v2).all()

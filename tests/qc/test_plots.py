"""Overlay extents, batch pictures and the notebook view of a table."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import xarray as xr

import zarrdask as zds
from zarrdask import plot
from zarrdask.dataset import PatchDataset


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    from zarrdask.datasets import write_synthetic_slide

    return write_synthetic_slide(tmp_path_factory.mktemp("plots") / "s.zarr", size=512, chunk=128,
                                 levels=3, seed=4)


def test_pixel_extent_spans_pixel_edges():
    arr = xr.DataArray(np.zeros((4, 5)), dims=("y", "x"),
                       coords={"y": 10.0 + 2.0 * np.arange(4), "x": -1.0 + 0.5 * np.arange(5)})
    assert plot.pixel_extent(arr) == (-1.0, 1.5, 18.0, 10.0)  # x: -1 .. 1 + 0.5; y: 10 .. 16 + 2
    bare = xr.DataArray(np.zeros((3, 2)), dims=("y", "x"))
    assert plot.pixel_extent(bare) == (0.0, 2.0, 3.0, 0.0)


def test_overlay_puts_every_layer_at_its_own_extent(slide, tmp_path):
    table = zds.build_table([slide], patch_size=64)
    with zds.PredictionWriter(table, tmp_path / "p", level="patch") as writer:
        for batch in torch.utils.data.DataLoader(PatchDataset(table), batch_size=16):
            writer.write(batch["images"].float().mean(dim=(1, 2, 3))[:, None],
                         batch["position"], batch["image_id"])
    prediction = zds.open_image(writer.outputs[0])
    mask = zds.tissue_mask(slide).load()
    fig = plot.overlay(slide, mask=mask, table=table, prediction=prediction, max_side=128)
    ax = fig.axes[0]
    image_layer, prediction_layer = ax.images
    assert image_layer.get_array().shape[:2] == (128, 128)  # level 2 of 512²
    np.testing.assert_allclose(image_layer.get_extent(), (0, 256, 256, 0))  # 0.5 µm pixels
    np.testing.assert_allclose(prediction_layer.get_extent(), (0, 256, 256, 0))  # 8x8 patches
    assert prediction_layer.get_array().shape == (8, 8)
    assert len(ax.collections[-1].get_paths()) == len(table)
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("x (µm)", "y (µm)")
    fig.savefig(tmp_path / "overlay.png")
    bare = plot.overlay(xr.DataArray(np.zeros((8, 8)), dims=("y", "x")))
    assert bare.axes[0].get_xlabel() == "x (pixels)"


def test_batch_draws_each_patch_with_its_position(slide):
    table = zds.build_table([slide], patch_size=64)
    batch = next(iter(torch.utils.data.DataLoader(PatchDataset(table), batch_size=6)))
    fig = plot.batch(batch, ncols=3)
    assert len(fig.axes) == 6
    for ax, pos in zip(fig.axes, batch["position"], strict=True):
        assert ax.get_title() == f"img 0 {int(pos[0, 0])},{int(pos[1, 0])}"
        assert ax.images[0].get_array().shape == (64, 64, 3)
    labelled = dict(batch, labels=torch.arange(6))
    assert plot.batch(labelled).axes[5].get_title().endswith("label 5")


def test_table_html_lists_counts_geometry_and_a_grid_sketch(slide):
    table = zds.build_table([slide, slide], patch_size=64, masks="tissue")
    html = table._repr_html_()
    counts = table.frame["image_id"].value_counts()
    assert f"{len(table)} patches of 64×64 px" in html
    assert f"<td>0</td><td>{table.images[0]['name']}</td><td>{counts[0]}</td>" in html
    assert "<td>0.5 × 0.5</td>" in html  # pixel size
    sketches = re.findall(r"<svg.*?</svg>", html)
    assert [s.count("<rect") for s in sketches] == [counts[0], counts[1]]


def test_annotations_are_drawn_in_micrometres_through_the_level0_pixel_size(slide):
    from shapely.geometry import Polygon, box, mapping

    pixel = float(zds.open_image(slide).x.attrs["scale"])
    ring = Polygon(box(100, 40, 300, 200).exterior.coords, [box(150, 80, 200, 120).exterior.coords])
    doc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "geometry": mapping(ring), "properties": {"classification": {"name": "Tumour"}}},
        {"type": "Feature", "geometry": mapping(box(0, 0, 50, 60)), "properties": {}}]}
    fig = plot.overlay(slide, annotations=doc, max_side=128)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert len(lines) == 3  # exterior, hole, the unclassified box
    (x0, x1), (y0, y1) = (lines[0].get_xdata().min(), lines[0].get_xdata().max()), \
        (lines[0].get_ydata().min(), lines[0].get_ydata().max())
    assert (x0, x1, y0, y1) == pytest.approx((100 * pixel, 300 * pixel, 40 * pixel, 200 * pixel))
    assert lines[1].get_xdata().max() == pytest.approx(200 * pixel)
    assert lines[0].get_color() == lines[1].get_color() != lines[2].get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["Tumour", "unclassified"]
    # the thumbnail is a coarser level; the polygons stay where the image pixels are
    assert ax.get_xlim() == pytest.approx((0.0, 512 * pixel))

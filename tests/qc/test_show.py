"""``zarrdask show`` draws the mask contour where tissue is and boxes only
over the kept patches: checked on the PNG's pixels."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

import zarrdask as zds
from zarrdask.cli import main

CYAN = np.array([0, 255, 255])
FACTOR = 4  # level 2 of the slide: 4 level-0 pixels per PNG pixel


@pytest.fixture(scope="module")
def qc_case(tmp_path_factory):
    from zarrdask.datasets import write_synthetic_slide

    root = tmp_path_factory.mktemp("qc")
    slide = write_synthetic_slide(root / "slide.zarr", size=1024, chunk=256, levels=3, seed=2)
    table = zds.build_table([slide], patch_size=64, masks="tissue", min_area=0.5)
    table_path = table.to_parquet(root / "table.parquet")
    return root, slide, table, table_path


def _png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def _render(root, slide, name, *extra):
    out = root / name
    assert main(["show", slide, "--out", str(out), "--max-side", "300", *extra]) == 0
    return _png(out)


def _near(mask: np.ndarray, pixels: int) -> np.ndarray:
    square = np.ones((3, 3), bool)
    return ndimage.binary_dilation(mask, square, iterations=pixels) if mask.any() else mask


def test_show_draws_the_contour_on_the_tissue_edge_and_boxes_on_kept_patches(qc_case):
    root, slide, table, table_path = qc_case
    base = _render(root, slide, "base.png")
    drawn = _render(root, slide, "qc.png", "--table", table_path, "--mask", "tissue")
    assert base.shape == drawn.shape == (256, 256, 3)  # one PNG pixel per level-2 pixel

    # the contour: pure cyan, along the edge of the tissue mask
    mask = np.asarray(zds.tissue_mask(slide).values, dtype=bool)
    up = np.kron(mask, np.ones((256 // mask.shape[0],) * 2, dtype=bool))
    edge = up ^ ndimage.binary_erosion(up, border_value=1)
    cyan = np.all(drawn == CYAN, axis=-1)
    assert cyan.sum() > 100
    assert not (cyan & ~_near(edge, 3)).any(), "contour pixels away from the tissue edge"
    assert _near(cyan, 3)[edge].mean() > 0.8, "tissue edge without a contour"

    # the boxes: every other changed pixel lies on the edge of a kept patch
    kept_edges = np.zeros((256, 256), bool)
    kept = set()
    for y, x in zip(table.frame["y"], table.frame["x"], strict=True):
        y0, x0, s = y // FACTOR, x // FACTOR, 64 // FACTOR
        box = np.zeros_like(kept_edges)
        box[y0:y0 + s + 1, x0:x0 + s + 1] = True  # outline on the edges y0 and y0 + s
        kept_edges |= box ^ ndimage.binary_erosion(box)
        kept.add((y, x))
    changed = np.any(drawn != base, axis=-1) & ~cyan
    assert changed.any()
    assert not (changed & ~_near(kept_edges, 1)).any(), "a box drawn where no patch was kept"
    # each kept patch has its outline drawn; patches the mask dropped have none
    for (y, x) in list(kept)[:20]:
        y0, x0 = y // FACTOR, x // FACTOR
        assert changed[y0:y0 + 16, x0:x0 + 16].any()
    dropped = [(y, x) for y in range(0, 1024, 64) for x in range(0, 1024, 64)
               if (y, x) not in kept]
    assert dropped
    far = [(y, x) for y, x in dropped
           if not _near(kept_edges | cyan, 2)[y // FACTOR:y // FACTOR + 16,
                                              x // FACTOR:x // FACTOR + 16].any()]
    assert far, "the test needs dropped patches away from the tissue"
    for y, x in far:
        assert not changed[y // FACTOR:y // FACTOR + 16, x // FACTOR:x // FACTOR + 16].any()


def test_show_writes_a_contact_sheet_or_one_png_per_slide(qc_case, tmp_path, capsys):
    root, slide, _table, table_path = qc_case
    sheet = tmp_path / "sheet.png"
    assert main(["show", slide, slide, "--table", table_path, "--out", str(sheet)]) == 0
    assert Image.open(sheet).size[0] > 2 * Image.open(sheet).size[1] * 0.9  # two side by side
    folder = tmp_path / "per-slide"
    assert main(["show", slide, "--out", str(folder), "--max-side", "300"]) == 0
    assert (folder / "slide.png").is_file()
    assert str(folder / "slide.png") in capsys.readouterr().out


def test_show_refuses_a_table_of_other_slides(qc_case, tmp_path, capsys):
    root, _slide, _table, table_path = qc_case
    from zarrdask.datasets import write_synthetic_slide

    other = write_synthetic_slide(tmp_path / "other.zarr", size=256, chunk=128, levels=1, seed=9)
    two = zds.build_table([other, other], patch_size=64)
    two_path = two.to_parquet(tmp_path / "two.parquet")
    assert main(["show", str(root / "slide.zarr"), "--table", two_path,
                 "--out", str(tmp_path / "x.png")]) == 2
    assert "the table lists none of" in capsys.readouterr().err

"""``zarrdask grid --labels``: per-slide GeoJSON annotations as labels from
the command line (issue 12), run as a user runs it (the console script)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from shapely.geometry import box, mapping
from test_cli import _one_error_line  # tests/ is on sys.path, as for wsi_files

import zarrdask as zd
from zarrdask.datasets import write_synthetic_slide
from zarrdask.grid.label_files import labels_for_sources, source_stem

EXE = str(Path(sys.executable).with_name("zarrdask"))
SIZE, PATCH = 256, 64


def _geojson(path: Path, tumour_box: tuple[int, int, int, int]) -> str:
    features = [{"type": "Feature", "geometry": mapping(box(*tumour_box)),
                 "properties": {"classification": {"name": "Tumour"}}},
                {"type": "Feature", "geometry": mapping(box(0, 0, 64, 64)),
                 "properties": {"classification": {"name": "Stroma"}}}]
    path.write_text(json.dumps({"type": "FeatureCollection", "features": features}))
    return str(path)


@pytest.fixture(scope="module")
def slides(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_labels")
    paths = [write_synthetic_slide(root / f"case_{i}.zarr", size=SIZE, chunk=128, levels=1,
                                   seed=i, pixel_size=0.5) for i in range(2)]
    (root / "ann").mkdir()
    anns = [_geojson(root / "ann" / "case_0.geojson", (64, 64, 192, 192)),
            _geojson(root / "ann" / "case_1.geojson", (128, 0, 256, 128))]
    return root, paths, anns


def _grid(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([EXE, "grid", *args, "--patch-size", str(PATCH), "--workers", "1",
                           "--quiet"], capture_output=True, text=True, cwd=cwd, timeout=300)


@pytest.mark.timeout(300)
def test_a_stem_pattern_and_repeated_flags_attach_each_slides_geojson(slides):
    root, paths, anns = slides
    out = _grid(*paths, "--labels", "ann/{stem}.geojson", "--out", "t.parquet", cwd=root)
    assert out.returncode == 0, out.stderr
    table = zd.read_table(root / "t.parquet")
    assert table.meta["label_classes"] == {"Stroma": 1, "Tumour": 2}
    assert table.equals(zd.build_table(paths, patch_size=PATCH, labels=anns))
    tumour = table.frame.set_index(["image_id", "y", "x"])["coverage_Tumour"]
    assert tumour[(0, 64, 64)] == 1.0 and tumour[(0, 0, 0)] == 0.0
    assert tumour[(1, 0, 128)] == 1.0 and tumour[(1, 64, 64)] == 0.0
    # the labels reach the samples
    ds = zd.PatchDataset(table, columns=["coverage_Tumour"])
    for sample in ds:
        (y0, y1), (x0, x1) = sample["position"].tolist()
        frac = float(np.mean(sample["labels"] == 2))
        assert sample["coverage_Tumour"].item() == pytest.approx(frac)


def test_repeated_labels_map_in_order_and_none_skips_a_source(slides):
    root, paths, anns = slides
    assert labels_for_sources([anns[0], "none"], paths) == [anns[0], None]
    assert labels_for_sources(None, paths) is None
    assert labels_for_sources([f"{root}/ann/{{stem}}.geojson"], paths) == anns
    assert source_stem("s3://bucket/slides/case_7.ome.tif") == "case_7"
    assert source_stem("/data/TCGA-A1.B2.svs") == "TCGA-A1.B2"


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_repeated_labels_on_the_command_line(slides):
    root, paths, anns = slides
    # repeated --labels, in the order of the sources; 'none' for a slide without
    out = _grid(*paths, "--labels", anns[0], "--labels", "none", "--out", "r.parquet", cwd=root)
    assert out.returncode == 0, out.stderr
    table = zd.read_table(root / "r.parquet")
    assert table.equals(zd.build_table(paths, patch_size=PATCH, labels=[anns[0], None]))


@pytest.mark.parametrize(("labels", "expected"), [
    (["ann/case_0.geojson"], "1 value(s) for 2 source(s); repeat --labels once per source"),
    (["a", "b", "c"], "3 value(s) for 2 source(s)"),
    (["ann/{slide}.geojson"], "the pattern 'ann/{slide}.geojson' has an unknown field"),
    (["ann/{stem}.json"], "ann/case_0.json (labels of"),
    (["ann/case_0.geojson", "ann/missing.geojson"], "ann/missing.geojson (labels of"),
])
def test_bad_labels_exit_2_with_one_line_before_any_cluster(slides, labels, expected):
    root, paths, _ = slides
    args = [a for value in labels for a in ("--labels", value)]
    out = _grid(*paths, *args, "--out", "bad.parquet", cwd=root)
    assert expected in _one_error_line(out)
    assert not (root / "bad.parquet").exists()

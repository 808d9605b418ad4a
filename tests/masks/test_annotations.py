"""GeoJSON (QuPath) and shapely annotations as masks and labels (issue 12).

Every expected raster is built independently of the rasteriser: axis-aligned
boxes by numpy slicing (a box ``[x0, x1) x [y0, y1)`` in level-0 pixel
coordinates covers exactly those pixels), other polygons by shapely's
point-in-polygon test at pixel centres.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import shapely
import torch
from shapely.geometry import MultiPolygon, Polygon, box, mapping
from torch.utils.data import DataLoader

from zarrdask import build_table
from zarrdask.dataset import PatchDataset
from zarrdask.datasets import write_synthetic_slide
from zarrdask.errors import GridParameterError, MaskError
from zarrdask.io import open_image
from zarrdask.masks import as_mask
from zarrdask.masks.annotations import Annotations, AnnotationWarning, rasterize_annotations
from zarrdask.table import read_table

SIZE, PIXEL, PATCH = 512, 0.5, 64
STROMA, TUMOR = 1, 2  # the default class map: sorted names numbered from 1


@pytest.fixture(scope="module")
def slide(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("ann") / "s.zarr"
    return write_synthetic_slide(path, size=SIZE, chunk=128, levels=2, seed=3, pixel_size=PIXEL)


@pytest.fixture(scope="module")
def image(slide):
    return open_image(slide)


def _feature(geom, name=None):
    props = {"objectType": "annotation"}
    if name is not None:
        props["classification"] = {"name": name, "color": [200, 0, 0]}
    return {"type": "Feature", "geometry": mapping(geom), "properties": props}


def qupath_features():
    """A QuPath-like export: a Tumor polygon with a hole, a Stroma
    multipolygon crossing chunk borders, a later Tumor box painted over the
    Stroma, and a point (no area)."""
    tumor = Polygon(box(40, 60, 200, 220).exterior.coords, [box(80, 100, 120, 140).exterior.coords])
    stroma = MultiPolygon([box(300, 20, 340, 90), box(250, 300, 500, 330)])
    return [_feature(tumor, "Tumor"), _feature(stroma, "Stroma"),
            _feature(box(320, 40, 360, 60), "Tumor"),
            {"type": "Feature", "geometry": {"type": "Point", "coordinates": [5, 5]},
             "properties": {"classification": {"name": "Tumor"}}}]


def expected_labels() -> np.ndarray:
    truth = np.zeros((SIZE, SIZE), dtype=np.uint8)
    truth[60:220, 40:200] = TUMOR
    truth[100:140, 80:120] = 0  # the hole
    truth[20:90, 300:340] = STROMA
    truth[300:330, 250:500] = STROMA
    truth[40:60, 320:360] = TUMOR  # later feature paints over the earlier one
    return truth


@pytest.fixture
def geojson_path(tmp_path) -> str:
    path = tmp_path / "slide.geojson"
    path.write_text(json.dumps({"type": "FeatureCollection", "features": qupath_features()}))
    return str(path)


def _windows(table):
    for row in table.frame.itertuples():
        yield row, (slice(row.y, row.y + PATCH), slice(row.x, row.x + PATCH))


# -- rasterisation ---------------------------------------------------------------------

def test_qupath_geojson_rasterises_holes_multipolygons_and_class_names(image, geojson_path):
    with pytest.warns(AnnotationWarning, match="Point"):
        labels = rasterize_annotations(Annotations(geojson_path, chunks=100), like=image)
    assert labels.dims == ("y", "x") and labels.shape == (SIZE, SIZE)
    assert labels.attrs["classes"] == {"Stroma": STROMA, "Tumor": TUMOR}
    assert labels.data.numblocks == (6, 6)  # one task per 100² chunk, none computed yet
    np.testing.assert_allclose(labels.coords["x"].values[:3], [0.0, 0.5, 1.0])
    np.testing.assert_array_equal(labels.values, expected_labels())


def test_a_json_list_of_features_and_a_dict_are_read_like_a_file(image):
    features = qupath_features()[:3]
    for source in (features, {"type": "FeatureCollection", "features": features}):
        labels = rasterize_annotations(source, like=image)
        np.testing.assert_array_equal(labels.values, expected_labels())


def test_physical_coordinates_at_a_coarser_resolution(image):
    # the same Tumor box given in micrometres, rasterised at 2 image pixels per raster pixel
    tumor = box(40 * PIXEL, 60 * PIXEL, 200 * PIXEL, 220 * PIXEL)
    labels = rasterize_annotations(Annotations({"Tumor": [tumor]}, space="physical", downsample=2),
                                   like=image)
    assert labels.shape == (SIZE // 2, SIZE // 2)
    assert labels.attrs["scale"] == {"y": 2 * PIXEL, "x": 2 * PIXEL}
    truth = np.zeros((SIZE // 2, SIZE // 2), dtype=np.uint8)
    truth[30:110, 20:100] = 1
    np.testing.assert_array_equal(labels.values, truth)



@pytest.mark.timeout(180)
def test_a_polygon_crossing_chunk_borders_on_a_local_cluster(image, client):
    # an irregular polygon with a hole; vertices off the pixel grid
    outer = [(10.3, 20.7), (470.2, 60.1), (400.6, 480.9), (130.4, 300.2), (60.8, 450.5)]
    hole = [(200.1, 150.3), (300.7, 170.9), (250.2, 260.4)]
    poly = Polygon(outer, [hole])
    labels = rasterize_annotations(Annotations([poly], chunks=96), like=image)
    assert labels.data.numblocks == (6, 6)
    raster = client.compute(labels.data).result()  # chunks drawn in worker processes
    rows, cols = np.indices((SIZE, SIZE))
    truth = shapely.contains_xy(poly, cols.ravel() + 0.5, rows.ravel() + 0.5).reshape(SIZE, SIZE)
    np.testing.assert_array_equal(raster, truth.astype(np.uint8))


def test_class_maps_drop_classes_and_refuse_unmapped_ones(image, geojson_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        only_tumor = rasterize_annotations(
            Annotations(geojson_path, classes={"Tumor": 5, "Stroma": 0}), like=image)
        truth = expected_labels()
        np.testing.assert_array_equal(only_tumor.values, np.where(truth == TUMOR, 5, 0))
        with pytest.raises(MaskError, match=r"classes \['Stroma'\].*add them to classes="):
            Annotations(geojson_path, classes=["Tumor"])
    with pytest.raises(MaskError, match="does not exist"):
        Annotations(geojson_path + ".missing.geojson")
    with pytest.raises(MaskError, match="space="):
        Annotations([box(0, 0, 1, 1)], space="micrometre")


def test_geojson_as_a_mask(image, geojson_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        mask = as_mask(geojson_path, like=image)
    assert mask.dtype == bool
    np.testing.assert_array_equal(mask.values, expected_labels() > 0)


# -- tables and datasets ---------------------------------------------------------------

def test_build_table_with_a_geojson_mask_keeps_the_annotated_patches(slide, geojson_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        table = build_table(slide, patch_size=PATCH, masks=geojson_path)
    truth = expected_labels() > 0
    expected = {(y, x) for y in range(0, SIZE, PATCH) for x in range(0, SIZE, PATCH)
                if truth[y:y + PATCH, x:x + PATCH].any()}
    assert set(zip(table.frame["y"], table.frame["x"], strict=True)) == expected
    for row, window in _windows(table):
        assert row.coverage == pytest.approx(truth[window].mean())


def _samples(dataset, workers=2):
    for batch in DataLoader(dataset, batch_size=8, num_workers=workers):
        for i in range(len(batch["image_id"])):
            yield {k: (v[i].numpy() if isinstance(v, torch.Tensor) else v[i])
                   for k, v in batch.items()}


@pytest.mark.timeout(240)
def test_geojson_labels_through_a_parquet_table_and_patch_dataset(slide, geojson_path, tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        table = build_table(slide, patch_size=PATCH, labels=geojson_path)
    assert table.meta["label_classes"] == {"Stroma": STROMA, "Tumor": TUMOR}
    truth = expected_labels()
    # per-class coverage columns, counted on the raster the dataset reads
    for row, window in _windows(table):
        assert row.coverage_Tumor == pytest.approx((truth[window] == TUMOR).mean())
        assert row.coverage_Stroma == pytest.approx((truth[window] == STROMA).mean())
    assert table.frame["coverage_Tumor"].max() == 1.0
    path = table.to_parquet(tmp_path / "t.parquet")
    stored = read_table(path)
    assert stored.meta["modalities"]["labels"][0]["classes"] == {"Stroma": 1, "Tumor": 2}
    seen = 0
    for sample in _samples(PatchDataset(stored, columns=["coverage_Tumor"])):
        (y0, y1), (x0, x1) = sample["position"].tolist()
        np.testing.assert_array_equal(sample["labels"], truth[y0:y1, x0:x1])
        # the per-patch label column rides along with its patch
        assert sample["coverage_Tumor"] == pytest.approx((truth[y0:y1, x0:x1] == TUMOR).mean())
        seen += 1
    assert seen == len(table) == (SIZE // PATCH) ** 2


def test_shapely_labels_are_embedded_in_the_table(slide, tmp_path):
    geoms = [box(40, 60, 200, 220), MultiPolygon([box(300, 20, 340, 90)])]
    table = build_table(slide, patch_size=PATCH, labels=[geoms])  # one list per image
    truth = np.zeros((SIZE, SIZE), dtype=np.uint8)
    truth[60:220, 40:200] = 1
    truth[20:90, 300:340] = 1
    stored = read_table(table.to_parquet(tmp_path / "t.parquet"))
    for sample in _samples(PatchDataset(stored), workers=0):
        (y0, y1), (x0, x1) = sample["position"].tolist()
        np.testing.assert_array_equal(sample["labels"], truth[y0:y1, x0:x1])
    assert "coverage_unclassified" in table.frame


def test_a_changed_geojson_file_is_refused_by_the_dataset(slide, geojson_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        table = build_table(slide, patch_size=PATCH, labels=geojson_path)
        with open(geojson_path, "a") as f:
            f.write("\n\n")
        with pytest.raises(MaskError, match="changed after the table was built"):
            next(iter(PatchDataset(table)))


def test_images_with_different_class_maps_are_refused(slide):
    a, b = {"Tumor": [box(0, 0, 64, 64)]}, {"Stroma": [box(0, 0, 64, 64)]}
    with pytest.raises(GridParameterError, match="one class map"):
        build_table([slide, slide], patch_size=PATCH, labels=[a, b])
    table = build_table([slide, slide], patch_size=PATCH, labels=[
        Annotations(a, classes=["Tumor", "Stroma"]), Annotations(b, classes=["Tumor", "Stroma"])])
    assert table.meta["label_classes"] == {"Tumor": 1, "Stroma": 2}


@pytest.mark.timeout(240)
def test_labels_of_a_coarser_level_on_a_local_cluster(slide, geojson_path, client):
    # level 1 (1 µm pixels): raster pixel (i, j) has its centre on level-0 pixel (2i+1, 2j+1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AnnotationWarning)
        table = build_table({"source": slide, "level": 1}, patch_size=32, labels=geojson_path,
                            client=client)
    entry = table.meta["modalities"]["labels"][0]
    assert entry["shape"] == {"y": SIZE // 2, "x": SIZE // 2}
    truth = expected_labels()[1::2, 1::2]
    for row in table.frame.itertuples():  # positions are level-0 pixels
        window = truth[row.y // 2:row.y // 2 + 32, row.x // 2:row.x // 2 + 32]
        assert row.coverage_Tumor == pytest.approx((window == TUMOR).mean())
        assert row.coverage_Stroma == pytest.approx((window == STROMA).mean())
    seen = 0
    for sample in _samples(PatchDataset(table), workers=0):
        (y0, y1), (x0, x1) = sample["position"].tolist()  # level-1 pixels
        np.testing.assert_array_equal(sample["labels"], truth[y0:y1, x0:x1])
        seen += 1
    assert seen == len(table) == (SIZE // 2 // 32) ** 2



def test_a_cached_table_is_rebuilt_when_its_geojson_mask_changes(slide, tmp_path):
    path = tmp_path / "mask.geojson"
    cache = tmp_path / "cache.parquet"

    def write(*boxes):
        path.write_text(json.dumps({"type": "FeatureCollection",
                                    "features": [_feature(b, "Tissue") for b in boxes]}))

    write(box(0, 0, 64, 64))
    first = build_table(slide, patch_size=PATCH, masks=str(path), cache=cache)
    assert len(first) == 1
    write(box(0, 0, 64, 64), box(448, 448, 512, 512))  # a second annotated region
    second = build_table(slide, patch_size=PATCH, masks=str(path), cache=cache)
    assert set(zip(second.frame["y"], second.frame["x"], strict=True)) == {(0, 0), (448, 448)}


def test_annotations_that_miss_the_image_warn(image):
    # annotations of a slide ten times larger (or coordinates in the wrong space) miss it
    far = [box(5000, 5000, 5100, 5100)]
    with pytest.warns(AnnotationWarning, match="none of the 1 polygons.*space='pixel'"):
        labels = rasterize_annotations(far, like=image)
    assert not labels.values.any()
    with warnings.catch_warnings():
        warnings.simplefilter("error", AnnotationWarning)  # partly outside: no warning
        rasterize_annotations([box(500, 500, 600, 600)], like=image)

"""Per-class coverage of patches whose labels are polygon annotations.

:func:`zarrdask.build_table` adds one column ``coverage_<class>`` per class
of the annotation labels (classes mapped to 0 have none): the fraction of
the patch window (``patch_size``, without ``pad``) whose raster pixels hold
that class's value, counted on the same raster that
:class:`zarrdask.PatchDataset` reads the labels from, so weights and filters
agree with the labels a model sees. Rows of images without annotation
labels hold NaN. All images with annotation labels must share one class
map (:func:`table_class_map`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import GridParameterError

__all__ = ["table_class_map", "add_class_coverage", "patch_class_coverage"]

#: Patches per coverage task.
ROWS_PER_TASK = 1024


def _is_annotation_entry(entry: Any) -> bool:
    return isinstance(entry, Mapping) and entry.get("reader") == "annotations"


def table_class_map(label_entries: Sequence[Any]) -> dict[str, int] | None:
    """The class-name -> label-value map shared by the annotation labels of
    a table (None when no image has annotation labels).

    Raises
    ------
    GridParameterError
        When two images' annotations have different class maps (the same
        value would mean different classes, or one class two values).
    """
    maps = [(i, dict(e["classes"])) for i, e in enumerate(label_entries)
            if _is_annotation_entry(e)]
    if not maps:
        return None
    first_index, first = maps[0]
    for index, other in maps[1:]:
        if other != first:
            raise GridParameterError(
                f"the annotation labels of image {first_index} map classes {first} but those of "
                f"image {index} map {other}; one table needs one class map: pass the same "
                "classes= to every zarrdask.Annotations (e.g. Annotations(path, "
                f"classes={sorted(set(first) | set(other))!r}))")
    return first


def patch_class_coverage(raster: Any, record: Mapping[str, Any], image: Mapping[str, Any],
                         positions: Mapping[str, np.ndarray], patch: Mapping[str, int],
                         values: Sequence[int]) -> np.ndarray:
    """Fraction of each patch window covered by each label value.

    Parameters
    ----------
    raster : AnnotationRaster
    record : mapping
        The ``annotations`` record of the label entry (raster geometry).
    image : mapping
        The image's table entry (``scale``, ``scale0``, ``origin0``).
    positions : mapping of str to array
        Level-0 pixel positions of the patches' top-left corners (``y``, ``x``).
    patch : mapping of str to int
        Patch size in read-level pixels.
    values : sequence of int
        Label values, one output column each.

    Returns
    -------
    numpy.ndarray
        ``(patches, len(values))`` float32 fractions; a raster pixel counts
        for the patch that contains its centre.
    """
    geo = record["raster"]
    n = len(positions["y"])
    windows = {}
    for d in ("y", "x"):
        start = float(image["origin0"][d]) + np.asarray(positions[d], dtype=float) * float(image["scale0"][d])
        stop = start + patch[d] * float(image["scale"][d])
        origin, size = float(geo["origin"][d]), float(geo["pixel_size"][d])
        windows[d] = (np.ceil((start - origin) / size - 0.5).astype(np.int64),
                      np.ceil((stop - origin) / size - 0.5).astype(np.int64))
    out = np.zeros((n, len(values)), dtype=np.float32)
    top = max([0, *values]) + 1
    for k in range(n):
        r0, r1 = windows["y"][0][k], windows["y"][1][k]
        c0, c1 = windows["x"][0][k], windows["x"][1][k]
        area = max(0, r1 - r0) * max(0, c1 - c0)
        if area == 0:
            continue
        counts = np.bincount(raster.read(int(r0), int(r1), int(c0), int(c1)).ravel(),
                             minlength=top)
        out[k] = [counts[v] / area for v in values]
    return out


def _coverage_task(raster: Any, record: Mapping, image: Mapping, ys: np.ndarray, xs: np.ndarray,
                   patch: Mapping[str, int], values: Sequence[int]) -> np.ndarray:
    return patch_class_coverage(raster, record, image, {"y": ys, "x": xs}, patch, values)


def add_class_coverage(frame: pd.DataFrame, image_entries: Sequence[Mapping[str, Any]],
                       label_entries: Sequence[Any], patch: Mapping[str, int], *,
                       client: Any = None) -> pd.DataFrame:
    """``frame`` with one ``coverage_<class>`` column per annotation class.

    One task rebuilds each image's raster; one task per
    :data:`ROWS_PER_TASK` patches counts the classes under them (on
    ``client`` when given, else local threads). ``frame`` is returned as is
    when no image has annotation labels.
    """
    import dask

    from .annotations import raster_from_entry

    classes = table_class_map(label_entries)
    if classes is None or not len(frame):
        return frame
    named = [(name, value) for name, value in sorted(classes.items(), key=lambda kv: kv[1])
             if value > 0]
    values = [value for _, value in named]
    columns = np.full((len(frame), len(values)), np.nan, dtype=np.float32)
    image_ids = frame["image_id"].to_numpy()
    tasks, where = [], []
    for image_id, entry in enumerate(label_entries):
        if not _is_annotation_entry(entry):
            continue
        rows = np.flatnonzero(image_ids == image_id)
        if not len(rows):
            continue
        raster = dask.delayed(raster_from_entry, pure=True)(entry)
        for start in range(0, len(rows), ROWS_PER_TASK):
            part = rows[start:start + ROWS_PER_TASK]
            tasks.append(dask.delayed(_coverage_task, pure=True)(
                raster, entry["annotations"], image_entries[image_id],
                frame["y"].to_numpy()[part], frame["x"].to_numpy()[part], dict(patch), values))
            where.append(part)
    if client is not None:
        results = client.gather(client.compute(tasks))
    else:
        results = dask.compute(*tasks)
    for part, result in zip(where, results, strict=True):
        columns[part] = result
    out = frame.copy()
    for i, (name, _value) in enumerate(named):
        out[f"coverage_{name}"] = columns[:, i]
    return out

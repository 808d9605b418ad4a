"""GeoJSON and shapely annotations as masks and labels, rasterised lazily.

Polygon annotations (a QuPath GeoJSON export: a ``FeatureCollection``, a
JSON list of ``Feature`` objects or one ``Feature``; ``Polygon`` and
``MultiPolygon`` geometries with holes; class names in
``properties.classification``), or shapely geometries, become a lazy dask
``DataArray`` of integer class values, one task per chunk, with physical
coordinates in the image's space. The existing placement rule
(:mod:`zarrdask.masks.placement`) then places it like any array with
coordinates, so the same annotations serve as ``masks=`` (non-zero is True)
and as ``labels=`` of :func:`zarrdask.build_table`.

Rules (documented in ``docs/masks.md``):

* ``space="pixel"`` (default, QuPath's convention): coordinates are level-0
  pixels of the image, pixel ``(row, col)`` covering ``[row, row + 1) x
  [col, col + 1)``; ``space="physical"``: coordinates in the image's
  physical units (the DataArray coordinates of :func:`zarrdask.open_image`).
  GeoJSON coordinates are ``[x, y]`` (column, row).
* A raster pixel takes the value of the last polygon (in file order) that
  contains its centre; holes are left as they are under the polygon.
* Class map: ``classes`` (a list, numbered from 1, or a ``{name: int}``
  mapping where 0 drops a class), default the sorted class names numbered
  from 1. Features without a class are ``"unclassified"``. A class missing
  from a given map is an error, never a silent background.
* Points and lines have no area: they are skipped with an
  :class:`AnnotationWarning`.
"""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import dask.array as da
import numpy as np
import xarray as xr

from ..errors import MaskError
from .placement import describe, physical_box, pixel_size, spatial_dims
from .raster import AnnotationRaster

__all__ = [
    "Annotations",
    "AnnotationWarning",
    "AnnotationRaster",
    "is_annotations",
    "rasterize_annotations",
    "annotation_entry",
    "raster_from_entry",
    "UNCLASSIFIED",
]

#: Class name of features and geometries without a classification.
UNCLASSIFIED = "unclassified"

#: A mask raster made without an explicit resolution has at most this many
#: pixels along its longest side (labels default to the image's read level).
MASK_MAX_SIDE = 4096

_SPACES = ("pixel", "physical")


class AnnotationWarning(UserWarning):
    """Annotations that were skipped (points and lines have no area)."""


# -- parsing --------------------------------------------------------------------------

def _is_geometry(obj: Any) -> bool:
    from shapely.geometry.base import BaseGeometry

    return isinstance(obj, BaseGeometry)


def _is_geojson_path(obj: Any) -> bool:
    if not isinstance(obj, str | os.PathLike):
        return False
    name = os.fspath(obj).rstrip("/").lower()
    return name.endswith((".geojson", ".json")) and not name.endswith(("zarr.json", ".zarray"))


def is_annotations(item: Any) -> bool:
    """Whether ``item`` is an annotation source: an :class:`Annotations`, a
    ``.geojson``/``.json`` path or URL, a GeoJSON mapping (with ``type``), a
    shapely geometry, a non-empty list of shapely geometries or of GeoJSON
    features, or a ``{class name: geometries}`` mapping."""
    if isinstance(item, Annotations) or _is_geometry(item) or _is_geojson_path(item):
        return True
    if isinstance(item, Mapping):
        if item.get("type") in ("FeatureCollection", "Feature", "Polygon", "MultiPolygon",
                                "GeometryCollection"):
            return True
        return bool(item) and all(isinstance(k, str) and _geometry_list(v) is not None
                                  for k, v in item.items())
    if isinstance(item, list | tuple) and item:
        return all(_is_geometry(g) for g in item) or all(
            isinstance(f, Mapping) and f.get("type") == "Feature" for f in item)
    return False


def _geometry_list(value: Any) -> list | None:
    if _is_geometry(value):
        return [value]
    if isinstance(value, list | tuple) and value and all(_is_geometry(g) for g in value):
        return list(value)
    return None


def _class_name(properties: Any) -> str:
    """A QuPath feature's class: ``classification.name`` (or a plain string)."""
    if not isinstance(properties, Mapping):
        return UNCLASSIFIED
    cls = properties.get("classification")
    if isinstance(cls, Mapping):
        cls = cls.get("name")
    if cls is None:
        cls = properties.get("class_name", properties.get("label"))
    return UNCLASSIFIED if cls in (None, "") else str(cls)


def _features(doc: Any, source: str) -> list[Mapping]:
    if isinstance(doc, list):
        return doc
    if not isinstance(doc, Mapping) or "type" not in doc:
        raise MaskError(f"the annotations {source} are not GeoJSON (no 'type'); export them as a "
                        "GeoJSON FeatureCollection (QuPath: File > Export objects as GeoJSON)")
    if doc["type"] == "FeatureCollection":
        return list(doc.get("features") or [])
    if doc["type"] == "Feature":
        return [doc]
    return [{"type": "Feature", "geometry": doc, "properties": {}}]


def _polygons(geom: Any) -> list:
    """The polygonal parts of a shapely geometry."""
    kind = geom.geom_type
    if kind == "Polygon":
        return [] if geom.is_empty else [geom]
    if kind in ("MultiPolygon", "GeometryCollection"):
        return [p for g in geom.geoms for p in _polygons(g)]
    return []


# -- the annotation set ---------------------------------------------------------------

class Annotations:
    """Polygon annotations with a class map and a raster resolution.

    Parameters
    ----------
    source : path/URL, GeoJSON mapping or list, shapely geometry or list, or mapping
        A GeoJSON file (QuPath export), a parsed GeoJSON object, shapely
        geometries (class ``"unclassified"``) or ``{class name: geometries}``.
    classes : sequence of str or mapping of str to int, optional
        Class name to label value. A sequence is numbered from 1; in a
        mapping, 0 drops a class (it is not drawn). Default: the sorted class
        names numbered from 1.
    space : {"pixel", "physical"}
        Coordinates in level-0 pixels of the image (QuPath) or in its
        physical units.
    pixel_size : float or mapping of str to float, optional
        Raster pixel size in the image's physical units (per ``y``/``x``).
    downsample : float, optional
        Raster pixel size as a multiple of the image's (read level) pixel
        size. Default: 1 for labels; for masks the smallest integer that
        keeps the raster within 4096 pixels per side.
    chunks : int
        Raster chunk side (one dask task per chunk).
    storage_options : mapping, optional
        fsspec options to read a remote GeoJSON file.
    """

    def __init__(self, source: Any, *, classes: Sequence[str] | Mapping[str, int] | None = None,
                 space: str = "pixel", pixel_size: float | Mapping[str, float] | None = None,
                 downsample: float | None = None, chunks: int = 1024,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        if isinstance(source, Annotations):
            source = source.source
        if space not in _SPACES:
            raise MaskError(f"space={space!r} is unknown; use 'pixel' (level-0 pixel coordinates, "
                            "as QuPath exports) or 'physical' (the image's units)")
        if pixel_size is not None and downsample is not None:
            raise MaskError("pass pixel_size= or downsample= for the annotation raster, not both")
        if downsample is not None and not downsample > 0:
            raise MaskError(f"downsample={downsample!r} must be a positive number")
        if int(chunks) < 1:
            raise MaskError(f"chunks={chunks!r} must be a positive integer")
        self.source = os.fspath(source) if isinstance(source, os.PathLike) else source
        self.space = space
        self.pixel_size = pixel_size
        self.downsample = downsample
        self.chunks = int(chunks)
        self.storage_options = dict(storage_options or {})
        self.name = self.source if isinstance(self.source, str) else "<in-memory annotations>"
        self.shapes = self._read()
        self.classes = self._class_map(classes)

    def _read(self) -> list[tuple[Any, str]]:
        import shapely.geometry

        src = self.source
        if isinstance(src, str):
            import fsspec

            try:
                with fsspec.open(src, "rt", **self.storage_options) as f:
                    doc = json.load(f)
            except FileNotFoundError as exc:
                raise MaskError(f"the annotations file {src} does not exist; check the path") from exc
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise MaskError(f"the annotations file {src} is not valid JSON ({exc}); pass a "
                                "GeoJSON export") from exc
        elif _is_geometry(src) or _geometry_list(src) is not None:
            return [(g, UNCLASSIFIED) for g in _geometry_list(src)]
        elif isinstance(src, Mapping) and "type" not in src:
            out = []
            for name, geoms in src.items():
                listed = _geometry_list(geoms)
                if listed is None:
                    raise MaskError(f"the annotations of class {name!r} are not shapely geometries")
                out.extend((g, str(name)) for g in listed)
            return out
        else:
            doc = src
        shapes, skipped = [], []
        for i, feature in enumerate(_features(doc, self.name)):
            geometry = feature.get("geometry") if isinstance(feature, Mapping) else None
            if not geometry:
                skipped.append(f"#{i} (no geometry)")
                continue
            try:
                geom = shapely.geometry.shape(geometry)
            except Exception as exc:  # shapely raises several types on bad GeoJSON
                raise MaskError(f"feature #{i} of the annotations {self.name} has an invalid "
                                f"geometry ({exc}); fix or remove it") from exc
            if not _polygons(geom):
                skipped.append(f"#{i} ({geom.geom_type})")
                continue
            shapes.append((geom, _class_name(feature.get("properties"))))
        if skipped:
            warnings.warn(f"the annotations {self.name}: {len(skipped)} feature(s) without area "
                          f"skipped: {', '.join(skipped[:5])}", AnnotationWarning, stacklevel=3)
        return shapes

    def _class_map(self, classes: Any) -> dict[str, int]:
        names = sorted({name for _, name in self.shapes})
        if classes is None:
            return {name: i + 1 for i, name in enumerate(names)}
        if isinstance(classes, Mapping):
            mapping = {}
            for k, v in classes.items():
                if isinstance(v, bool) or not isinstance(v, int | np.integer) or v < 0:
                    raise MaskError(f"classes[{k!r}]={v!r} must be a non-negative integer label")
                mapping[str(k)] = int(v)
        elif isinstance(classes, Sequence) and not isinstance(classes, str):
            mapping = {str(name): i + 1 for i, name in enumerate(classes)}
        else:
            raise MaskError(f"classes={classes!r} must be a list of class names or a "
                            "{name: integer} mapping")
        unknown = [n for n in names if n not in mapping]
        if unknown:
            raise MaskError(
                f"the annotations {self.name} have classes {unknown} that classes= does not map "
                f"(it maps {sorted(mapping)}); add them to classes= (0 leaves them out)")
        return mapping

    def __repr__(self) -> str:
        return (f"Annotations({self.name!r}, {len(self.shapes)} shapes, classes={self.classes}, "
                f"space={self.space!r})")

    def geojson(self) -> dict[str, Any]:
        """The annotations as a GeoJSON FeatureCollection (what tables embed
        for in-memory annotations)."""
        from shapely.geometry import mapping

        return {"type": "FeatureCollection", "features": [
            {"type": "Feature", "geometry": mapping(g), "properties": {"classification": {"name": n}}}
            for g, n in self.shapes]}


# -- the raster -----------------------------------------------------------------------

def _dtype_for(values: Any) -> np.dtype:
    top = max([0, *values])
    return np.dtype(np.uint8 if top < 2**8 else np.uint16 if top < 2**16 else np.int32)


def _build_raster(ann: Annotations, transform: Mapping[str, tuple[float, float]],
                  origin: Mapping[str, float], size: Mapping[str, float],
                  shape: tuple[int, int]) -> AnnotationRaster:
    """Map each polygon from its source coordinates to raster index space
    (``source -> physical -> index``) and keep those with a non-zero value."""
    import shapely

    a = {d: transform[d][1] / size[d] for d in ("y", "x")}
    b = {d: (transform[d][0] - origin[d]) / size[d] - 0.5 for d in ("y", "x")}
    scale, shift = np.array([a["x"], a["y"]]), np.array([b["x"], b["y"]])
    polygons, values = [], []
    for geom, name in ann.shapes:
        value = ann.classes[name]
        if value == 0:
            continue
        moved = shapely.transform(geom, lambda xy: xy * scale + shift)
        for part in _polygons(moved):
            polygons.append(part)
            values.append(value)
    return AnnotationRaster(polygons, values, shape, _dtype_for(ann.classes.values()))


def _level0(like: xr.DataArray) -> dict[str, tuple[float, float]]:
    from ..table import source_entry

    entry = source_entry(like)
    return {d: (float(entry["origin0"][d]), float(entry["scale0"][d])) for d in ("y", "x")}


def rasterize_annotations(item: Any, *, like: xr.DataArray, what: str = "labels"
                          ) -> xr.DataArray:
    """Annotations as a lazy integer DataArray placed in ``like``'s space.

    Parameters
    ----------
    item : Annotations or any source :class:`Annotations` accepts
        The annotations (options of an :class:`Annotations` apply).
    like : xarray.DataArray
        The image, from :func:`zarrdask.open_image`.
    what : {"labels", "mask"}
        Chooses the default resolution (see :class:`Annotations`).

    Returns
    -------
    xarray.DataArray
        Dims ``("y", "x")``, one dask task per chunk, coordinates in the
        image's units covering its whole stored extent; attrs ``source``,
        ``scale`` and ``classes`` (the class map).

    Raises
    ------
    MaskError
        For an image without ``y``/``x`` (or with several ``z`` planes) and
        for the errors of :class:`Annotations`.
    """
    from dask.base import tokenize

    ann = item if isinstance(item, Annotations) else Annotations(item)
    sdims = spatial_dims(like)
    if not {"y", "x"} <= set(sdims) or any(like.sizes[d] != 1 for d in sdims if d not in "yx"):
        raise MaskError(f"annotations are 2-D polygons but the image {describe(like)} has spatial "
                        f"dims {sdims} (shape {tuple(like.shape)}); use them with a y/x image")
    box = {d: physical_box(like, d, whole=True) for d in ("y", "x")}
    size = _raster_pixel_size(ann, like, box, what)
    shape = tuple(max(1, math.ceil((box[d][1] - box[d][0]) / size[d] - 1e-9)) for d in ("y", "x"))
    origin = {d: box[d][0] for d in ("y", "x")}
    transform = _level0(like) if ann.space == "pixel" else {d: (0.0, 1.0) for d in ("y", "x")}
    raster = _build_raster(ann, transform, origin, size, shape)
    _warn_if_outside(raster, ann, like)
    name = f"annotations-{tokenize(ann.name, ann.space, ann.classes, origin, size, shape, [g.wkb for g, _ in ann.shapes])}"
    data = da.from_array(raster, chunks=ann.chunks, asarray=True, lock=False, name=name,
                         meta=np.empty((0, 0), dtype=raster.dtype))
    coords = {}
    for d, n in zip(("y", "x"), shape, strict=True):
        attrs = {"scale": size[d]}
        units = like.coords[d].attrs.get("units") if d in like.coords else None
        if units is not None:
            attrs["units"] = units
        coords[d] = xr.Variable(d, origin[d] + np.arange(n, dtype=float) * size[d], attrs=attrs)
    record = {"source": ann.name if isinstance(ann.source, str) else None,
              "geojson": None if isinstance(ann.source, str) else ann.geojson(),
              "storage_options": {} if not ann.storage_options else "***",
              "space": ann.space, "transform": transform, "classes": ann.classes,
              "stamp": _stamp(ann.source)}
    return xr.DataArray(data, dims=("y", "x"), coords=coords, name=what, attrs={
        "source": ann.name, "scale": dict(size), "classes": dict(ann.classes),
        "zarrdask_annotations": record})


def _warn_if_outside(raster: AnnotationRaster, ann: Annotations, like: xr.DataArray) -> None:
    """Warn when no polygon touches the image (annotations of another
    slide, or pixel coordinates read as physical ones or the reverse)."""
    import shapely

    if not raster.polygons:
        return
    extent = shapely.box(-0.5, -0.5, raster.shape[1] - 0.5, raster.shape[0] - 0.5)
    if not shapely.intersects(np.asarray(raster.polygons, dtype=object), extent).any():
        bounds = shapely.total_bounds([g for g, _ in ann.shapes])
        warnings.warn(
            f"none of the {len(raster.polygons)} polygons of the annotations {ann.name} "
            f"(bounds x {bounds[0]:g}..{bounds[2]:g}, y {bounds[1]:g}..{bounds[3]:g}, "
            f"space={ann.space!r}) lies on the image {describe(like)}: the raster is empty; check "
            "space= ('pixel' for QuPath's level-0 pixels, 'physical' for the image's units) and "
            "that they belong to this image", AnnotationWarning, stacklevel=3)


def _raster_pixel_size(ann: Annotations, like: xr.DataArray, box: Mapping[str, tuple[float, float]],
                       what: str) -> dict[str, float]:
    base = {d: pixel_size(like, d) for d in ("y", "x")}
    if ann.pixel_size is not None:
        given = ann.pixel_size
        size = {d: float(given[d] if isinstance(given, Mapping) else given) for d in ("y", "x")}
        if not all(v > 0 for v in size.values()):
            raise MaskError(f"pixel_size={given!r} must be positive")
        return size
    factor = ann.downsample
    if factor is None:
        longest = max((box[d][1] - box[d][0]) / base[d] for d in ("y", "x"))
        factor = 1 if what == "labels" else max(1, math.ceil(longest / MASK_MAX_SIDE))
    return {d: base[d] * float(factor) for d in ("y", "x")}


def _stamp(source: Any) -> list | None:
    if isinstance(source, str) and os.path.exists(source):
        st = os.stat(source)
        return [st.st_size, st.st_mtime_ns]
    return None


# -- tables: entries and readers -------------------------------------------------------

def annotation_entry(arr: Any) -> dict[str, Any]:
    """The table-entry fields of rasterised annotations (``{}`` for any
    other array): ``array`` with reader ``"annotations"``, ``annotations``
    (the GeoJSON path, or the GeoJSON itself for in-memory annotations, the
    coordinate space and transform, the raster geometry) and ``classes``."""
    record = getattr(arr, "attrs", {}).get("zarrdask_annotations")
    if record is None:
        return {}
    record = dict(record)
    record["raster"] = {"shape": [int(arr.sizes[d]) for d in ("y", "x")],
                        "origin": {d: float(arr.coords[d].values[0]) for d in ("y", "x")},
                        "pixel_size": dict(arr.attrs["scale"]), "chunks": list(arr.data.chunksize)}
    return {"reader": "annotations",
            "array": {"reader": "annotations", "location": record["source"], "key": None,
                      "storage_options": {}},
            "annotations": record, "classes": dict(record["classes"])}


def raster_from_entry(entry: Mapping[str, Any], *, storage_options: Mapping[str, Any] | None = None
                      ) -> AnnotationRaster:
    """Rebuild the raster a table entry of annotations describes (for
    :class:`zarrdask.PatchDataset`)."""
    record = entry["annotations"]
    source = record["source"] if record["source"] is not None else record["geojson"]
    stamp = record.get("stamp")
    if stamp is not None and _stamp(source) not in (None, list(stamp)):
        raise MaskError(f"the annotations file {source} changed after the table was built (size "
                        "or modification time differ); rebuild the table with build_table")
    if record.get("storage_options") == "***" and storage_options is None:
        raise MaskError(f"the annotations {record['source']} need the storage_options the table "
                        "stores redacted; pass storage_options=... to PatchDataset")
    with warnings.catch_warnings():  # the build already warned about skipped features
        warnings.simplefilter("ignore", AnnotationWarning)
        ann = Annotations(source, classes=record["classes"], space=record["space"],
                          storage_options=storage_options)
    raster = record["raster"]
    return _build_raster(ann, {d: tuple(v) for d, v in record["transform"].items()},
                         raster["origin"], raster["pixel_size"], tuple(raster["shape"]))

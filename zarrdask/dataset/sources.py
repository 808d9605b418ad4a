"""What a :class:`~zarrdask.dataset.PatchDataset` reads for each modality of
each image: table entries to :class:`~zarrdask.dataset.chunks.ArraySource`
objects, the modalities read by default, and one output layout per modality
across all the images of a table.

**One output order per modality.** Readers store dims in their source's
order (zarr/NGFF ``(c, y, x)``, TIFF and PIL ``(y, x, c)``). Unless
``output_dims`` says otherwise, every array of a modality comes out in the
canonical channel-first order ``t, c, z, y, x`` of the union of the dims its
entries have (dims an image lacks become size-1 dims), so a table mixing
``.zarr`` and ``.ome.tif`` images collates. A modality whose patches would
still differ in dtype or shape (channel count, resolution) fails at
construction with the fix, not in collate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..errors import DatasetError, TableError
from ..io.recipe import ArrayRecipe, recipe_of
from .catalog import (
    EagerCatalog,
    FolderCatalog,
    ImageCatalog,
    Layout,
    PerImage,
    entry_kind,
)
from .chunks import ArraySource
from .options import check_names

__all__ = [
    "CANONICAL_DIMS",
    "entry_kind",
    "catalog_of",
    "modality_entries",
    "choose_modalities",
    "make_sources",
    "default_output_dims",
    "check_uniform_patches",
]

#: The default output order (OME-NGFF's), restricted to the dims present.
CANONICAL_DIMS = ("t", "c", "z", "y", "x")


class _OpenImageRecipe:
    """Reopen an image through :func:`zarrdask.open_image` when the table
    records only its ``open`` arguments."""

    reader = "open"
    key = None

    def __init__(self, open_args: Mapping[str, Any], storage_options: Mapping[str, Any]) -> None:
        self.open_args = dict(open_args)
        self.location = self.open_args.get("source")
        self.storage_options = dict(storage_options)

    def open(self) -> Any:
        from ..io import open_image

        kwargs = {k: self.open_args.get(k) for k in ("axes", "data_group", "level")
                  if self.open_args.get(k) is not None}
        image = open_image(self.location, storage_options=self.storage_options, **kwargs)
        return recipe_of(image).open()


def _has_redacted(options: Any) -> bool:
    if isinstance(options, Mapping):
        return any(_has_redacted(v) for v in options.values())
    return options == "***"


def _in_memory_object(obj: Any) -> Any:
    """The full stored array behind an in-memory source (DataArray or array)."""
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        recipe = recipe_of(obj)
        if recipe is not None and recipe.obj is not None:
            return recipe.obj
        return obj.data
    return obj


def modality_entries(table: Any) -> dict[str, list[Any]]:
    """``{modality: one entry per image}`` of a table."""
    mods = dict(table.meta.get("modalities") or {})
    mods.setdefault("images", table.images)
    n = len(table.images)
    out = {}
    for name, entries in mods.items():
        entries = list(entries) if isinstance(entries, list | tuple) else [entries] * n
        if len(entries) != n:
            raise TableError(
                f"the table's modality {name!r} lists {len(entries)} entries for {n} images; "
                "rebuild the table"
            )
        out[str(name)] = entries
    return out


def choose_modalities(catalog: ImageCatalog, layouts: Mapping[str, list[Layout]], modalities: Any,
                      *, where: str) -> list[str]:
    """The modalities to read: ``modalities``, checked, or the default.

    ``layouts``: the distinct layouts of every modality of ``catalog``
    (:meth:`ImageCatalog.layouts`)."""
    if modalities is None:
        chosen = ["images"]
        for name in catalog.names:
            if name in ("images", "masks"):
                continue
            kinds = {lay.kind for lay in layouts[name]}
            if kinds and kinds <= {"array", "weak"}:
                chosen.append(name)
        return chosen
    chosen = check_names("modalities", modalities, "modality", "['images', 'labels']")
    for name in chosen:
        if name not in catalog.names:
            raise DatasetError(
                f"modalities asks for {name!r} but {where} has only "
                f"{sorted(catalog.names)}; build the table with that modality (e.g. labels=...) "
                "or drop it from modalities"
            )
        for lay in layouts[name]:
            if lay.kind in ("array", "weak"):
                continue
            e = catalog.entry(name, lay.index)
            what = "none" if lay.kind == "none" else f"{e!r} (computed, not stored)"
            more = f" (and {lay.count - 1} more images)" if lay.count > 1 else ""
            raise DatasetError(
                f"modality {name!r} of image {lay.index}{more} in {where} is {what}, so it cannot "
                f"be read; drop {name!r} from modalities or rebuild the table with a stored "
                f"{name} source for every image"
            )
    return chosen


def catalog_of(table: Any, folder: Any = None, path_map: Mapping[str, str] | None = None
               ) -> ImageCatalog:
    """The catalog of a table: lazy over a partitioned ``folder``
    (:class:`~zarrdask.table_layout.FolderTable`), else over the table's
    entries in memory."""
    if folder is None:
        return EagerCatalog(modality_entries(table))
    from ..table_paths import PathRemap

    remap = PathRemap(path_map) if path_map else None
    catalog = FolderCatalog(folder, remap=remap)
    if remap is not None:
        remap.check_roots(folder)
    return catalog


def make_sources(catalog: ImageCatalog, modalities: Sequence[str], sources: Any,
                 storage_options: Mapping[str, Any] | None, *, where: str,
                 table_sources: Sequence[Any] | None = None) -> dict[str, PerImage]:
    """Per modality, a lazy sequence of one :class:`ArraySource` per image
    (None for entries that are not stored arrays), built when first read.

    ``table_sources``: the in-memory objects a table holds per image (None
    where it holds none)."""
    n = catalog.n
    default = list(table_sources) if table_sources is not None else None
    if sources is None:
        given: dict[str, list[Any] | None] = {"images": default}
    elif isinstance(sources, Mapping):
        given = {str(k): list(v) for k, v in sources.items()}
        given.setdefault("images", default)
    elif isinstance(sources, Sequence) and not isinstance(sources, str):
        given = {"images": list(sources)}
    else:
        raise DatasetError(f"sources={sources!r} must be a sequence (one object per image) or "
                           "a mapping {modality: sequence}")
    for name, objs in given.items():
        if objs is not None and len(objs) != n:
            raise DatasetError(
                f"sources for {name!r} has {len(objs)} entries but {where} lists {n} "
                "images; pass one per image (None where the table can reopen it)"
            )
    objs_of = {name: objs for name, objs in given.items()
               if objs is not None and any(o is not None for o in objs)}
    return {name: PerImage(n, _SourceBuilder(catalog, name, objs_of.get(name), storage_options,
                                             where), keep=catalog.keep)
            for name in modalities}


class _SourceBuilder:
    """Builds the :class:`ArraySource` of one modality of image ``i``
    (picklable: DataLoader workers receive it)."""

    def __init__(self, catalog: ImageCatalog, name: str, objs: list[Any] | None,
                 storage_options: Mapping[str, Any] | None, where: str) -> None:
        self.catalog, self.name, self.objs = catalog, name, objs
        self.storage_options, self.where = storage_options, where

    def __call__(self, index: int) -> ArraySource | None:
        entry = self.catalog.entry(self.name, index)
        if entry_kind(entry) != "array":
            return None
        obj = self.objs[index] if self.objs is not None else None
        return _source(self.name, index, entry, obj, self.storage_options, where=self.where)


def _source(name: str, index: int, entry: Mapping[str, Any], obj: Any,
            storage_options: Mapping[str, Any] | None, *, where: str) -> ArraySource:
    dims = list(entry["dims"])
    shape = [int(entry["shape"][d]) for d in dims]
    chunks = [int((entry.get("chunks") or {}).get(d, s) or s) for d, s in zip(dims, shape, strict=True)]
    label = f"{name} of image {index} ({entry.get('name', '?')})"
    if obj is not None:
        return ArraySource(name=label, shape=shape, chunks=chunks, dtype=entry.get("dtype", "uint8"),
                           obj=_in_memory_object(obj))
    array = entry.get("array") or {}
    if array.get("reader") == "annotations":  # polygons: drawn on demand per read box
        from ..masks.annotations import raster_from_entry

        return ArraySource(name=label, shape=shape, chunks=chunks, dtype=entry.get("dtype", "uint8"),
                           obj=raster_from_entry(entry, storage_options=storage_options))
    open_args = entry.get("open") or {}
    location = array.get("location") or open_args.get("source")
    if location is None or array.get("reader") == "memory":
        raise DatasetError(
            f"{label} was an in-memory array when the table was built and "
            f"{where} keeps no pixels; pass sources=[...] (or sources={{{name!r}: [...]}}) "
            "to PatchDataset with the array of every in-memory image"
        )
    stored = array.get("storage_options") if array else open_args.get("storage_options")
    if storage_options is not None:
        options = dict(storage_options)
    else:
        if _has_redacted(stored):
            raise DatasetError(
                f"{label} at {location} needs credentials that the table stores redacted "
                "('***'); pass storage_options=... to PatchDataset"
            )
        options = dict(stored or {})
    if array:
        recipe: Any = ArrayRecipe(array.get("reader", "zarr"), location, array.get("key"), options)
    else:
        recipe = _OpenImageRecipe(open_args, options)
    return ArraySource(name=f"{label} at {recipe.location}" + (f" [{recipe.key}]" if recipe.key else ""),
                       shape=shape, chunks=chunks, dtype=entry.get("dtype", "uint8"), recipe=recipe)


def default_output_dims(geometries: Sequence[Any]) -> tuple[str, ...] | None:
    """The output dims of a modality: the canonical order of the union of
    its arrays' dims (dims outside ``t, c, z, y, x`` first, in the order
    met); None when the modality has no stored array."""
    seen: list[str] = []
    for geo in geometries:
        if geo is None:
            continue
        seen.extend(d for d in geo.dims if d not in seen)
    if not seen:
        return None
    return tuple(d for d in seen if d not in CANONICAL_DIMS) + tuple(
        d for d in CANONICAL_DIMS if d in seen)


def _describe(items: list[int], names: list[str], indices: Sequence[int]) -> str:
    shown = ", ".join(f"{indices[k]} ({names[k]})" for k in items[:3])
    more = f" and {len(items) - 3} more" if len(items) > 3 else ""
    return f"image{'s' if len(items) > 1 else ''} {shown}{more}"


def check_uniform_patches(modality: str, dtypes: Sequence[str | None],
                          shapes: Sequence[tuple[int, ...] | None], dims: Sequence[str] | None,
                          names: list[str], *, where: str, indices: Sequence[int] | None = None
                          ) -> None:
    """Raise when the patches of ``modality`` would not collate: their dtypes
    or their shapes (in output ``dims``) differ between images.

    Parameters
    ----------
    dtypes, shapes, names : sequences, one item per image checked
        None for images without a stored array of that modality.
    dims : sequence of str or None
        The output dims of the shapes; None when each is in its array's
        stored order (``output_dims="stored"``).
    indices : sequence of int, optional
        The image index of each item (default: its position).
    """
    indices = list(range(len(dtypes))) if indices is None else list(indices)
    by_dtype: dict[str, list[int]] = {}
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for k, (dtype, shape) in enumerate(zip(dtypes, shapes, strict=True)):
        if dtype is None or shape is None:
            continue
        by_dtype.setdefault(str(np.dtype(dtype)), []).append(k)
        by_shape.setdefault(tuple(shape), []).append(k)
    fix = (f"pass transforms={{{modality!r}: fn}} where fn makes them uniform (e.g. "
           "torchvision.transforms.v2.ToDtype(torch.float32, scale=True), or a channel "
           "selection), or build one table per kind of image")
    if len(by_dtype) > 1:
        kinds = "; ".join(f"{dt} for {_describe(ix, names, indices)}" for dt, ix in by_dtype.items())
        raise DatasetError(
            f"the {modality} of {where} mix dtypes ({kinds}): their batches cannot be stacked; "
            f"{fix}"
        )
    if len(by_shape) > 1:
        kinds = "; ".join(f"{s} for {_describe(ix, names, indices)}" for s, ix in by_shape.items())
        if dims is None:
            raise DatasetError(
                f"the {modality} of {where} have different patch shapes in their stored dim "
                f"orders ({kinds}): their batches cannot be stacked; leave output_dims unset "
                f"(one channel-first order for all) or name one order in output_dims, or {fix}"
            )
        c = dims.index("c") if "c" in dims else None
        channels = {s[c] for s in by_shape} if c is not None else set()
        what = "channel counts" if len(channels) > 1 else "patch shapes"
        raise DatasetError(
            f"the {modality} of {where} have different {what} (dims {''.join(dims)!r}: "
            f"{kinds}): their batches cannot be stacked; {fix}"
        )

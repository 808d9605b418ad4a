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
from .chunks import ArraySource
from .options import check_names

__all__ = [
    "CANONICAL_DIMS",
    "entry_kind",
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


def entry_kind(entry: Any) -> str:
    """``"none"``, ``"weak"`` (a per-image value), ``"array"`` or ``"other"``."""
    if entry is None:
        return "none"
    if isinstance(entry, Mapping) and "weak" in entry:
        return "weak"
    if isinstance(entry, Mapping) and "dims" in entry and "shape" in entry:
        return "array"
    return "other"


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


def choose_modalities(entries: Mapping[str, list[Any]], modalities: Any, *, where: str
                      ) -> list[str]:
    """The modalities to read: ``modalities``, checked, or the default."""
    if modalities is None:
        chosen = ["images"]
        for name, items in entries.items():
            if name in ("images", "masks"):
                continue
            if items and all(entry_kind(e) in ("array", "weak") for e in items):
                chosen.append(name)
        return chosen
    chosen = check_names("modalities", modalities, "modality", "['images', 'labels']")
    for name in chosen:
        if name not in entries:
            raise DatasetError(
                f"modalities asks for {name!r} but {where} has only "
                f"{sorted(entries)}; build the table with that modality (e.g. labels=...) or "
                "drop it from modalities"
            )
        for i, e in enumerate(entries[name]):
            kind = entry_kind(e)
            if kind in ("array", "weak"):
                continue
            what = "none" if kind == "none" else f"{e!r} (computed, not stored)"
            raise DatasetError(
                f"modality {name!r} of image {i} in {where} is {what}, so it cannot be "
                f"read; drop {name!r} from modalities or rebuild the table with a stored "
                f"{name} source for every image"
            )
    return chosen


def make_sources(table: Any, entries: Mapping[str, list[Any]], modalities: Sequence[str],
                 sources: Any, storage_options: Mapping[str, Any] | None, *, where: str
                 ) -> dict[str, list[ArraySource | None]]:
    """One :class:`ArraySource` per stored entry of each modality (None for
    weak entries)."""
    if sources is None:
        given: dict[str, list[Any]] = {"images": list(table.sources)}
    elif isinstance(sources, Mapping):
        given = {str(k): list(v) for k, v in sources.items()}
        given.setdefault("images", list(table.sources))
    elif isinstance(sources, Sequence) and not isinstance(sources, str):
        given = {"images": list(sources)}
    else:
        raise DatasetError(f"sources={sources!r} must be a sequence (one object per image) or "
                           "a mapping {modality: sequence}")
    n = len(table.images)
    for name, objs in given.items():
        if len(objs) != n:
            raise DatasetError(
                f"sources for {name!r} has {len(objs)} entries but {where} lists {n} "
                "images; pass one per image (None where the table can reopen it)"
            )
    out: dict[str, list[ArraySource | None]] = {}
    for name in modalities:
        items: list[ArraySource | None] = []
        for i, entry in enumerate(entries[name]):
            if entry_kind(entry) != "array":
                items.append(None)
                continue
            obj = given.get(name, [None] * n)[i]
            items.append(_source(name, i, entry, obj, storage_options, where=where))
        out[name] = items
    return out


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


def _describe(indices: list[int], names: list[str]) -> str:
    shown = ", ".join(f"{i} ({names[i]})" for i in indices[:3])
    more = f" and {len(indices) - 3} more" if len(indices) > 3 else ""
    return f"image{'s' if len(indices) > 1 else ''} {shown}{more}"


def check_uniform_patches(modality: str, dtypes: Sequence[str | None],
                          shapes: Sequence[tuple[int, ...] | None], dims: Sequence[str] | None,
                          names: list[str], *, where: str) -> None:
    """Raise when the patches of ``modality`` would not collate: their dtypes
    or their shapes (in output ``dims``) differ between images.

    Parameters
    ----------
    dtypes, shapes : sequences, one item per image
        None for images without a stored array of that modality.
    dims : sequence of str or None
        The output dims of the shapes; None when each is in its array's
        stored order (``output_dims="stored"``).
    """
    by_dtype: dict[str, list[int]] = {}
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, (dtype, shape) in enumerate(zip(dtypes, shapes, strict=True)):
        if dtype is None or shape is None:
            continue
        by_dtype.setdefault(str(np.dtype(dtype)), []).append(i)
        by_shape.setdefault(tuple(shape), []).append(i)
    fix = (f"pass transforms={{{modality!r}: fn}} where fn makes them uniform (e.g. "
           "torchvision.transforms.v2.ToDtype(torch.float32, scale=True), or a channel "
           "selection), or build one table per kind of image")
    if len(by_dtype) > 1:
        kinds = "; ".join(f"{dt} for {_describe(ix, names)}" for dt, ix in by_dtype.items())
        raise DatasetError(
            f"the {modality} of {where} mix dtypes ({kinds}): their batches cannot be stacked; "
            f"{fix}"
        )
    if len(by_shape) > 1:
        kinds = "; ".join(f"{s} for {_describe(ix, names)}" for s, ix in by_shape.items())
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

"""Normalising the ``images``/``masks``/``labels`` arguments of ``build_table``.

An image item is a path/URL, an in-memory array, an ``xarray.DataArray``,
or a spec mapping with the keys of :func:`zarrdask.open_image` plus
``source`` (or zarrdataset's ``filename``).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from typing import Any

import xarray as xr

from ..errors import GridParameterError
from ..io import open_image
from ..io.location import get_filesystem, protocol_of
from ..io.recipe import open_facts, recipe_of

__all__ = ["as_list", "open_item", "item_name", "fingerprint"]

_OPEN_KEYS = ("axes", "data_group", "roi", "level", "mpp", "reader", "storage_options",
              "chunks")


def as_list(items: Any) -> list[Any]:
    """One item or a list/tuple of items, as a list (strings, arrays and
    mappings count as one item)."""
    if items is None:
        return []
    if isinstance(items, list | tuple):
        return list(items)
    return [items]


def item_name(item: Any) -> str:
    """A readable name of an image item for messages."""
    if isinstance(item, Mapping):
        return str(item.get("source", item.get("filename", "<spec>")))
    if isinstance(item, str | os.PathLike):
        return os.fspath(item)
    if isinstance(item, xr.DataArray):
        return str(item.attrs.get("source", "<DataArray>"))
    return f"<in-memory {type(item).__name__}>"


def item_source_and_options(item: Any) -> tuple[Any, dict[str, Any]]:
    """The source of an image item and its :func:`zarrdask.open_image`
    keywords (a spec's zarrdataset-style ``source_axes`` becomes ``axes``)."""
    if not isinstance(item, Mapping):
        return item, {}
    source = item.get("source", item.get("filename"))
    kwargs = {k: item[k] for k in _OPEN_KEYS if item.get(k) is not None}
    if item.get("source_axes") is not None and "axes" not in kwargs:
        kwargs["axes"] = item["source_axes"]
    return source, kwargs


def open_item(item: Any, *, like: xr.DataArray | None = None,
              mpp: float | None = None) -> xr.DataArray:
    """Open one image item with :func:`zarrdask.open_image`; ``mpp`` applies
    unless the item's spec names its own ``level`` or ``mpp``. With ``like``
    (the image), annotations (GeoJSON, shapely) are rasterised in its space
    (:func:`zarrdask.masks.annotations.rasterize_annotations`)."""
    if like is not None:
        from ..masks.annotations import is_annotations, rasterize_annotations

        if is_annotations(item):
            return rasterize_annotations(item, like=like)
    source, kwargs = item_source_and_options(item)
    if mpp is not None and "level" not in kwargs and "mpp" not in kwargs:
        kwargs["mpp"] = mpp
    return open_image(source, **kwargs)


def _stat_stamp(path: str) -> list:
    try:
        st = os.stat(path)
    except OSError:
        return [path, None]
    return [path, st.st_size, st.st_mtime_ns]


def _walk_stamp(folder: str) -> list:
    """``[folder, file count, total size, newest mtime (ns)]`` of the files
    under ``folder`` (what ``os.walk`` lists: symbolic links to folders are
    not followed, to files are; unreadable entries are left out), with one
    ``scandir`` per folder and the entries' own ``stat``."""
    count, total, newest = 0, 0, 0
    stack = [folder]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink():
                    stack.append(entry.path)
                continue
            try:
                st = entry.stat()
            except OSError:
                continue
            count += 1
            total += st.st_size
            newest = max(newest, st.st_mtime_ns)
    return [folder, count, total, newest]


def fingerprint(arr: xr.DataArray) -> list:
    """What identifies an opened image's content, for the table hash.

    Local zarr arrays: the array folder's file count, total size and newest
    modification time (so rewritten chunks change it); single files: size
    and modification time; remote: the metadata object's ETag/size;
    in-memory: dask's content token.
    """
    from dask.base import tokenize

    recipe = recipe_of(arr)
    base = [list(arr.dims), list(arr.shape), str(arr.dtype), open_facts(arr).get("roi")]
    if recipe is None or recipe.location is None:
        return [*base, tokenize(arr.data)]
    location = recipe.location
    if protocol_of(location) == "file":
        if os.path.isdir(location):
            folder = os.path.join(location, recipe.key) if recipe.key else location
            return [*base, recipe.public(), _walk_stamp(folder)]
        return [*base, recipe.public(), _stat_stamp(location)]
    try:
        fs, path = get_filesystem(location, recipe.storage_options)
        info = {}
        for name in ("zarr.json", ".zarray", ".zgroup", ""):
            target = f"{path}/{recipe.key}/{name}" if recipe.key else f"{path}/{name}"
            target = target.rstrip("/")
            try:
                info = fs.info(target)
                break
            except FileNotFoundError:
                continue
        stamp = [info.get("ETag"), info.get("size"), str(info.get("LastModified"))]
    except Exception:
        stamp = []
    return [*base, recipe.public(), stamp]


def digest(obj: Any) -> str:
    """sha256 of a JSON rendering of ``obj``."""
    import json

    text = json.dumps(obj, sort_keys=True, default=repr)
    return hashlib.sha256(text.encode()).hexdigest()


def per_image(value: Any, n: int, what: str) -> Sequence[Any]:
    """Broadcast one value to ``n`` images, or check a per-image list."""
    if isinstance(value, list | tuple) and not isinstance(value, str):
        if len(value) != n:
            raise GridParameterError(
                f"{what} has {len(value)} entries for {n} image(s); pass one per image "
                "(None where an image has none) or a single value for all"
            )
        return list(value)
    return [value] * n

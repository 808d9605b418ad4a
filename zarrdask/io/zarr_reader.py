"""Zarr v2/v3 arrays and groups, and OME-NGFF 0.4/0.5 multiscales."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import zarr

from ..axes import SPATIAL_DIMS
from ..errors import (
    DataGroupError,
    RemoteAccessError,
    SourceNotFoundError,
    UnsupportedFormatError,
    ZarrdaskError,
)
from .levels import Level, SourceLevels
from .location import get_filesystem, is_remote, means_missing, protocol_of, remote_error
from .recipe import ArrayRecipe, register_opener
from .zarr_metadata import metadata_error

__all__ = ["discover_zarr", "open_zarr_array", "make_store", "looks_like_zarr"]


def make_store(location: str, storage_options: Mapping[str, Any] | None = None):
    """A read-only zarr store for a local path or URL.

    Parameters
    ----------
    location : str
        Local path, or URL (``s3://``, ``http(s)://``...) read through fsspec.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    zarr.storage.LocalStore or zarr.storage.FsspecStore

    Raises
    ------
    SourceNotFoundError
        A local path that does not exist.
    RemoteAccessError
        The filesystem of a URL cannot be created (unknown protocol, missing
        package, malformed options).
    """
    if protocol_of(location) == "file":
        path = os.path.abspath(os.path.expanduser(location))
        if not os.path.exists(path):
            raise SourceNotFoundError(
                f"{location} does not exist (looked at {path}); check the path"
            )
        return zarr.storage.LocalStore(path, read_only=True)
    try:
        # zarr drives the store from its own event loop: give it the
        # asynchronous flavour of the filesystem, or wrap a synchronous one.
        fs, path = get_filesystem(location, storage_options, asynchronous=True)
    except ImportError as exc:
        raise RemoteAccessError(
            f"cannot read {location}: {exc}; install the fsspec backend of "
            f"{protocol_of(location)!r} URLs (s3fs for s3://, aiohttp for http://)"
        ) from exc
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc
    if not fs.async_impl:
        fs = _async_wrap(fs)
    return zarr.storage.FsspecStore(fs=fs, path=path, read_only=True)


def _async_wrap(fs):
    from fsspec.implementations.asyn_wrapper import AsyncFileSystemWrapper

    return AsyncFileSystemWrapper(fs, asynchronous=True)


def looks_like_zarr(location: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether ``location`` holds zarr metadata at its root.

    Raises
    ------
    RemoteAccessError
        A URL whose server fails otherwise than by saying a marker file
        does not exist (timeouts are not retried per marker).
    """
    stripped = location.rstrip("/")
    if stripped.lower().endswith(".zarr"):
        return True
    markers = ("zarr.json", ".zgroup", ".zarray")
    if protocol_of(location) == "file":
        return os.path.isdir(location) and any(
            os.path.exists(os.path.join(location, m)) for m in markers
        )
    if _is_image_file_name(stripped):
        return False  # spare three round trips (and their retries) per open
    try:
        fs, path = get_filesystem(location, storage_options)
    except Exception:
        return False  # the reader that takes it reports the filesystem's problem
    for marker in markers:
        try:
            fs.info(f"{path.rstrip('/')}/{marker}")
            return True
        except Exception as exc:
            if means_missing(exc):
                continue
            raise remote_error(location, storage_options, exc) from exc
    return False


def _is_image_file_name(location: str) -> bool:
    """Whether the name ends with the extension of a TIFF or Pillow format."""
    from .pil_reader import pil_extensions
    from .tiff_reader import TIFF_EXTENSIONS

    ext = os.path.splitext(location.lower())[1]
    return bool(ext) and (ext in TIFF_EXTENSIONS or ext in pil_extensions())


def _open_root(source: Any, storage_options: Mapping[str, Any] | None, display: str):
    """The root node (group or array) of a zarr source."""
    if isinstance(source, zarr.Group | zarr.Array):
        return source
    remote = is_remote(source)
    store = make_store(source, storage_options) if isinstance(source, str) else source
    try:
        try:
            return zarr.open_group(store=store, mode="r")
        except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError, ValueError, TypeError):
            return zarr.open_array(store=store, mode="r")
    except (FileNotFoundError, zarr.errors.ArrayNotFoundError, zarr.errors.NodeNotFoundError) as exc:
        if remote:
            raise remote_error(source, storage_options, FileNotFoundError(str(exc))) from exc
        raise UnsupportedFormatError(
            f"{display} holds no zarr array or group (no zarr.json/.zarray/.zgroup at its "
            "root); point to the .zarr folder itself, or pass data_group=... for a nested one"
        ) from exc
    except ZarrdaskError:
        raise
    except Exception as exc:
        # Remote filesystems raise their own types (botocore, aiohttp...):
        # every one of them becomes a RemoteAccessError naming the endpoint.
        if remote:
            raise remote_error(source, storage_options, exc) from exc
        raise


def _multiscale(group: zarr.Group) -> dict | None:
    attrs = dict(group.attrs)
    ome = attrs.get("ome", attrs)
    ms = ome.get("multiscales") if isinstance(ome, dict) else None
    if ms:
        return ms[0]
    return None


def _axes_info(ms: dict) -> tuple[tuple[str, ...] | None, dict[str, str]]:
    axes = ms.get("axes")
    if not axes:
        return None, {}
    names, units = [], {}
    for ax in axes:
        if isinstance(ax, str):
            names.append(ax.lower())
        else:
            name = str(ax["name"]).lower()
            names.append(name)
            if ax.get("unit"):
                units[name] = str(ax["unit"])
    return tuple(names), units


def _transforms(items: list | None, ndim: int) -> tuple[np.ndarray, np.ndarray]:
    scale = np.ones(ndim)
    translation = np.zeros(ndim)
    for t in items or []:
        if t.get("type") == "scale" and "scale" in t:
            scale = scale * np.asarray(t["scale"], dtype=float)
        elif t.get("type") == "translation" and "translation" in t:
            translation = translation + np.asarray(t["translation"], dtype=float)
    return scale, translation


def _array_dims(arr: zarr.Array) -> tuple[str, ...] | None:
    names = getattr(arr.metadata, "dimension_names", None)
    if names and all(n is not None for n in names):
        return tuple(str(n).lower() for n in names)
    legacy = arr.attrs.get("_ARRAY_DIMENSIONS")
    if legacy:
        return tuple(str(n).lower() for n in legacy)
    return None


def _chunks(arr: zarr.Array) -> tuple[int, ...]:
    shards = getattr(arr, "shards", None)
    return tuple(int(c) for c in (shards or arr.chunks))


def _level(name: str, arr: zarr.Array, recipe: ArrayRecipe, dims, scale=None, translation=None,
           units=None) -> Level:
    spatial = {}
    trans = {}
    if dims is not None and scale is not None:
        for i, d in enumerate(dims):
            if d in SPATIAL_DIMS:
                spatial[d] = float(scale[i])
                trans[d] = float(translation[i])
    return Level(
        name=name,
        recipe=recipe,
        shape=tuple(int(s) for s in arr.shape),
        dtype=np.dtype(arr.dtype),
        chunks=_chunks(arr),
        dims=dims,
        scale=spatial,
        translation=trans,
        units={d: u for d, u in (units or {}).items() if d in SPATIAL_DIMS},
        array=arr,
    )


def _join_key(prefix: str, name: str) -> str:
    """Path of ``name`` inside the group at ``prefix`` ("" for the root)."""
    return f"{prefix}/{name}" if prefix else name


def _multiscale_levels(group: zarr.Group, prefix: str, ms: dict, make_recipe) -> list[Level]:
    dims, units = _axes_info(ms)
    levels = []
    for ds in ms.get("datasets", []):
        path = str(ds["path"])
        key = _join_key(prefix, path)
        try:
            arr = group[path]
        except KeyError as exc:
            raise DataGroupError(
                f"the OME-NGFF multiscales of {make_recipe(prefix).display} list dataset "
                f"{path!r} but the store has no such array; the pyramid is incomplete, rewrite it"
            ) from exc
        ndim = arr.ndim
        scale, translation = _transforms(ds.get("coordinateTransformations"), ndim)
        g_scale, g_trans = _transforms(ms.get("coordinateTransformations"), ndim)
        levels.append(
            _level(key, arr, make_recipe(key), dims or _array_dims(arr), scale * g_scale,
                   translation * g_scale + g_trans, units)
        )
    return levels


def _list_paths(group: zarr.Group, max_items: int = 40) -> list[str]:
    out = []
    try:
        for name, _node in group.members(max_depth=3):
            out.append(name)
            if len(out) >= max_items:
                break
    except Exception:
        pass
    return out


def discover_zarr(source: Any, *, data_group: str | int | None = None,
                  storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """Find the levels of the image in a zarr source.

    Parameters
    ----------
    source : str, zarr.Group, zarr.Array or zarr store
        Where the image is.
    data_group : str or int, optional
        Path of the array or multiscale group inside the source. An array
        that is one dataset of an OME-NGFF multiscale brings its pyramid and
        is the default level.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    SourceLevels

    Raises
    ------
    UnsupportedFormatError
        No zarr node at the location, or a metadata document (``zarr.json``,
        ``.zarray``...) that is not JSON.
    """
    import json

    display = source if isinstance(source, str) else f"<{type(source).__name__}>"
    try:
        return _discover_zarr(source, data_group, storage_options)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        key = None if data_group is None else str(data_group)
        raise metadata_error(source, key, storage_options, display, exc) from exc


def _discover_zarr(source: Any, data_group: str | int | None,
                   storage_options: Mapping[str, Any] | None) -> SourceLevels:
    location = source if isinstance(source, str) else None
    obj = None if isinstance(source, str) else source
    display = location if location is not None else f"<{type(source).__name__}>"
    opts = dict(storage_options or {})

    def make_recipe(key: str) -> ArrayRecipe:
        return ArrayRecipe("zarr", location, key or None, opts, obj)

    root = _open_root(source, opts, display)
    key = "" if data_group is None else str(data_group).strip("/")
    node = root
    if key:
        if not isinstance(root, zarr.Group):
            raise DataGroupError(
                f"data_group={data_group!r} asked for, but {display} is a single array with "
                "no groups; drop data_group"
            )
        try:
            node = root[key]
        except KeyError:
            available = _list_paths(root)
            raise DataGroupError(
                f"data_group={data_group!r} does not exist in {display}; it holds "
                f"{available or 'nothing'}; pass one of those"
            ) from None

    if isinstance(node, zarr.Array):
        parent_key, _, base = key.rpartition("/")
        if key and isinstance(root, zarr.Group):
            parent = root[parent_key] if parent_key else root
            ms = _multiscale(parent)
            if ms:
                paths = [str(d["path"]) for d in ms.get("datasets", [])]
                if base in paths:
                    levels = _multiscale_levels(parent, parent_key, ms, make_recipe)
                    return SourceLevels("zarr", display, levels, paths.index(base))
        return SourceLevels("zarr", display, [_level(key, node, make_recipe(key), _array_dims(node))])

    ms = _multiscale(node)
    if ms:
        return SourceLevels("zarr", display, _multiscale_levels(node, key, ms, make_recipe))
    # A plain group: take the first child holding a multiscale (bioformats2raw
    # layout keeps the image in "0"), else a single array child.
    groups = sorted(name for name, _ in node.groups())
    for name in groups:
        child = node[name]
        child_ms = _multiscale(child)
        if child_ms:
            child_key = _join_key(key, name)
            return SourceLevels("zarr", display, _multiscale_levels(child, child_key, child_ms, make_recipe))
    arrays = sorted(name for name, _ in node.arrays())
    if len(arrays) == 1:
        child_key = _join_key(key, arrays[0])
        arr = node[arrays[0]]
        return SourceLevels("zarr", display, [_level(child_key, arr, make_recipe(child_key), _array_dims(arr))])
    available = _list_paths(node)
    raise DataGroupError(
        f"{display}{' [' + key + ']' if key else ''} is a zarr group without OME-NGFF "
        f"multiscales and no single image array; it holds {available or 'nothing'}; pass "
        "data_group= naming the array to open"
    )


def open_zarr_array(recipe: ArrayRecipe) -> zarr.Array:
    """Open the array named by a zarr :class:`ArrayRecipe`."""
    import json

    source = recipe.location if recipe.location is not None else recipe.obj
    if isinstance(source, zarr.Array) and not recipe.key:
        return source
    try:
        root = _open_root(source, recipe.storage_options, recipe.display)
        return root[recipe.key] if recipe.key else root
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise metadata_error(source, recipe.key, recipe.storage_options,
                              recipe.location or recipe.display, exc) from exc


register_opener("zarr", open_zarr_array)

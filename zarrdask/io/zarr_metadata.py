"""Zarr metadata documents read by hand: consolidated or not, and which one
is damaged (not JSON) when zarr-python cannot parse a store."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import zarr

from ..errors import UnsupportedFormatError
from .location import get_filesystem, protocol_of, remote_error

__all__ = ["isconsolidated", "metadata_error"]


def isconsolidated(arr_src: Any, *, storage_options: Mapping[str, Any] | None = None) -> bool:
    """Whether a zarr source has consolidated metadata (faster to open).

    Parameters
    ----------
    arr_src : str, zarr.Group or zarr.Array
        Path/URL or an open zarr object.
    storage_options : mapping, optional
        fsspec options for URLs (``endpoint_url``, credentials...).

    Returns
    -------
    bool
        False as well when the location holds no zarr metadata at all.

    Raises
    ------
    RemoteAccessError
        A URL whose server cannot be reached or refuses access.
    """
    if isinstance(arr_src, zarr.Group):
        return arr_src.metadata.consolidated_metadata is not None
    if isinstance(arr_src, zarr.Array):
        return False
    location = str(arr_src).rstrip("/")
    if protocol_of(location) != "file":
        return _remote_consolidated(location, storage_options)
    try:
        if os.path.exists(os.path.join(location, ".zmetadata")):
            return True
        meta = os.path.join(location, "zarr.json")
        if os.path.exists(meta):
            with open(meta, "rb") as fh:
                raw = fh.read()
            return b'"consolidated_metadata"' in raw and _v3_consolidated(raw)
    except (OSError, ValueError):
        return False
    return False


def _remote_consolidated(location: str, storage_options: Mapping[str, Any] | None) -> bool:
    """:func:`isconsolidated` for a URL: one GET per metadata document."""
    try:
        fs, path = get_filesystem(location, storage_options)
        try:
            fs.cat_file(f"{path}/.zmetadata")
            return True
        except FileNotFoundError:
            pass
        try:
            raw = fs.cat_file(f"{path}/zarr.json")
        except FileNotFoundError:
            return False
    except Exception as exc:
        raise remote_error(location, storage_options, exc) from exc
    try:
        return _v3_consolidated(raw)
    except ValueError:  # zarr.json that is not JSON (or not UTF-8)
        return False


def _v3_consolidated(raw: bytes) -> bool:
    """Whether a zarr v3 ``zarr.json`` document holds consolidated metadata
    (ValueError when it is not JSON)."""
    import json

    doc = json.loads(raw)
    return bool(isinstance(doc, dict) and doc.get("consolidated_metadata"))


_METADATA_FILES = ("zarr.json", ".zgroup", ".zarray", ".zattrs", ".zmetadata")


def _damaged_metadata(location: str, key: str | None,
                      storage_options: Mapping[str, Any] | None) -> str | None:
    """The first zarr metadata document, at the root of ``location`` or on the
    way to ``key``, that is not valid JSON (None when none is found)."""
    import json

    folders = [""]
    for part in (key or "").strip("/").split("/"):
        if part:
            folders.append(f"{folders[-1]}/{part}".lstrip("/"))
    try:
        if protocol_of(location) == "file":
            def read(rel: str) -> bytes | None:
                full = os.path.join(location, rel)
                if not os.path.isfile(full):
                    return None
                with open(full, "rb") as fh:
                    return fh.read()
        else:
            fs, root = get_filesystem(location, storage_options)

            def read(rel: str) -> bytes | None:
                try:
                    return fs.cat_file(f"{root.rstrip('/')}/{rel}")
                except FileNotFoundError:
                    return None
        for folder in folders:
            for name in _METADATA_FILES:
                rel = f"{folder}/{name}" if folder else name
                raw = read(rel)
                if raw is None:
                    continue
                try:
                    json.loads(raw)
                except ValueError:  # JSONDecodeError and UnicodeDecodeError
                    return rel
    except Exception:
        return None
    return None


def metadata_error(source: Any, key: str | None, storage_options: Mapping[str, Any] | None,
                    display: str, exc: BaseException) -> UnsupportedFormatError:
    """The error for zarr metadata that is not JSON, naming the document."""
    where = None
    if isinstance(source, str):
        where = _damaged_metadata(source, key, storage_options)
    doc = f"{display.rstrip('/')}/{where}" if where else f"a zarr metadata document of {display}"
    return UnsupportedFormatError(
        f"{doc} is not valid JSON ({type(exc).__name__}: {exc}); the store's metadata is "
        "damaged or was not written completely: rewrite the store, or restore that file "
        "from a good copy"
    )

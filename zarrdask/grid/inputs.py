"""Image inputs at cohort scale: iterables, glob patterns, folders and
prefixes (local or any fsspec URL), and file lists.

A string is expanded when it is a glob pattern (``*``, ``?``, ``[``), or a
folder / URL prefix ending in ``/`` that is not itself an image store (no
zarr metadata document in it); everything else is one source, as before.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import GridParameterError
from ..io.location import get_filesystem, protocol_of

__all__ = ["expand_sources", "read_file_list", "is_pattern"]

_ZARR_DOCS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")
_GLOB = ("*", "?", "[")


def is_pattern(text: str) -> bool:
    """Whether ``text`` is a glob pattern."""
    return any(c in text for c in _GLOB)


def _join(protocol: str, path: str) -> str:
    if protocol == "file":
        return path
    return path if "://" in path else f"{protocol}://{path}"


def _expand_one(text: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    protocol = protocol_of(text)
    local = protocol == "file"
    folder = text.endswith("/") or (local and os.path.isdir(text))
    if not is_pattern(text) and (not folder or text.rstrip("/").lower().endswith(".zarr")):
        return [text.rstrip("/") or text]
    fs, path = get_filesystem(text, storage_options)
    if is_pattern(text):
        found = sorted(fs.glob(path))
        if not found:
            raise GridParameterError(
                f"the pattern {text!r} matches no file; check the pattern (and "
                "storage_options for a remote one)")
        return [_join(protocol, p) for p in found]
    path = path.rstrip("/")
    if any(fs.exists(f"{path}/{doc}") for doc in _ZARR_DOCS):
        return [text.rstrip("/") or text]  # a store, not a folder of images
    names = sorted(p for p in fs.ls(path, detail=False)
                   if not os.path.basename(p.rstrip("/")).startswith("."))
    if not names:
        raise GridParameterError(f"the folder {text!r} holds no image; pass a folder of images")
    return [_join(protocol, p.rstrip("/")) for p in names]


def expand_sources(images: Any, *, storage_options: Mapping[str, Any] | None = None
                   ) -> list[Any]:
    """The image items of ``images``, patterns and folders expanded.

    Parameters
    ----------
    images : source, list or iterable
        One item (path, URL, array, spec mapping), a list/tuple or any
        iterable (a generator) of items. String items that are glob
        patterns (``"s3://bucket/cohort/*.zarr"``, ``"slides/**/*.svs"``) or
        folders/prefixes of images (a local folder that is not a zarr store,
        a URL ending in ``/``) are replaced by what they list, sorted.
    storage_options : mapping, optional
        fsspec options for listing remote patterns and prefixes.

    Returns
    -------
    list

    Raises
    ------
    GridParameterError
        When a pattern matches nothing or a folder is empty.
    """
    if images is None:
        return []
    if isinstance(images, str | os.PathLike | Mapping) or not isinstance(images, Iterable) or (
            hasattr(images, "shape")):
        items = [images]
    else:
        items = list(images)
    out: list[Any] = []
    for item in items:
        if isinstance(item, str | os.PathLike):
            out.extend(_expand_one(os.fspath(item), storage_options))
        else:
            out.append(item)
    return out


def read_file_list(location: str) -> list[str]:
    """Sources listed one per line in a file (``-``: standard input); blank
    lines and lines starting with ``#`` are skipped.

    Raises
    ------
    GridParameterError
        When the file cannot be read.
    """
    import sys

    try:
        if location == "-":
            lines = sys.stdin.read().splitlines()
        else:
            with open(location, encoding="utf-8") as f:
                lines = f.read().splitlines()
    except OSError as exc:
        raise GridParameterError(
            f"cannot read the file list {location}: {exc.strerror or exc}; pass a text file "
            "with one path or URL per line, or - for standard input") from exc
    return [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]

"""Portable tables: local sources made absolute when a table is built, and
moved from one root to another when it is read elsewhere (``path_map``)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from .errors import TableError

__all__ = ["absolute_location", "PathRemap", "remap_paths"]

_PATH_KEYS = ("source", "location", "name")


def absolute_location(location: Any) -> Any:
    """A local path made absolute (``~`` expanded); URLs, in-memory names
    (``<...>``) and non-strings unchanged."""
    from .io.location import protocol_of

    if not isinstance(location, str | os.PathLike):
        return location
    text = os.fspath(location)
    if text.startswith("<") or "://" in text or protocol_of(text) != "file":
        return text
    return os.path.abspath(os.path.expanduser(text))


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


class PathRemap:
    """Moves local sources from old roots to new ones (see :func:`remap_paths`).

    Parameters
    ----------
    path_map : mapping of str to str
        Old root prefix to new root prefix; the longest matching prefix
        (whole path components) wins; URLs are left alone.

    Notes
    -----
    Calling it on an entry (or any JSON-like object) returns a copy whose
    ``source``, ``location`` and ``name`` values are moved; :attr:`used`
    collects the roots that matched.
    """

    def __init__(self, path_map: Mapping[str, str]) -> None:
        self.roots = sorted(((os.fspath(k).rstrip("/") or "/", os.fspath(v).rstrip("/") or "/")
                             for k, v in dict(path_map).items()), key=lambda kv: -len(kv[0]))
        self.used: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {"roots": self.roots, "used": set()}

    def move(self, text: str) -> str:
        """One location, moved."""
        if text.startswith("<") or "://" in text:
            return text
        matches = [(old, new) for old, new in self.roots if _under(text, old)]
        self.used.update(old for old, _ in matches)
        if not matches:
            return text
        old, new = matches[0]  # the longest root
        rest = text[len(old):].lstrip("/")
        return os.path.join(new, rest) if rest else new

    def __call__(self, obj: Any) -> Any:
        if isinstance(obj, dict):
            return {k: self.move(v) if k in _PATH_KEYS and isinstance(v, str) else self(v)
                    for k, v in obj.items()}
        if isinstance(obj, list):
            return [self(v) for v in obj]
        return obj

    def unused(self) -> list[str]:
        """Roots that matched no location moved so far."""
        return [old for old, _ in self.roots if old not in self.used]

    def check_roots(self, folder: Any) -> None:
        """Raise when a root matches no image source of a partitioned table
        (:class:`~zarrdask.table_layout.FolderTable`), from its images
        table's ``source`` and ``name`` columns, without parsing entries."""
        import pyarrow as pa
        import pyarrow.compute as pc

        from .table_layout import read_image_summaries

        table = read_image_summaries(folder.version, ["source", "name"])
        texts = [] if table is None else pc.unique(pa.concat_arrays(
            [table.column(c).combine_chunks() for c in table.column_names])).to_pylist()
        for text in texts:
            if isinstance(text, str):
                self.move(text)
        names = [] if table is None else table.column("name").to_pylist()
        self._raise_unused(sorted({t for t in names[:100] if isinstance(t, str)}))

    def _raise_unused(self, names: list[str]) -> None:
        unused = self.unused()
        if unused:
            raise TableError(
                f"path_map roots {unused} match no local source of the table (its images: "
                f"{names[:5]}{' ...' if len(names) > 5 else ''}); give the old root as stored in "
                "the table"
            )


def remap_paths(meta: Mapping[str, Any], path_map: Mapping[str, str]) -> dict[str, Any]:
    """A copy of table metadata whose local sources (``source``,
    ``location`` and ``name`` values of the ``images`` and ``modalities``
    entries) have their longest matching old root replaced by the new one.

    Raises
    ------
    TableError
        When a key of ``path_map`` matches no local source.
    """
    remap = PathRemap(path_map)
    out = dict(meta)
    for key in ("images", "modalities"):
        if key in out:
            out[key] = remap(out[key])
    remap._raise_unused(sorted({str(e.get("name")) for e in meta.get("images", [])
                                if isinstance(e, dict)}))
    return out

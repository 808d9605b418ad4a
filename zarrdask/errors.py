"""Typed errors of zarrdask.

Every error is also a builtin exception (``ValueError``, ``FileNotFoundError``,
...), so code that catches the builtin keeps working, and every message names
the source, the argument and the fix.
"""

from __future__ import annotations

__all__ = [
    "ZarrdaskError",
    "SourceNotFoundError",
    "UnsupportedFormatError",
    "AxesError",
    "DataGroupError",
    "DataGroupTypeError",
    "RoiError",
    "RemoteAccessError",
    "CorruptChunkError",
    "GridParameterError",
    "MaskError",
    "TableError",
    "TableWriteError",
    "DatasetError",
    "OptionError",
]


class ZarrdaskError(Exception):
    """Base class of every error raised by zarrdask."""


class SourceNotFoundError(ZarrdaskError, FileNotFoundError):
    """The image source does not exist (missing path, key or bucket)."""


class UnsupportedFormatError(ZarrdaskError, ValueError):
    """The source exists but no reader understands its format."""


class AxesError(ZarrdaskError, ValueError):
    """An axes string does not fit the array (wrong length, repeated letter)."""


class DataGroupError(ZarrdaskError, KeyError):
    """A ``data_group`` or ``level`` that the source does not contain."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class DataGroupTypeError(DataGroupError, ValueError):
    """A ``data_group`` of a type no reader takes (not a str, an int or None);
    also a ``ValueError``, as zarrdataset raised."""


class RoiError(ZarrdaskError, ValueError):
    """A region of interest that is malformed or outside the image."""


class RemoteAccessError(ZarrdaskError, ConnectionError):
    """A remote store (S3, HTTP) could not be reached or refused access."""


class CorruptChunkError(ZarrdaskError, OSError):
    """A stored chunk could not be decoded."""


class GridParameterError(ZarrdaskError, ValueError):
    """Patch-grid parameters that cannot produce a valid grid."""


class MaskError(ZarrdaskError, ValueError):
    """A mask that cannot be aligned with, or does not fit, its image."""


class TableError(ZarrdaskError, ValueError):
    """A coordinate table that is missing, incomplete or inconsistent."""


class TableWriteError(TableError, OSError):
    """A coordinate table that cannot be written at its path (a read-only
    or missing location, no space left); also an ``OSError``."""


class DatasetError(ZarrdaskError, ValueError):
    """Arguments of a patch dataset that do not fit its table (modalities,
    transforms, sources, resume state)."""


class OptionError(ZarrdaskError, ValueError, TypeError):
    """A public option of the wrong type or value (``storage_options`` that is
    not a mapping, ``chunks`` that dask cannot use, a ``level`` that is not an
    int...). Both a ``ValueError`` and a ``TypeError``."""

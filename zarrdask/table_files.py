"""Atomic Parquet files and versioned folders for coordinate tables.

Layouts
-------
A table of up to ``part_rows`` rows is **one Parquet file**. It is written to
a hidden temporary name beside the target and moved into place with
:func:`os.replace`, which is atomic: a reader sees the old file or the new
one, never a partial one, and concurrent writers simply race (the last
rename wins).

A larger table is a **folder**::

    table.parquet/
        current -> .v-<uuid>        relative symbolic link to the live version
        .v-<uuid>/part-00000.parquet ...

Replacing it writes a new hidden version beside the live one and swaps the
``current`` link with :func:`os.replace` (atomic). Afterwards the writer
removes the versions no longer pointed to. A version is locked with a
shared ``flock`` by every writer while it writes it and by every
:func:`read_parquet` while it reads it, and is removed only under an
exclusive, non-blocking lock: a version in use is left for a later write to
remove. pyarrow and pandas read the folder itself (they skip hidden names and
follow the link); dask.dataframe lists hidden folders too, so give it
``table.parquet/current``. Folders written by zarrdask before versioning
(part files at the top level) are still read, and converted at their next
replacement.

Once a path holds a folder table, later writes there keep the folder layout
(a small table becomes a one-part version), so every replacement stays
atomic. Turning an existing single-file table into a folder is the one
replacement that is not atomic: the file is moved aside just before the
folder takes its name.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TypeVar

import pyarrow as pa
import pyarrow.parquet as pq

from .errors import TableError, TableWriteError

__all__ = ["TableWriteError", "write_parquet", "write_folder", "read_parquet", "read_version",
           "hold_current", "remove_old_versions",
           "check_writable", "is_folder_table", "CURRENT"]

CURRENT = "current"
_VERSION = ".v-"
_LINK = ".link-"
_GARBAGE = ".gc-"
_WRITING = ".w-"
_STALE_SECONDS = 3600  # temporary names older than this are left-overs of a crash
_ZARR_MARKERS = ("zarr.json", ".zgroup", ".zarray", ".zattrs")
T = TypeVar("T")


def _flock(fd: int, *, exclusive: bool, wait: bool) -> bool:
    """``flock`` a directory; False when the lock is held elsewhere. Systems
    or file systems without ``flock`` count as locked by us (no protection)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        return True
    flags = (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | (0 if wait else fcntl.LOCK_NB)
    try:
        fcntl.flock(fd, flags)
    except OSError as exc:
        return exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN)
    return True


@contextlib.contextmanager
def _held(folder: str, *, exclusive: bool = False, wait: bool = True) -> Iterator[bool]:
    """Hold a lock on ``folder`` for the duration of the block; yields
    whether it was acquired (always True when ``wait``)."""
    fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        yield _flock(fd, exclusive=exclusive, wait=wait)
    finally:
        os.close(fd)  # releases the lock


def is_folder_table(path: str) -> bool:
    """Whether ``path`` is a folder table (versioned, or the older layout of
    part files only)."""
    if not os.path.isdir(path):
        return False
    if os.path.islink(os.path.join(path, CURRENT)):
        return True
    names = [n for n in os.listdir(path) if not n.startswith((".", "_"))]
    return bool(names) and all(n.endswith(".parquet") for n in names)


def _not_a_table_folder(path: str) -> TableError:
    names = os.listdir(path)
    if any(n in names for n in _ZARR_MARKERS):
        what = "a zarr store"
        fix = ("pass the Parquet path that build_table(...).to_parquet(path) or "
               "`zarrdask grid --out` wrote, not the image")
    else:
        what = "a folder without a coordinate table"
        fix = ("pass the path of a table written by PatchTable.to_parquet, or choose another "
               "path for a new table")
    return TableError(f"{path} is {what}, not a coordinate table; {fix}")


# -- writing -----------------------------------------------------------------

def _write_error(path: str, exc: OSError) -> TableWriteError:
    reason = os.strerror(exc.errno) if exc.errno else str(exc)
    return TableWriteError(
        f"cannot write the coordinate table to {path}: {reason}; choose a writable location "
        "(an existing folder you may write to, with free space)"
    )


def check_writable(path: str, *, overwrite: bool = True) -> None:
    """Fail now, before any work, when a table could not be written at
    ``path``: creates the missing parent folders and a probe file beside the
    target (removed again).

    Raises
    ------
    TableError
        When ``path`` exists and ``overwrite`` is False, or is a folder that
        holds something else than a table.
    TableWriteError
        When the location cannot be written.
    """
    if os.path.lexists(path) and not overwrite:
        raise TableError(f"{path} exists; pass overwrite=True or choose another path")
    if os.path.isdir(path) and not is_folder_table(path) and os.listdir(path):
        raise _not_a_table_folder(path)
    target = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    probe = os.path.join(target, f".{os.path.basename(os.path.abspath(path))}.probe-"
                         f"{uuid.uuid4().hex}")
    try:
        os.makedirs(target, exist_ok=True)
        fd = os.open(probe, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        os.close(fd)
        os.remove(probe)
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _write_parts(table: pa.Table, folder: str, part_rows: int, row_group: int) -> None:
    starts = range(0, max(table.num_rows, 1), part_rows)
    for i, start in enumerate(starts):
        pq.write_table(table.slice(start, part_rows), os.path.join(folder, f"part-{i:05d}.parquet"),
                       row_group_size=row_group)


def _new_version(path: str, write: Callable[[str], None]) -> None:
    """Write a new version inside the folder table ``path`` (``write(folder)``
    fills it) and make it current.

    The version is written under a ``.w-`` name that clean-ups never touch
    (except when stale) and renamed to its ``.v-`` name while locked, so no
    other writer's clean-up can take it before it is current."""
    tag = uuid.uuid4().hex
    writing = os.path.join(path, f"{_WRITING}{tag}")
    version = os.path.join(path, f"{_VERSION}{tag}")
    link = os.path.join(path, f"{_LINK}{tag}")
    os.makedirs(writing)
    try:
        with _held(writing):  # the lock follows the folder through the rename
            write(writing)
            os.rename(writing, version)
            os.symlink(os.path.basename(version), link)
            os.replace(link, os.path.join(path, CURRENT))
    except BaseException:
        _remove(link)
        _remove(writing)
        if _current_name(path) != os.path.basename(version):
            _remove(version)
        raise
    _collect(path)


def _collect(path: str) -> None:
    """Remove the versions of ``path`` that are not current and not in use,
    the top-level parts of the older layout, and stale temporary names."""
    now = time.time()
    for name in os.listdir(path):
        full = os.path.join(path, name)
        if name.startswith(_VERSION):
            with contextlib.suppress(FileNotFoundError), _held(full, exclusive=True,
                                                                wait=False) as mine:
                # re-read the link under the lock: a writer swaps before it unlocks
                if mine and _current_name(path) != name:
                    trash = os.path.join(path, f"{_GARBAGE}{uuid.uuid4().hex}")
                    os.rename(full, trash)  # a reader waiting on it sees it gone and retries
                    shutil.rmtree(trash, ignore_errors=True)
        elif name.startswith((_GARBAGE, _LINK, _WRITING)):
            with contextlib.suppress(FileNotFoundError):
                if now - os.lstat(full).st_mtime > _STALE_SECONDS:
                    _remove(full)
        elif name.endswith(".parquet") and not name.startswith((".", "_")):
            with contextlib.suppress(FileNotFoundError):
                os.remove(full)  # older layout, superseded by `current`


def _current_name(path: str) -> str | None:
    try:
        return os.readlink(os.path.join(path, CURRENT))
    except OSError:
        return None


def write_parquet(table: pa.Table, path: str, *, part_rows: int, row_group: int,
                  overwrite: bool) -> None:
    """Write ``table`` to ``path`` atomically (see the module docs): one
    file when it has at most ``part_rows`` rows and ``path`` is not a folder
    table, else a new version of part files.

    Raises
    ------
    TableError
        When ``path`` exists and ``overwrite`` is False, or is a folder that
        is not a coordinate table (nothing is deleted).
    TableWriteError
        When the location cannot be written; it names ``path``, not the
        temporary name.
    """
    if table.num_rows > part_rows or os.path.isdir(path):
        write_folder(path, lambda folder: _write_parts(table, folder, part_rows, row_group),
                     overwrite=overwrite)
        return
    _check_target(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(path))}.tmp-{uuid.uuid4().hex}")
    try:
        os.makedirs(parent, exist_ok=True)
        try:
            pq.write_table(table, tmp, row_group_size=row_group)
            os.replace(tmp, path)
        except BaseException:
            _remove(tmp)
            raise
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _check_target(path: str, overwrite: bool) -> None:
    if os.path.lexists(path) and not overwrite:
        raise TableError(f"{path} exists; pass overwrite=True or choose another path")
    if os.path.isdir(path) and not is_folder_table(path) and os.listdir(path):
        raise _not_a_table_folder(path)


def write_folder(path: str, write: Callable[[str], None], *, overwrite: bool) -> None:
    """Make ``path`` a folder table whose new current version ``write(folder)``
    fills (atomically, see the module docs).

    Raises
    ------
    TableError, TableWriteError
        As :func:`write_parquet`.
    """
    _check_target(path, overwrite)
    parent = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(parent, f".{os.path.basename(os.path.abspath(path))}.tmp-{uuid.uuid4().hex}")
    try:
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(path):
            _new_version(path, write)
        else:
            _first_folder(path, tmp, write)
    except TableError:
        raise
    except OSError as exc:
        raise _write_error(path, exc) from exc


def _first_folder(path: str, tmp: str, write: Callable[[str], None]) -> None:
    """Create the folder table ``path`` (absent, or a single file until now)."""
    try:
        os.makedirs(tmp)
        version = f"{_VERSION}{uuid.uuid4().hex}"
        os.makedirs(os.path.join(tmp, version))
        write(os.path.join(tmp, version))
        os.symlink(version, os.path.join(tmp, CURRENT))
        if os.path.isfile(path):
            aside = f"{tmp}.old"
            os.rename(path, aside)
            try:
                os.rename(tmp, path)
            finally:
                _remove(aside)
            return
        try:
            os.rename(tmp, path)
        except OSError as exc:
            # another writer created the folder first: add our version to it
            if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY) or not is_folder_table(path):
                raise
            _new_version(path, write)
    finally:
        _remove(tmp)


def _remove(path: str) -> None:
    if os.path.islink(path) or os.path.isfile(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(path)
    elif os.path.isdir(path):
        shutil.rmtree(path, ignore_errors=True)


# -- reading -----------------------------------------------------------------

def _corrupt(path: str, exc: BaseException) -> TableError:
    reason = " ".join(str(exc).split())  # pyarrow's messages span lines
    return TableError(
        f"{path} is not a readable Parquet coordinate table (truncated, corrupt or another "
        f"format: {reason}); rebuild it with zarrdask.build_table(..., cache={path!r}) or "
        f"`zarrdask grid ... --out {path}`"
    )


def read_parquet(path: str) -> pa.Table:
    """Read the Parquet file or folder table at ``path``; a folder's live
    version is locked while it is read, so no writer removes it meanwhile.

    Raises
    ------
    TableError
        When ``path`` is missing, is a zarr store or another folder, or is
        not a readable Parquet file (truncated, corrupt, another format).
    """
    return read_version(path, pq.read_table)


def read_version(path: str, read: Callable[[str], T]) -> T:
    """``read(location)`` of the table at ``path``: the file itself, or the
    folder table's live version, locked while ``read`` runs.

    Raises
    ------
    TableError
        As :func:`read_parquet`; pyarrow and OS errors of ``read`` become a
        :class:`TableError` naming ``path``.
    """
    if not os.path.exists(path):
        raise TableError(
            f"no coordinate table at {path}; build one with zarrdask.build_table(...)"
            f".to_parquet(path) or `zarrdask grid ... --out {path}`"
        )
    try:
        if not os.path.isdir(path):
            return read(path)
        if not os.path.lexists(os.path.join(path, CURRENT)):
            if not is_folder_table(path):
                raise _not_a_table_folder(path)
            return read(path)  # the layout before versioning
        for _ in range(1000):
            name = _current_name(path)
            version = os.path.join(path, name) if name else None
            if version is None:
                break
            try:
                with _held(version):
                    if os.path.isdir(version):  # not removed while we waited for the lock
                        return read(version)
            except (FileNotFoundError, NotADirectoryError):
                pass  # replaced and removed since we read the link: read it again
        raise TableError(f"{path} has no readable current version; rebuild the table")
    except TableError:
        raise
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise _corrupt(path, exc) from exc


def hold_current(path: str) -> tuple[str, int]:
    """The live version of the folder table ``path``, share-locked until the
    returned descriptor is closed (for readers that read its files over a
    long time, such as a lazy :class:`~zarrdask.PatchDataset`).

    Raises
    ------
    TableError
        When ``path`` has no readable current version.
    """
    for _ in range(1000):
        name = _current_name(path)
        if name is None:
            break
        version = os.path.join(path, name)
        try:
            fd = os.open(version, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except (FileNotFoundError, NotADirectoryError):
            continue
        _flock(fd, exclusive=False, wait=True)
        if os.path.isdir(version):
            return version, fd
        os.close(fd)
    raise TableError(f"{path} has no readable current version; rebuild the table")


def remove_old_versions(path: str) -> None:
    """Remove the versions of the folder table ``path`` that are not current
    and not in use (what every write does after its swap)."""
    if os.path.isdir(path):
        _collect(path)

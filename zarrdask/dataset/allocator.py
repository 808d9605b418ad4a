"""The C library's allocator settings for the batch loader (glibc, Linux).

Batches (a few MB) and decoded chunks (hundreds of KB) are fresh buffers
that live for a batch or two. With glibc's defaults, freed buffers of that
size are soon handed back to the kernel (``munmap``, or a heap trimmed with
``MADV_DONTNEED``) and the next ones fault their pages in again: measured
12–28 minor page faults per 256² RGB patch, about a fifth of the loader's
CPU time, where decoding alone has none. Raising glibc's mmap threshold to
32 MiB (its own ceiling for the dynamic threshold) and its trim threshold
to 128 MiB keeps those buffers in the process for reuse; at most 128 MiB of
freed memory stays with the allocator.

The settings apply to the whole process, once; they are left alone when
the environment already sets the allocator (``MALLOC_*_`` variables or
``GLIBC_TUNABLES``), off Linux, and where the C library has no ``mallopt``.
"""

from __future__ import annotations

import ctypes
import os
import sys

__all__ = ["keep_freed_buffers", "MMAP_THRESHOLD", "TRIM_THRESHOLD"]

#: glibc's ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: allocations below this come from the heap, where freed memory is reused
MMAP_THRESHOLD = 32 << 20
#: freed memory kept at the top of a heap before it is returned to the kernel
TRIM_THRESHOLD = 128 << 20
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_",
                  "MALLOC_MMAP_MAX_", "GLIBC_TUNABLES")
_applied: dict[int, bool] = {}  # process id -> whether the settings were applied


def keep_freed_buffers() -> bool:
    """Raise glibc's mmap and trim thresholds in this process (once).

    Returns
    -------
    bool
        Whether the settings are in force in this process (False off Linux,
        without ``mallopt``, or when the environment sets the allocator).
    """
    pid = os.getpid()
    if pid not in _applied:
        _applied[pid] = _apply()
    return _applied[pid]


def _apply() -> bool:
    if not sys.platform.startswith("linux") or any(k in os.environ for k in _USER_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt  # the C library this process runs on
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))

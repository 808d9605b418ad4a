"""Axes handling shared by the zarrdataset-compatible loaders and dataset.

zarrdataset describes an array by ``source_axes`` (its stored order, one
letter per dim) and a wanted ``axes`` order: axes of ``source_axes`` missing
from ``axes`` are dropped (they must have length 1, usually through a ROI),
the others are transposed into the order of ``axes``, and letters of
``axes`` missing from ``source_axes`` become new length-1 axes.
:class:`AxesStage` does exactly that on numpy arrays (views, no copies), and
:func:`parse_roi_arg` normalises zarrdataset's ROI argument.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import AxesError, RoiError
from ..roi import parse_rois

__all__ = ["AxesStage", "parse_roi_arg", "check_axes", "dropped_axes", "new_axes"]


def check_axes(axes: Any, what: str, source: object) -> str:
    """``axes`` as a string of distinct letters, or an :class:`AxesError`."""
    if isinstance(axes, list | tuple):
        axes = "".join(str(a) for a in axes)
    if not isinstance(axes, str) or not axes.isalpha():
        raise AxesError(
            f"{what}={axes!r} for {source} must be a string of axis letters such as 'TCZYX' "
            "or 'YXC'; pass one letter per axis"
        )
    repeated = sorted({a for a in axes if axes.count(a) > 1})
    if repeated:
        raise AxesError(
            f"{what}={axes!r} for {source} names {', '.join(repeated)} more than once; each axis "
            "letter may appear only once"
        )
    return axes


def dropped_axes(source_axes: str, axes: str) -> str:
    """Letters of ``source_axes`` that ``axes`` leaves out, in source order."""
    return "".join(a for a in source_axes if a not in axes)


def new_axes(source_axes: str, axes: str) -> str:
    """Letters of ``axes`` that ``source_axes`` lacks, in ``axes`` order."""
    return "".join(a for a in axes if a not in source_axes)


def parse_roi_arg(roi: Any, source_axes: str, source: object) -> list[slice]:
    """zarrdataset's ``roi`` argument as one slice per source axis.

    Parameters
    ----------
    roi : None, str, slice or sequence of slices
        ``"(start,...):(length,...)"`` (parentheses optional), one slice per
        source axis, or ``slice(None)``.
    source_axes : str
        The stored axes (their count fixes the number of slices).
    source : object
        Named in error messages.

    Returns
    -------
    list of slice
        Slices with an explicit start (0 when none was given); stops may be
        None (to the end).

    Raises
    ------
    RoiError
        For a ROI with another number of axes or that is not a slice.
    """
    n = len(source_axes)
    if roi is None:
        parsed: Any = [slice(None)] * n
    elif isinstance(roi, str):
        parsed = parse_rois([roi])[0] if roi.strip() else slice(None)
        if isinstance(parsed, slice):
            parsed = [parsed] * n
    elif isinstance(roi, slice):
        if n > 1 and not (roi.start is None and roi.stop is None):
            raise RoiError(
                f"roi={roi!r} for {source} is one slice but source_axes={source_axes!r} has "
                f"{n} axes; give one slice per source axis (a tuple of {n} slices)"
            )
        parsed = [roi] * n
    elif isinstance(roi, list | tuple):
        parsed = list(roi)
    else:
        raise RoiError(
            f"roi={roi!r} for {source} has type {type(roi).__name__}; pass a string "
            "'(start,...):(length,...)', a tuple of slices (one per source axis) or None"
        )
    if len(parsed) != n:
        raise RoiError(
            f"roi for {source} has {len(parsed)} axes but source_axes={source_axes!r} has {n}; "
            "give one start and one length per source axis"
        )
    if not all(isinstance(r, slice) for r in parsed):
        raise RoiError(
            f"roi for {source} holds {[type(r).__name__ for r in parsed]}; every entry must be "
            "a slice"
        )
    return [slice(0 if r.start is None else int(r.start), None if r.stop is None else int(r.stop))
            for r in parsed]


class AxesStage:
    """Select, drop, transpose and insert axes of arrays (zarrdataset's
    ``source_axes`` to ``axes``).

    Parameters
    ----------
    in_axes : sequence of str
        Names of the input array's axes (letters; entries starting with
        ``"#"`` are placeholders that are always dropped).
    out_axes : str
        Wanted axes; letters absent from ``in_axes`` become length-1 axes.
    select : mapping of int to slice, optional
        Slices applied first, keyed by input axis position.
    source : object
        Named in error messages.

    Notes
    -----
    Calls return views of their input (no copy). A dropped axis whose length
    is not 1 raises :class:`~zarrdask.errors.AxesError`.
    """

    def __init__(self, in_axes: Sequence[str], out_axes: str,
                 select: dict[int, slice] | None = None, *, source: object = "the image") -> None:
        self.in_axes = list(in_axes)
        self.out_axes = out_axes
        self.source = str(source)
        sel = [slice(None)] * len(self.in_axes)
        for i, s in (select or {}).items():
            sel[i] = s
        self._select = tuple(sel) if any(s != slice(None) for s in sel) else None
        self._drop = [i for i, a in enumerate(self.in_axes) if a.startswith("#") or a not in out_axes]
        kept = [a for i, a in enumerate(self.in_axes) if i not in self._drop]
        self._order = [kept.index(a) for a in out_axes if a in kept]
        self._identity_order = self._order == list(range(len(kept)))
        self._insert = tuple(i for i, a in enumerate(out_axes) if a not in kept)

    def __repr__(self) -> str:
        return f"AxesStage({''.join(a.lstrip('#').lower() if a.startswith('#') else a for a in self.in_axes)!r} -> {self.out_axes!r})"

    def __call__(self, arr: np.ndarray) -> np.ndarray:
        if self._select is not None:
            arr = arr[self._select]
        if self._drop:
            big = [self.in_axes[i].lstrip("#") for i in self._drop if arr.shape[i] != 1]
            if big:
                raise AxesError(
                    f"cannot drop axes {big} of {self.source} (shape {arr.shape}, axes "
                    f"{''.join(a.lstrip('#') for a in self.in_axes)!r}) to get "
                    f"axes={self.out_axes!r}: they are longer than 1; select one index of them "
                    "with a roi, or keep them in axes"
                )
            arr = arr.reshape([n for i, n in enumerate(arr.shape) if i not in self._drop])
        if not self._identity_order:
            arr = arr.transpose(self._order)
        if self._insert:
            arr = np.expand_dims(arr, self._insert)
        return arr

"""Axis names: zarrdataset-style axes strings to named dims and back.

zarrdask names dims with the OME-NGFF names ``t, c, z, y, x``. Axes strings
such as ``"TCZYX"`` or ``"yxc"`` are accepted in either case; tifffile's
``S`` (samples) becomes ``c`` (unless the axes also hold a ``C``, then it
stays ``s``), and any other letter keeps its own lower-case name.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from .errors import AxesError

__all__ = [
    "SPATIAL_DIMS",
    "dims_from_axes",
    "lower_dims",
    "axes_from_dims",
    "default_dims",
    "map_axes_order",
    "select_axes",
]

#: Spatial dims, outermost first.
SPATIAL_DIMS: tuple[str, ...] = ("z", "y", "x")

_ALIASES = {"s": "c"}
_OME_ORDER = ("t", "c", "z", "y", "x")


def dims_from_axes(
    axes: str | Sequence[str], ndim: int | None = None, *, source: object = "the image"
) -> tuple[str, ...]:
    """Turn an axes string (or sequence of names) into dim names.

    Parameters
    ----------
    axes : str or sequence of str
        ``"TCZYX"``, ``"yxc"``, ``("y", "x")``... One letter per array dim
        when a string; case does not matter.
    ndim : int, optional
        The number of dims of the array; checked when given.
    source : object
        Named in error messages.

    Returns
    -------
    tuple of str
        Lower-case dim names (``s`` is renamed ``c`` when there is no ``c``).

    Raises
    ------
    AxesError
        When the length does not match ``ndim`` or a name repeats.
    """
    if isinstance(axes, str):
        names = [a for a in axes.strip()]
    else:
        names = [str(a) for a in axes]
    if isinstance(axes, str) and not all(n.isalpha() for n in names):
        raise AxesError(
            f"axes={axes!r} for {source} holds characters that are not axis letters; "
            "pass one letter per dim, e.g. axes='CYX'"
        )
    dims = lower_dims(names)
    if ndim is not None and len(dims) != ndim:
        raise AxesError(
            f"axes={axes!r} has {len(dims)} letters but {source} has {ndim} dims; "
            f"pass one letter per dim, e.g. axes={''.join(default_dims(ndim)).upper()!r}"
        )
    repeated = sorted({d for d in dims if dims.count(d) > 1})
    if repeated:
        raise AxesError(
            f"axes={axes!r} names {', '.join(repeated)!s} more than once for {source}; "
            "each axis letter may appear only once"
        )
    return dims


def lower_dims(names: Iterable[str]) -> tuple[str, ...]:
    """Lower-case dim names of axis names, without any check: ``s``
    (samples) becomes ``c`` unless the names also hold a ``c`` (e.g.
    tifffile's ``CYXS``), then both are kept apart."""
    lower = [str(n).lower() for n in names]
    if "c" in lower:
        return tuple(lower)
    return tuple(_ALIASES.get(n, n) for n in lower)


def axes_from_dims(dims: Iterable[str]) -> str:
    """Upper-case axes string of ``dims`` (the zarrdataset spelling)."""
    return "".join(str(d).upper() for d in dims)


def default_dims(ndim: int) -> tuple[str, ...]:
    """Dims assumed for an array without axis metadata: the last ``ndim`` of
    the OME-NGFF order ``t, c, z, y, x``."""
    if ndim > len(_OME_ORDER):
        extra = tuple(f"dim_{i}" for i in range(ndim - len(_OME_ORDER)))
        return extra + _OME_ORDER
    return _OME_ORDER[len(_OME_ORDER) - ndim :]


def map_axes_order(source_axes: str, target_axes: str = "YX") -> list[int]:
    """Indices that transpose ``source_axes`` into ``target_axes``.

    Axes of ``source_axes`` missing from ``target_axes`` move to the front, in
    the order they have in ``source_axes`` (zarrdataset 0.2.2 used set order,
    which changes between runs); axes of ``target_axes`` absent from
    ``source_axes`` are skipped.

    Parameters
    ----------
    source_axes : str
        Axes of the array, e.g. ``"TCZYX"``.
    target_axes : str
        Wanted order, e.g. ``"YXC"``.

    Returns
    -------
    list of int
        Positions in ``source_axes``, for ``numpy.transpose``.

    Examples
    --------
    >>> map_axes_order("TCZYX", "YXC")
    [0, 2, 3, 4, 1]
    """
    present = [a for a in target_axes if a in source_axes]
    unused = [a for a in source_axes if a not in present]
    return [source_axes.index(a) for a in unused + present]


def select_axes(source_axes: str, axes_selection: dict) -> tuple[tuple[slice, ...], str]:
    """Slices selecting ``axes_selection`` from an array with ``source_axes``.

    Parameters
    ----------
    source_axes : str
        Ordered axes of the array.
    axes_selection : dict
        Axis letter to slice. Unspecified axes, and slices with neither start
        nor stop, are taken whole.

    Returns
    -------
    sel_slices : tuple of slice
        One slice per axis of ``source_axes``.
    unfixed_axes : str
        The axes not fixed by the selection (as zarrdataset: an axis given a
        start or stop counts as fixed).
    """
    sel_slices = []
    unfixed = []
    for ax in source_axes:
        idx = axes_selection.get(ax)
        if idx is None or (idx.start is None and idx.stop is None):
            sel_slices.append(slice(None))
            unfixed.append(ax)
        else:
            sel_slices.append(idx)
    return tuple(sel_slices), "".join(unfixed)

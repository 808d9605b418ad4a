"""Regions of interest: zarrdataset's ROI grammar and selection helpers.

A ROI string is ``(start, ...):(length, ...)`` with one value per source axis;
a length ``<= 0`` means "to the end of that axis". A ROI is applied before any
axes reordering, in the source's own axis order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from itertools import repeat
from numbers import Integral
from typing import Any

from .axes import select_axes
from .errors import RoiError

__all__ = [
    "parse_rois",
    "parse_metadata",
    "scale_coords",
    "translate2roi",
    "roi_to_selection",
]


def _parse_ints(text: str, what: str, roi: str) -> tuple[int, ...]:
    try:
        return tuple(int(v.strip("\n\r\t ()")) for v in text.split(","))
    except ValueError:
        raise RoiError(
            f"cannot read the {what} of roi={roi!r}: write it as "
            "'(start,...):(length,...)' with integers, e.g. '(0,0):(512,-1)'"
        ) from None


def parse_rois(rois_str: Iterable[str]) -> list[slice]:
    """Parse ROI strings into tuples of slices.

    Parameters
    ----------
    rois_str : str or iterable of str
        Each ``"(start,...):(length,...)"``; a length ``<= 0`` selects to the
        end of the axis. A string without ``:`` selects everything.

    Returns
    -------
    list
        One tuple of slices per ROI (``slice(None)`` for a ROI without ``:``).

    Examples
    --------
    >>> parse_rois("(0,5,5):(-1,2,2)")
    [(slice(None, None, None), slice(5, 7, None), slice(5, 7, None))]
    """
    if isinstance(rois_str, str):
        rois_str = [rois_str]
    rois: list = []
    for roi in rois_str:
        if ":" not in roi:
            rois.append(slice(None))
            continue
        start_text, length_text = roi.split(":", 1)
        starts = _parse_ints(start_text, "start coordinates", roi)
        lengths = _parse_ints(length_text, "lengths", roi)
        if len(starts) != len(lengths):
            raise RoiError(
                f"roi={roi!r} has {len(starts)} start values but {len(lengths)} lengths; "
                "give one start and one length per source axis"
            )
        slices = []
        for start, length in zip(starts, lengths, strict=True):
            if length > 0:
                slices.append(slice(start, start + length, None))
            elif start > 0:
                slices.append(slice(start, None, None))
            else:
                slices.append(slice(None))
        rois.append(tuple(slices))
    return rois


def parse_metadata(
    filename: str,
    default_source_axes: str,
    default_data_group: str | int | None = None,
    default_axes: str | None = None,
    default_rois: Iterable[slice] | None = None,
    override_meta: bool = False,
) -> list[dict]:
    """Split ``"file.ext;data_group;SRC:DST;roi;roi..."`` into its parts.

    Parameters
    ----------
    filename : str
        The path, optionally followed by ``;``-separated data group, axes
        (``source`` or ``source:target``) and any number of ROIs.
    default_source_axes : str
        Source axes when the string has none.
    default_data_group : str, int or None
        Data group when the string has none.
    default_axes : str or None
        Target axes when the string has none (``default_source_axes`` if None).
    default_rois : iterable of slice or None
        ROIs when the string has none.
    override_meta : bool
        Whether the defaults win over the values in the string.

    Returns
    -------
    list of dict
        One dict per ROI with keys ``filename``, ``data_group``,
        ``source_axes``, ``axes`` and ``roi``.

    Examples
    --------
    >>> parse_metadata("test_file.zarr;0/0;TCZYX:YXC;(0,0,0,0,0):(1,-1,1,-1,-1)", "YX")[0]["axes"]
    'YXC'
    """
    source_axes = None
    target_axes = None
    data_group: Any = None
    rois_str: list[str] = []
    if default_axes is None:
        default_axes = default_source_axes

    if isinstance(filename, str):
        # Filenames may hold ';', so split after the extension's dot.
        head, _, tail = filename.rpartition(".")
        ext, *meta = tail.split(";")
        fn = f"{head}.{ext}" if head else ext
        if meta:
            data_group = meta[0]
            if len(meta) > 1:
                axes_parts = meta[1].split(":")
                source_axes = axes_parts[0]
                if len(axes_parts) > 1:
                    target_axes = axes_parts[1]
            rois_str = meta[2:]
    else:
        fn = filename

    if not source_axes or (override_meta and default_source_axes is not None):
        source_axes = default_source_axes
    if not data_group or (override_meta and default_data_group is not None):
        data_group = default_data_group
    if not target_axes or (override_meta and default_axes is not None):
        target_axes = default_axes

    rois: list = parse_rois(rois_str)
    if not rois or (override_meta and default_rois is not None):
        rois = default_rois if isinstance(default_rois, list) else [default_rois]

    return [
        {
            "filename": fn,
            "data_group": data_group,
            "source_axes": source_axes,
            "axes": target_axes,
            "roi": roi,
        }
        for roi in rois
    ]


def scale_coords(selection_range: Iterable[slice], scale: float | Iterable[float] = 1.0) -> tuple:
    """Scale a selection (slices, ``(start, stop)`` pairs or indices) by ``scale``.

    Starts round down and stops round up, so the scaled box covers the
    original one.

    Parameters
    ----------
    selection_range : iterable
        Per axis a ``slice``/``range``, a ``(start, stop)`` pair, an int index
        or None (whole axis).
    scale : float or iterable of float
        One factor for all axes or one per axis.

    Returns
    -------
    tuple of slice

    Examples
    --------
    >>> scale_coords([slice(3, 7), 2], 0.5)
    (slice(1, 4, None), slice(1, 2, None))
    """
    factors = scale if isinstance(scale, list | tuple) else repeat(scale)
    out = []
    for ax_range, s in zip(selection_range, factors, strict=False):
        if isinstance(ax_range, slice | range):
            if ax_range.start is None or ax_range.stop is None:
                out.append(slice(None))
            else:
                out.append(
                    slice(int(ax_range.start * s), int(math.ceil(ax_range.stop * s)), ax_range.step)
                )
        elif isinstance(ax_range, tuple | list):
            out.append(slice(int(ax_range[0] * s), int(math.ceil(ax_range[1] * s)), None))
        elif isinstance(ax_range, int):
            out.append(slice(int(ax_range * s), int(math.ceil((ax_range + 1) * s)), None))
        elif ax_range is None:
            out.append(slice(None))
        else:
            raise ValueError(
                f"axis selection {ax_range!r} is not supported by scale_coords; "
                "use a slice, a (start, stop) pair, an int index or None"
            )
    return tuple(out)


def translate2roi(index: dict, roi: tuple, source_axes: str, axes: str) -> tuple:
    """Translate ``index`` (axis letter to slice, relative to a ROI) into
    slices of the whole source array.

    Parameters
    ----------
    index : dict
        Axis letter to slice, in ROI-relative coordinates.
    roi : tuple of slice
        The ROI, one slice per axis of ``source_axes``.
    source_axes : str
        Axes of the source array.
    axes : str
        Axes of the array the index refers to.

    Returns
    -------
    tuple of slice
        One slice per source axis, clipped to the ROI's stop.
    """
    translated = {}
    for a_i, ax in enumerate(source_axes):
        r = roi[a_i]
        if ax in axes and ax in index:
            i = index[ax]
            r_start = r.start if r.start is not None else 0
            i_start = (i.start if i.start is not None else 0) + r_start
            i_stop = (r_start + i.stop) if i.stop is not None else None
            if i_stop is not None and r.stop is not None:
                i_stop = min(i_stop, r.stop)
            elif i_stop is None:
                i_stop = r.stop
            if i_stop is None and i_start == 0:
                i_start = None
            translated[ax] = slice(i_start, i_stop, None)
        else:
            translated[ax] = r
    slices, _ = select_axes(source_axes, translated)
    return slices


def roi_to_selection(
    roi: str | slice | Sequence[slice] | Mapping[str, slice] | None,
    dims: Sequence[str],
    shape: Sequence[int],
    *,
    source: object = "the image",
) -> dict[str, slice]:
    """Normalise any ROI form into ``{dim: slice}`` and check it is inside
    the image.

    Parameters
    ----------
    roi : str, slice, sequence of slice, mapping or None
        zarrdataset ROI string, one slice per dim (source order), or a mapping
        of dim name to slice.
    dims, shape : sequence
        The image's dims and shape.
    source : object
        Named in error messages.

    Returns
    -------
    dict
        Dim to slice with explicit, in-bounds start and stop.

    Raises
    ------
    RoiError
        When the ROI is malformed, has the wrong number of axes or leaves
        the image.
    """
    if roi is None:
        return {}
    if isinstance(roi, str):
        if ":" not in roi and roi.strip():
            raise RoiError(
                f"roi={roi!r} for {source} has no ':' between starts and lengths; write it as "
                "'(start,...):(length,...)' with one value per source axis, e.g. "
                "'(0,0):(512,-1)'"
            )
        parsed = parse_rois(roi)
        if len(parsed) != 1:
            raise RoiError(f"roi={roi!r} for {source} holds {len(parsed)} ROIs; pass one")
        roi = parsed[0]
    if isinstance(roi, slice):
        roi = (roi,) if roi != slice(None) else ()
    if isinstance(roi, Mapping):
        items = {str(k).lower(): v for k, v in roi.items()}
        unknown = sorted(set(items) - set(dims))
        if unknown:
            raise RoiError(
                f"roi for {source} names dims {unknown} that the image does not have "
                f"(dims: {list(dims)}); use those names"
            )
    else:
        roi = tuple(roi)
        if roi and len(roi) != len(dims):
            raise RoiError(
                f"roi for {source} has {len(roi)} axes but the image has {len(dims)} "
                f"({''.join(dims).upper()}); give one start and length per source axis"
            )
        items = dict(zip(dims, roi, strict=False))

    selection = {}
    for dim, sl in items.items():
        size = shape[list(dims).index(dim)]
        if isinstance(sl, Integral):
            sl = slice(int(sl), int(sl) + 1)
        if not isinstance(sl, slice) or not all(
            v is None or isinstance(v, Integral) for v in (sl.start, sl.stop, sl.step)
        ):
            raise RoiError(
                f"roi for {source} gives {sl!r} on dim {dim!r}; give a slice of integers "
                "(slice(start, stop)) or an integer index per dim"
            )
        start = 0 if sl.start is None else int(sl.start)
        stop = size if sl.stop is None else int(sl.stop)
        if sl.step not in (None, 1):
            raise RoiError(f"roi for {source} has a step on dim {dim!r}; ROIs are boxes, drop the step")
        if start < 0 or stop > size or start >= stop:
            raise RoiError(
                f"roi for {source} selects [{start}, {stop}) on dim {dim!r}, outside the "
                f"image's extent [0, {size}); pass a start >= 0 and start + length <= {size}, "
                "or a length of -1 for 'to the end'"
            )
        if (start, stop) != (0, size):
            selection[dim] = slice(start, stop)
    return selection

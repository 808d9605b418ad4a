"""Polygon annotations (GeoJSON, shapely) drawn over an image in its
physical space, one colour per class."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["draw_annotations"]


def draw_annotations(ax: Any, annotations: Any, like: xr.DataArray, *, linewidth: float = 1.2,
                     legend: bool = True, colors: Any = None) -> list[Any]:
    """Draw polygon outlines (holes included) in ``like``'s physical
    coordinates, coloured by class.

    Parameters
    ----------
    ax : matplotlib Axes
    annotations : Annotations or any source it accepts
        A GeoJSON path or object, shapely geometries...
        (:class:`zarrdask.Annotations`; its ``space`` applies).
    like : xarray.DataArray
        The image (any pyramid level: polygons in level-0 pixels are placed
        through its level-0 origin and pixel size).
    linewidth : float
    legend : bool
        Add a legend of the class names.
    colors : mapping of str to colour, optional
        Colour per class name (default: matplotlib's ``tab10`` in class-map
        order).

    Returns
    -------
    list
        The matplotlib line artists, one per ring.
    """
    from matplotlib.lines import Line2D

    from ..masks.annotations import Annotations, _level0, _polygons

    ann = annotations if isinstance(annotations, Annotations) else Annotations(annotations)
    if ann.space == "pixel":
        transform = _level0(like)
    else:
        transform = {"y": (0.0, 1.0), "x": (0.0, 1.0)}
    oy, sy = transform["y"]
    ox, sx = transform["x"]
    palette = dict(colors or {})
    from matplotlib import colormaps

    cycle = colormaps["tab10"]
    for i, name in enumerate(sorted(ann.classes, key=lambda n: ann.classes[n])):
        palette.setdefault(name, cycle(i % 10))
    artists = []
    for geom, name in ann.shapes:
        for polygon in _polygons(geom):
            for ring in (polygon.exterior, *polygon.interiors):
                xy = np.asarray(ring.coords, dtype=float)
                artists.extend(ax.plot(ox + xy[:, 0] * sx, oy + xy[:, 1] * sy,
                                       color=palette[name], linewidth=linewidth))
    if legend and ann.shapes:
        used = [n for n in palette if any(name == n for _, name in ann.shapes)]
        ax.legend([Line2D([0], [0], color=palette[n], linewidth=linewidth) for n in used], used,
                  fontsize=6, loc="upper right")
    return artists

"""Image, mask, patch-grid, annotation and prediction overlays in physical coordinates.

Every layer is drawn with its own pixel-edge extent, so layers at different
resolutions (a level-3 thumbnail, a 1/16 mask, a level-0 patch grid, a
per-patch heat map) line up exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["pixel_extent", "thumbnail", "display_pixels", "draw_mask", "draw_patches",
           "patch_boxes", "overlay", "CONTOUR_COLOR"]

CONTOUR_COLOR = "#00ffff"  # mask contours: pure cyan (no colormap used for boxes yields it)


def _step(coord: np.ndarray, arr: xr.DataArray, dim: str) -> float:
    scale = arr.coords[dim].attrs.get("scale")  # zarrdask puts the pixel size on the coordinate
    if scale is None:
        scale = float(coord[1] - coord[0]) if len(coord) > 1 else 1.0
    return float(scale)


def pixel_extent(arr: xr.DataArray) -> tuple[float, float, float, float]:
    """``(left, right, bottom, top)`` for ``imshow(..., origin="upper")``:
    the outer pixel *edges* ``coord[0]`` to ``coord[-1] + scale`` on x and y
    (pixel indices when the array has no coordinates)."""
    edges = {}
    for d in ("y", "x"):
        if d in arr.coords:
            c = np.asarray(arr.coords[d].values, dtype=float)
            edges[d] = (c[0], c[-1] + _step(c, arr, d))
        else:
            edges[d] = (0.0, float(arr.sizes[d]))
    return edges["x"][0], edges["x"][1], edges["y"][1], edges["y"][0]


def thumbnail(source: Any, *, max_side: int = 1024, storage_options: Any = None) -> xr.DataArray:
    """The finest pyramid level whose longest side is at most ``max_side``
    (the coarsest level when none is), loaded into memory.

    Parameters
    ----------
    source : path/URL, DataArray or DataTree
    max_side : int
    storage_options : mapping, optional
    """
    from ..io import open_pyramid

    if isinstance(source, xr.DataArray):
        levels = [source]
    else:
        tree = source if isinstance(source, xr.DataTree) else open_pyramid(
            source, storage_options=storage_options)
        levels = [tree[k]["image"] for k in tree.children]
    pick = levels[-1]
    for level in levels:
        if max(level.sizes.get("y", 1), level.sizes.get("x", 1)) <= max_side:
            pick = level
            break
    for d in pick.dims:
        if d not in ("y", "x", "c"):
            pick = pick.isel({d: pick.sizes[d] // 2})
    return pick.load()


def display_pixels(arr: xr.DataArray) -> np.ndarray:
    """``(y, x)`` or ``(y, x, 3)`` pixels for ``imshow``: RGB kept, one channel
    grey, more than 3 channels the first 3; floats scaled to [0, 1] by their
    1st-99th percentiles (NaN stays NaN)."""
    if "c" in arr.dims:
        arr = arr.transpose("y", "x", "c")
        values = np.asarray(arr.values)
        values = values[..., 0] if values.shape[-1] in (1, 2) else values[..., :3]
    else:
        values = np.asarray(arr.transpose("y", "x").values)
    if values.dtype == np.uint8 or values.dtype == bool:
        return values
    values = values.astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size:
        lo, hi = np.percentile(finite, [1, 99])
        values = np.clip((values - lo) / (hi - lo if hi > lo else 1.0), 0, 1)
    return values


def draw_mask(ax: Any, mask: xr.DataArray, *, color: str = CONTOUR_COLOR,
              linewidth: float = 0.72) -> Any:
    """Draw the contour of a boolean mask (its own extent) on ``ax``."""
    values = np.asarray(mask.transpose(..., "y", "x").values, dtype=float)
    while values.ndim > 2:
        values = values[0]
    if values.min() == values.max():
        return None  # all tissue or none: no contour
    return ax.contour(values, levels=[0.5], colors=[color], linewidths=linewidth,
                      origin="upper", extent=pixel_extent(mask), antialiased=False)


_UNIT_SYMBOLS = {"micrometer": "µm", "micron": "µm", "um": "µm", "nanometer": "nm",
                 "millimeter": "mm", "centimeter": "cm", "meter": "m"}


def axis_unit(image: xr.DataArray, dim: str) -> str:
    """The unit of ``image``'s ``dim`` coordinate for an axis label (``µm``),
    ``pixels`` when it has none."""
    coord = image.coords.get(dim)
    unit = coord.attrs.get("units") if coord is not None else None
    return _UNIT_SYMBOLS.get(str(unit).lower(), str(unit)) if unit else "pixels"


def patch_boxes(table: Any, image_id: int) -> tuple[np.ndarray, np.ndarray, Any]:
    """Physical ``(y0, x0)`` top-left edges and ``(h, w)`` sizes of an image's
    patches (unpadded), and the table rows (a DataFrame)."""
    entry = table.images[image_id]
    rows = table.frame[table.frame["image_id"] == image_id]
    dims = [d for d in ("y", "x")]
    pos = rows[dims].to_numpy(dtype=float)
    origin0 = np.array([float(entry.get("origin0", {}).get(d, 0.0)) for d in dims])
    scale0 = np.array([float(entry.get("scale0", {}).get(d, 1.0)) for d in dims])
    scale = np.array([float(entry.get("scale", {}).get(d, 1.0)) for d in dims])
    patch = np.array([float(table.patch_size.get(d, 1)) for d in dims])
    return origin0 + pos * scale0, np.broadcast_to(patch * scale, pos.shape), rows


def draw_patches(ax: Any, table: Any, image_id: int, *, color_by: str = "coverage",
                 cmap: str = "viridis", linewidth: float = 0.72) -> Any:
    """Draw the kept patches of ``image_id`` as boxes coloured by a table
    column (``coverage``, a label column...). Returns the collection."""
    from matplotlib.collections import PatchCollection
    from matplotlib.patches import Rectangle

    tops, sizes, rows = patch_boxes(table, image_id)
    boxes = [Rectangle((x, y), w, h) for (y, x), (h, w) in zip(tops, sizes, strict=True)]
    values = rows[color_by].to_numpy(dtype=float) if color_by in rows else np.ones(len(rows))
    lo, hi = (0.0, 1.0) if color_by == "coverage" else (np.nanmin(values, initial=0),
                                                         np.nanmax(values, initial=1))
    collection = PatchCollection(boxes, cmap=cmap, facecolor="none", linewidths=linewidth,
                                 antialiased=False)
    collection.set_array(values)
    collection.set_clim(lo, hi if hi > lo else lo + 1)
    collection.set_facecolor("none")
    ax.add_collection(collection)
    collection.set_edgecolor(collection.get_cmap()(collection.norm(values)))
    return collection


def _level0_image(image: Any) -> xr.DataArray:
    """The lazily opened full-resolution image (its level-0 pixel size
    places annotations given in level-0 pixels)."""
    if isinstance(image, xr.DataArray):
        return image
    if isinstance(image, xr.DataTree):
        return image[next(iter(image.children))]["image"]
    from ..io import open_image

    return open_image(image)


def overlay(image: Any, *, mask: xr.DataArray | None = None, table: Any = None, image_id: int = 0,
            annotations: Any = None, prediction: xr.DataArray | None = None, channel: int = 0, alpha: float = 0.5,
            color_by: str = "coverage", ax: Any = None, max_side: int = 1024,
            title: str | None = None, figsize: Sequence[float] = (6, 6)) -> Any:
    """Image (thumbnail), mask contour, patch boxes and a prediction, in the
    image's physical space.

    Parameters
    ----------
    image : path/URL, DataArray or DataTree
        A pyramid is shown at its level nearest ``max_side`` (see :func:`thumbnail`).
    mask : DataArray, optional
        Boolean mask at any resolution (e.g. :func:`zarrdask.tissue_mask`).
    table : PatchTable, optional
        Kept patches of ``image_id`` are drawn, coloured by ``color_by``.
    annotations : Annotations, GeoJSON path/object or shapely geometries, optional
        Polygon outlines, one colour per class (see
        :func:`zarrdask.plot.annotations.draw_annotations`).
    prediction : DataArray, optional
        E.g. ``zarrdask.open_image(writer.outputs[i])``; channel ``channel``
        is drawn with ``alpha`` over the image (NaN transparent).
    ax : matplotlib Axes, optional
        Drawn into; default a new ``matplotlib.figure.Figure``.

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    thumb = thumbnail(image, max_side=max_side)
    if ax is None:
        fig = Figure(figsize=tuple(figsize))
        ax = fig.add_subplot()
    else:
        fig = ax.figure
    pixels = display_pixels(thumb)
    ax.imshow(pixels, extent=pixel_extent(thumb), origin="upper",
              cmap=None if pixels.ndim == 3 else "gray", interpolation="nearest")
    if prediction is not None:
        pred = prediction.isel(c=channel) if "c" in prediction.dims else prediction
        ax.imshow(np.asarray(pred.transpose("y", "x").values, dtype=float),
                  extent=pixel_extent(pred), origin="upper", cmap="magma", alpha=alpha,
                  interpolation="nearest")
    if mask is not None:
        draw_mask(ax, mask)
    if table is not None:
        draw_patches(ax, table, image_id, color_by=color_by)
    if annotations is not None:
        from .annotations import draw_annotations

        draw_annotations(ax, annotations, _level0_image(image))
    left, right, bottom, top = pixel_extent(thumb)
    ax.set_xlim(left, right)
    ax.set_ylim(bottom, top)
    ax.set_xlabel(f"x ({axis_unit(thumb, 'x')})", fontsize=8)
    ax.set_ylabel(f"y ({axis_unit(thumb, 'y')})", fontsize=8)
    if title:
        ax.set_title(title, fontsize=8)
    return fig

"""``zarrdask show``: thumbnails with the tissue-mask contour and the kept
patches, one PNG per slide or a contact sheet of many."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import TableError

__all__ = ["show", "match_image_ids"]


def _norm(path: Any) -> str:
    text = str(path).rstrip("/")
    return os.path.abspath(text) if "://" not in text else text


def match_image_ids(table: Any, sources: Sequence[str]) -> list[int | None]:
    """The table's ``image_id`` of each source (by path; a one-image table
    matches a single source), or None for a source the table does not list."""
    paths = {}
    for i, entry in enumerate(table.images):
        src = (entry.get("open") or {}).get("source") or entry.get("name")
        if src is not None:
            paths.setdefault(_norm(src), i)
    ids = [paths.get(_norm(s)) for s in sources]
    if len(sources) == 1 and ids[0] is None and len(table.images) == 1:
        ids = [0]
    return ids


def _stem(source: str) -> str:
    name = os.path.basename(str(source).rstrip("/"))
    for suffix in (".ome.zarr", ".zarr", ".ome.tiff", ".ome.tif", ".tiff", ".tif", ".png"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name or "image"


def _mask_of(mask: Any, source: str, storage_options: Any) -> Any:
    if mask is None or mask == "none":
        return None
    if isinstance(mask, str) and mask == "tissue":
        from ..masks import tissue_mask

        return tissue_mask(source, storage_options=storage_options).load()
    from ..io import open_image

    return open_image(mask, storage_options=storage_options).load() if isinstance(mask, str) \
        else mask


def _draw_one(ax: Any, source: str, *, table: Any, image_id: int | None, mask: Any,
              color_by: str, max_side: int, storage_options: Any, title: str | None) -> None:
    from .overlay import overlay, thumbnail

    thumb = thumbnail(source, max_side=max_side, storage_options=storage_options)
    overlay(thumb, mask=_mask_of(mask, source, storage_options),
            table=table if image_id is not None else None, image_id=image_id or 0,
            color_by=color_by, ax=ax, title=title)


def show(sources: str | Sequence[str], *, table: Any = None, mask: Any = None,
         out: str | os.PathLike = "qc.png", max_side: int = 1024, color_by: str = "coverage",
         storage_options: Mapping[str, Any] | None = None, dpi: int = 100) -> list[str]:
    """Quality-control pictures of slides: thumbnail, mask contour, kept patches.

    Parameters
    ----------
    sources : path/URL or list of them
    table : PatchTable or path, optional
        Its kept patches are drawn as boxes coloured by ``color_by``
        (``coverage`` on a fixed 0-1 scale, or any numeric column).
    mask : None, "tissue", path or DataArray
        ``"tissue"`` computes :func:`zarrdask.tissue_mask` of each slide.
    out : str or path
        A ``.png`` file: for one slide the thumbnail at 1 image pixel per PNG
        pixel (boxes and contours 1 pixel wide); for several, a contact
        sheet. Otherwise a folder receiving ``<slide>.png`` per slide.
    max_side : int
        Thumbnails use the finest pyramid level at most this large.
    color_by : str
    storage_options : mapping, optional
    dpi : int

    Returns
    -------
    list of str
        The PNG files written.
    """
    from matplotlib.figure import Figure

    from ..table import PatchTable, read_table
    from .overlay import thumbnail

    sources = [sources] if isinstance(sources, str | os.PathLike) else list(sources)
    sources = [os.fspath(s) for s in sources]
    if table is not None and not isinstance(table, PatchTable):
        table = read_table(table)
    ids = match_image_ids(table, sources) if table is not None else [None] * len(sources)
    if table is not None and all(i is None for i in ids):
        raise TableError(
            f"the table lists none of {sources} (it lists "
            f"{[(e.get('open') or {}).get('source') for e in table.images][:5]}); pass the "
            "sources the table was built from")
    out = os.fspath(out)
    kwargs = {"table": table, "mask": mask, "color_by": color_by, "max_side": max_side,
              "storage_options": storage_options}
    written = []
    if out.lower().endswith(".png") and len(sources) > 1:
        cols = math.ceil(math.sqrt(len(sources)))
        rows = math.ceil(len(sources) / cols)
        fig = Figure(figsize=(3.2 * cols, 3.4 * rows))
        for k, (source, image_id) in enumerate(zip(sources, ids, strict=True)):
            ax = fig.add_subplot(rows, cols, k + 1)
            n = "" if table is None or image_id is None else \
                f" ({int((table.frame['image_id'] == image_id).sum())} patches)"
            _draw_one(ax, source, image_id=image_id, title=_stem(source) + n, **kwargs)
            ax.set_xticks([])
            ax.set_yticks([])
        fig.tight_layout()
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        fig.savefig(out, dpi=dpi)
        return [out]
    targets = [out] if out.lower().endswith(".png") else [
        os.path.join(out, f"{_stem(s)}.png") for s in sources]
    for source, image_id, target in zip(sources, ids, targets, strict=True):
        thumb = thumbnail(source, max_side=max_side, storage_options=storage_options)
        h, w = thumb.sizes["y"], thumb.sizes["x"]
        fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
        ax = fig.add_axes((0, 0, 1, 1))
        ax.set_axis_off()
        _draw_one(ax, source, image_id=image_id, title=None, **kwargs)
        os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
        fig.savefig(target, dpi=dpi)
        written.append(target)
    return written

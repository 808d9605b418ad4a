"""Which labels file goes with which image, for ``zarrdask grid --labels``.

Several slides usually come with one annotation file each (a QuPath GeoJSON
export per slide). ``--labels`` takes either

* one value per source, repeated in the order of the sources
  (``--labels a.geojson --labels b.geojson``; ``none`` for a slide without
  labels), or
* one pattern with ``{stem}`` (the source's file name without its format
  suffix: ``slide_001`` for ``slide_001.svs`` or ``slide_001.ome.tif``) or
  ``{name}`` (the whole file name), e.g. ``annotations/{stem}.geojson``.

A single value without a pattern is accepted for a single source only: one
annotation file for several slides is almost always a mistake.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from ..errors import OptionError
from ..io.location import protocol_of

__all__ = ["labels_for_sources", "source_stem"]


def source_stem(source: str) -> str:
    """The file name of ``source`` without its format suffix (and without
    ``.ome`` before ``.tif``/``.zarr``)."""
    base = os.path.basename(str(source).rstrip("/").rsplit("/", 1)[-1])
    stem, dot, _ = base.rpartition(".")
    stem = stem if dot else base
    return stem[:-4] if stem.lower().endswith(".ome") else stem


def _check_exists(path: str, source: str) -> str:
    if protocol_of(path) == "file" and not os.path.exists(os.path.expanduser(path)):
        raise OptionError(f"argument --labels: {path} (labels of {source}) does not exist; "
                          "pass an existing file, or 'none' for a source without labels")
    return path


def labels_for_sources(values: Sequence[str] | None, sources: Sequence[str]
                       ) -> list[str | None] | None:
    """The labels source of each image.

    Parameters
    ----------
    values : sequence of str or None
        The ``--labels`` values, in the order given.
    sources : sequence of str
        The image sources, in order.

    Returns
    -------
    list or None
        One path/URL (or None) per source; None when no ``--labels``.

    Raises
    ------
    OptionError
        For a count that matches neither one per source nor a pattern, a
        pattern with an unknown field, or a local file that does not exist.
    """
    if not values:
        return None
    values = list(values)
    if len(values) == 1 and ("{" in values[0]):
        pattern = values[0]
        out = []
        for source in sources:
            try:
                path = pattern.format(stem=source_stem(source),
                                      name=os.path.basename(str(source).rstrip("/")))
            except (KeyError, IndexError, ValueError) as exc:
                raise OptionError(
                    f"argument --labels: the pattern {pattern!r} has an unknown field ({exc}); "
                    "use {stem} (file name without suffix) or {name} (file name)"
                ) from None
            out.append(_check_exists(path, source))
        return out
    if len(values) != len(sources):
        raise OptionError(
            f"argument --labels: {len(values)} value(s) for {len(sources)} source(s); repeat "
            "--labels once per source in the same order ('none' for a source without labels), "
            "or pass one pattern such as 'annotations/{stem}.geojson'"
        )
    return [None if v.lower() == "none" else _check_exists(v, s)
            for v, s in zip(values, sources, strict=True)]

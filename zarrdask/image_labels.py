"""Slide-level labels joined onto a coordinate table.

A pathology cohort usually comes with a small table of one row per slide
(diagnosis, grade, split, patient id...). :func:`join_image_labels` copies
those values onto every patch row of their slide, so that
``PatchDataset(table, columns=["diagnosis", "split"])`` yields them with
each patch.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import pandas as pd

from .errors import TableError
from .grid.label_files import source_stem
from .table import PatchTable, absolute_location

__all__ = ["join_image_labels", "image_keys"]

_KEYS = ("source", "stem", "name", "image_id")


def image_keys(table: PatchTable, on: str) -> list[Any]:
    """The key of each image of ``table`` that :func:`join_image_labels`
    matches on.

    Parameters
    ----------
    table : PatchTable
    on : {"source", "stem", "name", "image_id"}
        ``"source"``: the path or URL the image was opened from (local paths
        absolute); ``"stem"``: its file name without the format suffix
        (``"slide_001"`` for ``/data/slide_001.svs`` or
        ``slide_001.ome.tif``); ``"name"``: the image's name in the table
        metadata; ``"image_id"``: its index.
    """
    if on not in _KEYS:
        raise TableError(f"on={on!r} is unknown; use one of {', '.join(_KEYS)}")
    keys: list[Any] = []
    for i, entry in enumerate(table.images):
        source = (entry.get("open") or {}).get("source") or (entry.get("array") or {}).get("location")
        if on == "image_id":
            keys.append(i)
        elif on == "name":
            keys.append(str(entry.get("name")))
        elif isinstance(source, str):
            keys.append(_normal(source) if on == "source" else source_stem(source))
        else:
            keys.append(None)  # an in-memory image: only image_id or name reach it
    return keys


def _normal(source: str) -> str:
    return str(absolute_location(os.path.expanduser(source))).rstrip("/")


def _as_frame(labels: Any, on: str, name: str) -> pd.DataFrame:
    if isinstance(labels, pd.DataFrame):
        return labels
    if isinstance(labels, str | os.PathLike):
        path = os.fspath(labels)
        try:
            if path.lower().endswith((".csv", ".tsv")):
                return pd.read_csv(path, sep="\t" if path.lower().endswith(".tsv") else ",")
            return pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise TableError(f"cannot read the images table {path}: {exc}; pass a Parquet or "
                             "CSV file, a DataFrame or a mapping") from exc
    if isinstance(labels, Mapping):
        if all(isinstance(v, Mapping) for v in labels.values()):
            rows = [{on: k, **dict(v)} for k, v in labels.items()]
        else:
            rows = [{on: k, name: v} for k, v in labels.items()]
        return pd.DataFrame(rows)
    raise TableError(f"labels must be a DataFrame, the path of a Parquet/CSV file or a mapping "
                     f"{{key: value}}, not a {type(labels).__name__}")


def join_image_labels(table: PatchTable, labels: Any, *, on: str = "source",
                      name: str = "label", missing: str = "error") -> PatchTable:
    """Add slide-level columns to every row of their image.

    Parameters
    ----------
    table : PatchTable
        A coordinate table (:func:`zarrdask.build_table`).
    labels : pandas.DataFrame, str, path or mapping
        One row per image: a DataFrame (or a Parquet / CSV file) with a key
        column named ``on`` and the columns to add, or a mapping
        ``{key: value}`` (one column named ``name``) or ``{key: {column:
        value}}``. Rows for images the table does not hold are ignored.
    on : {"source", "stem", "name", "image_id"}
        What the keys are (see :func:`image_keys`): the image's path or URL
        (default), its file stem, its name in the table or its index.
    name : str
        The column of a ``{key: value}`` mapping.
    missing : {"error", "drop"}
        An image of the table without a row in ``labels``: raise (default)
        or drop its patches.

    Returns
    -------
    PatchTable
        A new table with the columns added (its :attr:`~PatchTable.hash`
        follows the new rows); ``table`` is left as it is.

    Raises
    ------
    TableError
        For a key column that is missing, a key given twice, a column the
        table already has, or (``missing="error"``) images without a label.
    """
    if missing not in ("error", "drop"):
        raise TableError(f"missing={missing!r} is unknown; use 'error' or 'drop'")
    keys = image_keys(table, on)
    frame = _as_frame(labels, on, name)
    if on not in frame.columns:
        raise TableError(f"the images table has no key column {on!r} (its columns: "
                         f"{list(frame.columns)}); name the key column {on!r} or pass on=...")
    frame = frame.copy()
    if on == "source":
        frame[on] = [_normal(str(k)) for k in frame[on]]
    elif on == "stem":
        frame[on] = [str(k) for k in frame[on]]
    dupes = frame[on][frame[on].duplicated()].tolist()
    if dupes:
        raise TableError(f"the images table lists {dupes[:3]} more than once under {on!r}; "
                         "give one row per image")
    added = [c for c in frame.columns if c != on]
    clash = [c for c in added if c in table.frame.columns]
    if clash:
        raise TableError(f"the table already has the columns {clash}; rename them in the images "
                         "table (or drop them from table.frame first)")
    index = {k: i for i, k in enumerate(frame[on].tolist())}
    found = [index.get(k) for k in keys]
    absent = [i for i, pos in enumerate(found) if pos is None]
    if absent and missing == "error":
        shown = ", ".join(f"{i} ({keys[i] if keys[i] is not None else 'in memory'})"
                          for i in absent[:3])
        raise TableError(
            f"{len(absent)} image(s) of the table have no row in the images table under "
            f"{on!r}: {shown}{' ...' if len(absent) > 3 else ''}; add them, match on another "
            "key (on='stem', 'name' or 'image_id') or pass missing='drop' to drop their patches"
        )
    per_image = frame.iloc[[pos for pos in found if pos is not None]][added]
    per_image.index = [i for i, pos in enumerate(found) if pos is not None]
    rows = table.frame
    keep = rows["image_id"].isin(per_image.index).to_numpy()
    rows = rows[keep] if not keep.all() else rows
    joined = per_image.reindex(rows["image_id"].to_numpy()).reset_index(drop=True)
    out = pd.concat([rows.reset_index(drop=True), joined], axis=1)
    return PatchTable(out, table.meta, sources=table.sources)

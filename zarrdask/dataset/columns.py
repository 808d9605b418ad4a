"""Extra table columns in the samples (``PatchDataset(..., columns=[...])``).

Any column of the coordinate table can ride along with the patches: a
per-patch label (``coverage_tumour``, a class index), a slide-level label
joined onto every row of its image (:func:`zarrdask.join_image_labels`), a
``split`` name. Numeric and boolean columns come out as 0-d tensors per
sample (a ``(batch,)`` tensor once collated); text and categorical columns
as ``str`` (a list of str in a batch). Values are taken out of the frame
once, at construction, so workers index plain arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..errors import DatasetError
from .options import check_names

__all__ = ["RowColumns"]

#: dtypes torch has no tensor type for, and the one they are read as
_WIDENED = {np.dtype(np.uint16): np.int64, np.dtype(np.uint32): np.int64,
            np.dtype(np.uint64): np.int64}


class RowColumns:
    """The chosen columns of a table, as arrays indexed by row.

    Parameters
    ----------
    frame : pandas.DataFrame
        The table's rows.
    columns : sequence of str or None
        Column names to yield with each sample (None or empty: none).
    reserved : sequence of str
        Keys the samples already hold (modalities, ``position``,
        ``image_id``): a column cannot take their place.
    where : str
        The table, for error messages.

    Raises
    ------
    DatasetError
        For a name that is not a column (the message lists the columns), a
        reserved name, a repeated name, or a column with missing values.
    """

    def __init__(self, frame: pd.DataFrame, columns: Sequence[str] | None,
                 reserved: Sequence[str], *, where: str) -> None:
        names = [] if columns is None else check_names("columns", columns, "column",
                                                        "['label', 'split']")
        available = [str(c) for c in frame.columns]
        for name in names:
            if name not in frame.columns:
                raise DatasetError(
                    f"columns asks for {name!r}, which is not a column of {where}; its columns "
                    f"are {available} (join slide-level labels with "
                    "zarrdask.join_image_labels, or add the column to table.frame)"
                )
            if name in reserved:
                raise DatasetError(
                    f"columns asks for {name!r}, which every sample already holds (samples "
                    f"have {list(reserved)}); drop it from columns"
                )
        self.names = names
        self.reserved = list(reserved)
        self.values = [_column_values(frame[name], name, where) for name in names]

    def __len__(self) -> int:
        return len(self.names)

    def sample(self, row: int) -> list[Any]:
        """The values of row ``row``, in :attr:`names` order: tensors for
        numbers and booleans, ``str`` for text."""
        return [str(v[row]) if v.dtype == object else torch.tensor(v[row])
                for v in self.values]


def _column_values(series: pd.Series, name: str, where: str) -> np.ndarray:
    """A column as a numpy array: numbers in a dtype torch has, text as an
    object array of str."""
    missing = series.isna()
    numeric = pd.api.types.is_numeric_dtype(series.dtype) or pd.api.types.is_bool_dtype(series.dtype)
    if numeric and not isinstance(series.dtype, pd.CategoricalDtype):
        if missing.any() and not pd.api.types.is_float_dtype(series.dtype):
            _missing_error(series, missing, name, where)
        if pd.api.types.is_extension_array_dtype(series.dtype):  # nullable Int64, boolean...
            series = series.astype(series.dtype.numpy_dtype)
        values = series.to_numpy()
        values = values.astype(_WIDENED.get(values.dtype, values.dtype), copy=False)
        return np.ascontiguousarray(values)
    if missing.any():
        _missing_error(series, missing, name, where)
    return np.asarray([str(v) for v in series.tolist()], dtype=object)


def _missing_error(series: pd.Series, missing: pd.Series, name: str, where: str) -> None:
    rows = np.flatnonzero(missing.to_numpy())
    raise DatasetError(
        f"column {name!r} of {where} has {len(rows)} missing value(s) (first rows "
        f"{rows[:5].tolist()}), which cannot become a tensor or a string; fill them "
        f"(table.frame[{name!r}] = table.frame[{name!r}].fillna(...)) or drop those rows"
    )

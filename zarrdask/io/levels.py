"""What a reader finds in a source: its resolution levels and their geometry."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .recipe import ArrayRecipe

__all__ = ["Level", "SourceLevels"]


@dataclass
class Level:
    """One stored resolution level.

    Attributes
    ----------
    name : str
        Its key inside the source (zarr path, ``"series/level"`` of a TIFF).
    recipe : ArrayRecipe
        How to open it.
    shape, dtype, chunks
        From the metadata (chunks are the storage chunks or shards).
    dims : tuple of str or None
        Dim names from the metadata, when the source has them.
    scale, translation : dict
        Physical size of one pixel and origin, per spatial dim.
    units : dict
        Unit per spatial dim (``"pixel"`` when the source gives none).
    array : object, optional
        The array opened while probing, reused by the first reader in this
        process so metadata is not read twice.
    """

    name: str
    recipe: ArrayRecipe
    shape: tuple[int, ...]
    dtype: np.dtype
    chunks: tuple[int, ...] | None
    dims: tuple[str, ...] | None = None
    scale: dict[str, float] = field(default_factory=dict)
    translation: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    array: Any = field(default=None, repr=False)


@dataclass
class SourceLevels:
    """All levels of one image in a source, finest first.

    Attributes
    ----------
    reader : str
        ``"zarr"``, ``"tiff"``, ``"pil"`` or ``"memory"``.
    display : str
        The source's name for messages.
    levels : list of Level
    default : int
        The level the ``data_group`` pointed at (0 when it named a pyramid).
    objective_power : float or None
        The objective magnification of level 0 when the file states it
        (20.0 for a "20×" scan).
    associated : list of str
        Names of the associated images of a slide (``"thumbnail"``,
        ``"label"``, ``"macro"``), each openable as ``data_group=name``.
    """

    reader: str
    display: str
    levels: list[Level]
    default: int = 0
    objective_power: float | None = None
    associated: list[str] = field(default_factory=list)

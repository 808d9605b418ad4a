"""``GridOptions``: every parameter that decides the rows of one image's
grid, in one small object; its :meth:`~GridOptions.key` is what per-image
content keys (incremental cohort builds) and table hashes cover."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import GridParameterError

__all__ = ["GridOptions"]

Length = int | str | Sequence[int | str] | Mapping[str, int | str]


@dataclass(frozen=True)
class GridOptions:
    """The grid and mask parameters of :func:`zarrdask.build_table` and
    :func:`zarrdask.build_cohort` (see :func:`zarrdask.build_table` for
    each one).

    Attributes
    ----------
    patch_size, stride, pad : int, str, sequence or mapping
        Patch geometry in pixels of the level read, or in µm (``"128um"``).
    mpp, mask_mpp : float, optional
        Read resolution and tissue-mask resolution (µm per pixel).
    min_area : float
        Mask coverage a patch needs.
    masks : None or "tissue"
        The mask of every image (per-image masks: :func:`zarrdask.build_table`).
    allow_incomplete_patches : bool
    sampler : {"grid", "blue-noise"}
    seed : int
    spatial_axes : str
    allow_overlap : bool
    tissue_options : mapping
        Keywords of :func:`zarrdask.tissue_mask`.
    chunks_per_task : int
        Storage chunks per grid task of :func:`zarrdask.build_table`.
    """

    patch_size: Length
    stride: Length | None = None
    pad: Length | None = None
    mpp: float | None = None
    mask_mpp: float | None = None
    min_area: float = 1
    masks: str | None = None
    allow_incomplete_patches: bool = False
    sampler: str = "grid"
    seed: int = 0
    spatial_axes: str = "ZYX"
    allow_overlap: bool = False
    tissue_options: Mapping[str, Any] = field(default_factory=dict)
    chunks_per_task: int = 16

    def __post_init__(self) -> None:
        if self.sampler not in ("grid", "blue-noise", "bluenoise"):
            raise GridParameterError(
                f"sampler={self.sampler!r} is unknown; use 'grid' or 'blue-noise'")
        if self.masks is not None and self.masks != "tissue":
            raise GridParameterError(
                f"masks={self.masks!r}: a cohort build takes masks=None or 'tissue'; give "
                "per-image masks to zarrdask.build_table")
        object.__setattr__(self, "seed", 0 if self.seed is None else int(self.seed))
        object.__setattr__(self, "tissue_options", dict(self.tissue_options or {}))

    @property
    def blue_noise(self) -> bool:
        return self.sampler != "grid"

    def key(self) -> str:
        """A stable JSON rendering of every option (hashed into content keys)."""
        data = asdict(self)
        data["sampler"] = "blue-noise" if self.blue_noise else "grid"
        data.pop("chunks_per_task")  # task layout, not content
        return json.dumps(data, sort_keys=True, default=repr)

"""Patch grids: pure geometry (:mod:`.geometry`), blue-noise positions
(:mod:`.bluenoise`) and the dask wiring that builds coordinate tables
(:mod:`.build`, imported on demand so this package stays numpy-only)."""

from .bluenoise import blue_noise_starts
from .geometry import (
    GridSpec,
    axis_starts,
    chunk_ids,
    count_positions,
    grid_starts_in_box,
    keep_patches,
    normalize_grid_params,
    order_rows,
    window_coverage,
)

__all__ = [
    "GridSpec",
    "normalize_grid_params",
    "axis_starts",
    "count_positions",
    "grid_starts_in_box",
    "chunk_ids",
    "window_coverage",
    "keep_patches",
    "order_rows",
    "blue_noise_starts",
]

"""The error raised by the prediction writer."""

from __future__ import annotations

from ..errors import ZarrdaskError

__all__ = ["PredictionError"]


class PredictionError(ZarrdaskError, ValueError):
    """Predictions, positions or an output spec that do not fit the table
    the writer was made for (or an existing output of another shape)."""

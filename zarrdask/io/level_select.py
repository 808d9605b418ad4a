"""Choosing a pyramid level by resolution: ``mpp=0.5`` or ``level="20x"``.

The rule (also in docs/readers.md): among the levels that are not coarser
than asked — pixel size at most ``mpp * (1 + MPP_TOLERANCE)``, or
magnification at least ``asked / (1 + MPP_TOLERANCE)`` — the coarsest is
read. Nothing is resampled: when no level matches the asked resolution, the
finer level is read and its real pixel size is what the coordinates say.
Asking for a resolution finer than level 0 (beyond the tolerance) is an
error, never an upsampled image.
"""

from __future__ import annotations

import math
import re
from typing import Any

from ..errors import OptionError
from .levels import SourceLevels

__all__ = ["MPP_TOLERANCE", "micrometers", "level_mpp", "level_magnification",
           "parse_magnification", "select_level"]

#: Relative tolerance when matching a level to an asked resolution: scanners
#: state 0.2527 µm/px for a nominal 0.25, and pyramid levels are rounded.
MPP_TOLERANCE = 0.1

#: Length units (UDUNITS names and OME symbols) in micrometres.
_TO_MICROMETER = {
    "micrometer": 1.0, "micron": 1.0, "µm": 1.0, "μm": 1.0, "um": 1.0,
    "nanometer": 1e-3, "nm": 1e-3, "millimeter": 1e3, "mm": 1e3,
    "centimeter": 1e4, "cm": 1e4, "meter": 1e6, "m": 1e6, "angstrom": 1e-4,
    "picometer": 1e-6, "inch": 25_400.0, "in": 25_400.0,
}

_MAGNIFICATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*[x×]\s*$", re.IGNORECASE)


def micrometers(value: float, unit: str) -> float | None:
    """``value`` in ``unit`` as micrometres, or None for pixels or unknown units."""
    factor = _TO_MICROMETER.get(str(unit).strip().lower()) or _TO_MICROMETER.get(str(unit))
    return None if factor is None else float(value) * factor


def level_mpp(src: SourceLevels, index: int) -> float | None:
    """µm per pixel of a level (the coarser of y and x), or None without a
    physical scale."""
    level = src.levels[index]
    values = []
    for d in ("y", "x"):
        if d in level.scale:
            um = micrometers(level.scale[d], level.units.get(d, "pixel"))
            if um is None:
                return None
            values.append(um)
    return max(values) if values else None


def level_magnification(src: SourceLevels, index: int) -> float | None:
    """Objective magnification of a level: the slide's objective power
    divided by the level's downsampling along x, or None."""
    if not src.objective_power:
        return None
    base, level = src.levels[0], src.levels[index]
    if "x" not in base.scale or "x" not in level.scale or not base.scale["x"]:
        return None
    return float(src.objective_power) * base.scale["x"] / level.scale["x"]


def parse_magnification(text: str) -> float | None:
    """``"20x"``, ``"20X"``, ``"20×"``, ``"2.5x"`` as a number, or None."""
    match = _MAGNIFICATION.match(text) if isinstance(text, str) else None
    return float(match.group(1)) if match else None


def _listing(src: SourceLevels, values: list[float | None], unit: str) -> str:
    return ", ".join(f"{i}: {v:.4g} {unit}" for i, v in enumerate(values) if v is not None)


def select_level(src: SourceLevels, *, mpp: float | None = None,
                 magnification: float | None = None) -> int:
    """The index of the level to read for an asked resolution.

    Parameters
    ----------
    src : SourceLevels
        The levels of the image.
    mpp : float, optional
        Wanted micrometres per pixel.
    magnification : float, optional
        Wanted objective magnification (20.0 for "20x").

    Returns
    -------
    int
        The coarsest level not coarser than asked (within
        :data:`MPP_TOLERANCE`).

    Raises
    ------
    OptionError
        The image has no physical scale (or no objective power), the value
        is not a positive number, or every level is coarser than asked.
    """
    if mpp is not None:
        if isinstance(mpp, bool) or not isinstance(mpp, int | float) or not (
                math.isfinite(mpp) and mpp > 0):
            raise OptionError(f"mpp={mpp!r} for {src.display}: pass a positive number of "
                              "micrometres per pixel, e.g. mpp=0.5")
        values = [level_mpp(src, i) for i in range(len(src.levels))]
        if values[0] is None:
            raise OptionError(
                f"mpp={mpp} asked for, but {src.display} states no physical pixel size "
                "(its scale is in pixels); pass level= (an index) instead, or write the "
                "pixel size into the file (OME PhysicalSizeX, TIFF resolution tags)"
            )
        fits = [i for i, v in enumerate(values) if v is not None
                and v <= mpp * (1 + MPP_TOLERANCE)]
        if not fits:
            raise OptionError(
                f"mpp={mpp} is finer than every level of {src.display} "
                f"({_listing(src, values, 'µm/px')}); zarrdask does not upsample: ask for "
                f"mpp >= {values[0]:.4g}"
            )
        return max(fits, key=lambda i: values[i])
    if magnification is not None:
        values = [level_magnification(src, i) for i in range(len(src.levels))]
        if values[0] is None:
            raise OptionError(
                f"level='{magnification:g}x' asked for, but {src.display} states no "
                "objective power; pass mpp= (when it has a pixel size) or level= (an index)"
            )
        fits = [i for i, v in enumerate(values) if v is not None
                and v >= magnification / (1 + MPP_TOLERANCE)]
        if not fits:
            raise OptionError(
                f"level='{magnification:g}x' is a higher magnification than every level of "
                f"{src.display} ({_listing(src, values, 'x')}); zarrdask does not upsample: "
                f"ask for at most '{values[0]:g}x'"
            )
        return min(fits, key=lambda i: values[i])
    return src.default


def describe_choice(src: SourceLevels, index: int) -> dict[str, Any]:
    """µm/px and magnification of the chosen level (JSON-safe)."""
    return {"mpp": level_mpp(src, index), "magnification": level_magnification(src, index)}

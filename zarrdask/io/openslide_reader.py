"""Slides tifffile cannot read (MRXS, VMS, VMU, SVSLIDE...) through OpenSlide.

Optional: ``pip install zarrdask[openslide]`` (``openslide-python`` with the
``openslide-bin`` wheel). Each OpenSlide level is one lazy dask array of
``(y, x, c)`` RGB ``uint8``, chunked by the level's tile size
(``openslide.level[k].tile-width/height``, else 512); a chunk is one
``read_region`` call. OpenSlide answers premultiplied RGBA; it is composited
over the slide's ``openslide.background-color`` (white when it states none),
so pixels outside the scanned area (alpha 0) are the background colour.

The recipe is ``ArrayRecipe("openslide", path, "<level>")``: like every
reader, the array pickles without an open handle and reopens in the worker.
OpenSlide reads local files only.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import OptionError, SourceNotFoundError, UnsupportedFormatError
from .levels import Level, SourceLevels
from .location import protocol_of
from .recipe import ArrayRecipe, register_opener
from .resolution import MICROMETER

__all__ = ["OPENSLIDE_EXTENSIONS", "discover_openslide", "open_openslide_array",
           "openslide_available"]

#: Extensions opened with OpenSlide by default (tifffile cannot read them).
OPENSLIDE_EXTENSIONS = (".mrxs", ".vms", ".vmu", ".svslide")

_DEFAULT_TILE = 512


def _module() -> Any:
    try:
        import openslide
    except ImportError as exc:  # also a missing shared library
        raise UnsupportedFormatError(
            "reading this slide needs OpenSlide, which is not installed or cannot load "
            f"({exc}); pip install 'zarrdask[openslide]' (openslide-python and openslide-bin)"
        ) from exc
    return openslide


def openslide_available() -> bool:
    """Whether OpenSlide can be imported here."""
    try:
        _module()
    except UnsupportedFormatError:
        return False
    return True


def _open_slide(location: str) -> Any:
    openslide = _module()
    if protocol_of(location) != "file":
        raise OptionError(
            f"{location}: OpenSlide reads local files only; copy the slide to a local disk "
            "(or convert it to OME-Zarr / TIFF for remote reading)"
        )
    try:
        return openslide.OpenSlide(location)
    except FileNotFoundError as exc:
        raise SourceNotFoundError(f"{location} does not exist; check the path") from exc
    except openslide.OpenSlideError as exc:
        raise UnsupportedFormatError(
            f"{location}: OpenSlide cannot read it ({exc}); check the file or its format"
        ) from exc


def _float(props: Mapping[str, str], key: str) -> float | None:
    try:
        value = float(props[key])
    except (KeyError, ValueError):
        return None
    return value if value > 0 else None


def discover_openslide(location: str, *, data_group: str | int | None = None,
                       storage_options: Mapping[str, Any] | None = None) -> SourceLevels:
    """The levels of a slide as OpenSlide sees them.

    Parameters
    ----------
    location : str
        Local path of the slide.
    data_group : str or int, optional
        A level index (the default level); the whole pyramid is listed.
    storage_options : mapping, optional
        Must be empty (OpenSlide reads local files).

    Returns
    -------
    SourceLevels
    """
    if storage_options:
        raise OptionError(f"{location}: OpenSlide reads local files; storage_options are "
                          "not used, leave them out")
    slide = _open_slide(location)
    try:
        props = dict(slide.properties)
        dims_list = list(slide.level_dimensions)
        downsamples = list(slide.level_downsamples)
        associated = sorted(slide.associated_images)
    finally:
        slide.close()
    default = 0
    if data_group not in (None, ""):
        text = str(data_group).strip()
        if not text.isdigit() or int(text) >= len(dims_list):
            raise OptionError(
                f"data_group={data_group!r} for {location} (read with OpenSlide): pass a "
                f"level index 0..{len(dims_list) - 1}"
            )
        default = int(text)
    mpp = {"x": _float(props, "openslide.mpp-x"), "y": _float(props, "openslide.mpp-y")}
    physical = all(mpp.values())
    levels = []
    for k, ((width, height), down) in enumerate(zip(dims_list, downsamples, strict=True)):
        tile = (int(_float(props, f"openslide.level[{k}].tile-height") or _DEFAULT_TILE),
                int(_float(props, f"openslide.level[{k}].tile-width") or _DEFAULT_TILE))
        scale = {d: (mpp[d] if physical else 1.0) * float(down) for d in ("y", "x")}
        levels.append(Level(
            name=str(k), recipe=ArrayRecipe("openslide", location, str(k), {}),
            shape=(int(height), int(width), 3), dtype=np.dtype(np.uint8),
            chunks=(min(tile[0], int(height)), min(tile[1], int(width)), 3),
            dims=("y", "x", "c"), scale=scale, translation={"y": 0.0, "x": 0.0},
            units={d: MICROMETER if physical else "pixel" for d in ("y", "x")},
        ))
    return SourceLevels("openslide", location, levels, default,
                        objective_power=_float(props, "openslide.objective-power"),
                        associated=associated)


class OpenSlideLevelArray:
    """One OpenSlide level as a read-only ``(y, x, c)`` array.

    Parameters
    ----------
    slide : openslide.OpenSlide
        The open slide (closed when this object is collected).
    level : int
    """

    def __init__(self, slide: Any, level: int) -> None:
        self._slide = slide
        self._level = level
        width, height = slide.level_dimensions[level]
        self._down = float(slide.level_downsamples[level])
        self.shape = (int(height), int(width), 3)
        self.dtype = np.dtype(np.uint8)
        self.ndim = 3
        color = slide.properties.get("openslide.background-color", "FFFFFF")
        try:
            self._background = np.array([int(color[i:i + 2], 16) for i in (0, 2, 4)], np.uint8)
        except (ValueError, TypeError):
            self._background = np.full(3, 255, np.uint8)

    def __getitem__(self, key: Any) -> np.ndarray:
        key = key if isinstance(key, tuple) else (key,)
        key = key + (slice(None),) * (3 - len(key))
        ys, xs, cs = (k.indices(n) if isinstance(k, slice) else None
                      for k, n in zip(key, self.shape, strict=True))
        if ys is None or xs is None or ys[2] != 1 or xs[2] != 1:
            raise IndexError("OpenSlide levels are read by contiguous y/x slices")
        height, width = max(0, ys[1] - ys[0]), max(0, xs[1] - xs[0])
        if not height or not width:
            return np.zeros((height, width, 3), np.uint8)[:, :, key[2]]
        # read_region takes the top-left in level-0 pixels and the size at the level
        origin = (int(round(xs[0] * self._down)), int(round(ys[0] * self._down)))
        rgba = np.asarray(self._slide.read_region(origin, self._level, (width, height)))
        # premultiplied RGBA over the background colour
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        out = rgba[..., :3] + self._background.astype(np.float32) * (1 - alpha)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)[:, :, key[2]]

    def __del__(self) -> None:
        try:
            self._slide.close()
        except Exception:
            pass


def open_openslide_array(recipe: ArrayRecipe) -> OpenSlideLevelArray:
    """Open the level ``recipe.key`` of ``recipe.location`` with OpenSlide."""
    return OpenSlideLevelArray(_open_slide(recipe.location), int(recipe.key or 0))


register_opener("openslide", open_openslide_array)

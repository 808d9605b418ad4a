"""Physical pixel size and objective power stated by a TIFF file.

Whole-slide TIFF flavours say how large a pixel is in different places. In
order of trust (the first that answers wins):

1. OME-TIFF: ``PhysicalSizeX/Y/Z`` of the series' ``Pixels`` element (read by
   :mod:`zarrdask.io.tiff_reader`);
2. Aperio SVS: ``MPP`` (µm per pixel) in the ``ImageDescription`` of the
   baseline page, with the objective power in ``AppMag``;
3. Leica SCN: the ``view`` of the image in the SCN XML (its physical size,
   in nanometres, over its size in pixels), with the objective in
   ``scanSettings/objectiveSettings/objective``;
4. Philips TIFF: the first ``DICOM_PIXEL_SPACING`` (millimetres, row then
   column) of the Philips XML;
5. any TIFF (generic pyramidal, NDPI...): the
   ``XResolution``/``YResolution`` tags with ``ResolutionUnit`` centimetre
   or inch. ``ResolutionUnit`` none, a missing tag, and the desktop
   placeholders 72 and 96 dots per inch (which image editors write on any
   picture) give no physical size.

The objective power comes from Aperio ``AppMag``, Hamamatsu NDPI's
``Magnification`` tag, the SCN objective or OME
``Objective/@NominalMagnification``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TiffPhysical", "tiff_physical", "associated_images", "ASSOCIATED_NAMES",
           "MICROMETER"]

MICROMETER = "micrometer"

#: µm per ResolutionUnit (TIFF: 2 inch, 3 centimetre).
_MICROMETERS_PER_UNIT = {2: 25_400.0, 3: 10_000.0}

#: Dots per inch that image editors write on any picture; not a pixel size.
_PLACEHOLDER_DPI = (72.0, 96.0)

#: Series names tifffile gives to the non-pyramid images of a slide.
ASSOCIATED_NAMES = ("thumbnail", "label", "macro", "overview")


@dataclass
class TiffPhysical:
    """What a TIFF says about its level-0 pixel size.

    Attributes
    ----------
    scale : dict
        Pixel size per spatial dim (``"y"``, ``"x"``), in ``units``.
    units : dict
        Unit per dim in the scale (UDUNITS names, e.g. ``"micrometer"``).
    objective_power : float or None
        The objective magnification the file states (20.0 for "20×").
    origin : str or None
        Where the pixel size came from (``"aperio"``, ``"resolution-tags"``).
    """

    scale: dict[str, float] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)
    objective_power: float | None = None
    origin: str | None = None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) and number > 0 else None


def _aperio(tif: Any) -> dict[str, Any]:
    if not getattr(tif, "is_svs", False):
        return {}
    try:
        from tifffile.tifffile import svs_description_metadata

        return svs_description_metadata(tif.pages.first.description)
    except Exception:  # a description tifffile cannot parse states nothing
        return {}


def _tag_resolution(page: Any) -> dict[str, float]:
    """µm per pixel along y and x from the resolution tags, or {}."""
    tags = page.tags
    unit_tag = tags.get("ResolutionUnit")
    unit = int(unit_tag.value) if unit_tag is not None else 2  # TIFF default: inch
    per_unit = _MICROMETERS_PER_UNIT.get(unit)
    out = {}
    for dim, name in (("x", "XResolution"), ("y", "YResolution")):
        tag = tags.get(name)
        if tag is None or per_unit is None:
            return {}
        value = tag.value
        try:
            pixels = value[0] / value[1] if isinstance(value, tuple) else float(value)
        except (TypeError, ZeroDivisionError, IndexError):
            return {}
        if not _positive(pixels):
            return {}
        if unit == 2 and any(math.isclose(pixels, p) for p in _PLACEHOLDER_DPI):
            return {}
        out[dim] = per_unit / pixels
    return out


def _ome_objective(tif: Any) -> float | None:
    xml = tif.ome_metadata if getattr(tif, "is_ome", False) else None
    if not xml:
        return None
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return None
    for el in root.iter():
        if el.tag.rpartition("}")[2] == "Objective":
            power = _positive(el.get("NominalMagnification"))
            if power:
                return power
    return None


def _ndpi_objective(tif: Any) -> float | None:
    if not getattr(tif, "is_ndpi", False):
        return None
    tags = getattr(tif.pages.first, "ndpi_tags", None) or {}
    return _positive(tags.get("Magnification"))


def _xml(text: str | None) -> ET.Element | None:
    try:
        return ET.fromstring(text) if text else None
    except ET.ParseError:
        return None


def _local(el: ET.Element) -> str:
    return el.tag.rpartition("}")[2]


def _scn(tif: Any, series: Any) -> tuple[dict[str, float], float | None]:
    """µm per pixel (y, x) and objective of an SCN series' image, from the
    SCN XML: the view's size (nm) over the pixels' size."""
    if not getattr(tif, "is_scn", False):
        return {}, None
    root = _xml(tif.pages.first.description)
    name = getattr(series, "name", None)
    for image in (root.iter() if root is not None else ()):
        if _local(image) != "image" or image.get("name", "Unknown") != name:
            continue
        parts = {_local(el): el for el in image.iter()}
        pixels, view = parts.get("pixels"), parts.get("view")
        objective = parts.get("objective")
        power = _positive(objective.text) if objective is not None else None
        if pixels is None or view is None:
            return {}, power
        scale = {}
        for dim, attr in (("y", "sizeY"), ("x", "sizeX")):
            nm, px = _positive(view.get(attr)), _positive(pixels.get(attr))
            if not nm or not px:
                return {}, power
            scale[dim] = nm / px / 1000.0
        return scale, power
    return {}, None


def _philips(tif: Any) -> dict[str, float]:
    """µm per pixel (y, x) of a Philips TIFF's level 0 (its first
    ``DICOM_PIXEL_SPACING``, in mm)."""
    if not getattr(tif, "is_philips", False):
        return {}
    root = _xml(tif.philips_metadata)
    for el in (root.iter() if root is not None else ()):
        if el.tag == "Attribute" and el.get("Name") == "DICOM_PIXEL_SPACING" and el.text:
            values = [_positive(v) for v in el.text.replace('"', " ").split()]
            if len(values) == 2 and all(values):
                return {"y": values[0] * 1000.0, "x": values[1] * 1000.0}
            return {}
    return {}


def tiff_physical(tif: Any, series: Any) -> TiffPhysical:
    """Level-0 pixel size and objective power of a TIFF series.

    Parameters
    ----------
    tif : tifffile.TiffFile
        The open file.
    series : tifffile.TiffPageSeries
        The series being opened (its first page is level 0).

    Returns
    -------
    TiffPhysical
        Empty ``scale`` when the file states no usable pixel size. OME
        physical sizes are not read here (see the module docstring).
    """
    aperio = _aperio(tif)
    if (getattr(series, "name", "") or "").strip().lower() in ASSOCIATED_NAMES:
        aperio = {k: v for k, v in aperio.items() if k != "AppMag"}
        power = None
    else:
        power = (_positive(aperio.get("AppMag")) or _ndpi_objective(tif)
                 or _ome_objective(tif))
    mpp = _positive(aperio.get("MPP"))
    if mpp and getattr(series, "kind", "") == "svs" and series.name == "Baseline":
        return TiffPhysical({"y": mpp, "x": mpp}, {"y": MICROMETER, "x": MICROMETER},
                            power, "aperio")
    kind = getattr(series, "kind", "")
    if kind == "scn":
        scale, scn_power = _scn(tif, series)
        power = power or scn_power
        if scale:
            return TiffPhysical(scale, {d: MICROMETER for d in scale}, power, "scn")
    if kind == "philips" and series is tif.series[0]:
        scale = _philips(tif)
        if scale:
            return TiffPhysical(scale, {d: MICROMETER for d in scale}, power, "philips")
    page = series.levels[0].keyframe if hasattr(series.levels[0], "keyframe") else None
    if page is None:
        page = series.pages[0]
    scale = _tag_resolution(page) if page is not None else {}
    if scale:
        return TiffPhysical(scale, {d: MICROMETER for d in scale}, power, "resolution-tags")
    return TiffPhysical(objective_power=power)


def associated_images(tif: Any) -> dict[str, int]:
    """Associated (non-pyramid) images of a slide: name → series index.

    Parameters
    ----------
    tif : tifffile.TiffFile

    Returns
    -------
    dict
        Lower-case names tifffile gives those series (``"thumbnail"``,
        ``"label"``, ``"macro"``), in file order.
    """
    out = {}
    for index, series in enumerate(tif.series):
        name = (series.name or "").strip().lower()
        if index > 0 and name in ASSOCIATED_NAMES and name not in out:
            out[name] = index
    return out

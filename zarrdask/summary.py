"""Summaries of opened images (used by ``zarrdask inspect``): a dict for
``--json`` and the plain-text lines drawn from it."""

from __future__ import annotations

from typing import Any

import xarray as xr

from .io.recipe import open_facts

__all__ = ["pyramid_summary", "describe_pyramid"]


def _chunks(arr: xr.DataArray) -> dict[str, int]:
    chunks = arr.data.chunksize if hasattr(arr.data, "chunksize") else arr.shape
    return {str(d): int(c) for d, c in zip(arr.dims, chunks, strict=True)}


def pyramid_summary(tree: xr.DataTree) -> dict[str, Any]:
    """The facts ``zarrdask inspect`` prints, as JSON-ready values.

    Parameters
    ----------
    tree : xarray.DataTree
        A pyramid from :func:`zarrdask.open_pyramid`.

    Returns
    -------
    dict
        ``source``, ``reader``, ``dims``, ``dtype``, ``objective_power``,
        ``associated_images`` and ``levels``: per level its ``name``,
        ``shape``, ``chunks``, ``scale``, ``units``, ``mpp`` (µm per pixel)
        and ``magnification`` (None when unknown).
    """
    names = tree.attrs.get("levels", list(tree.children))
    first = tree[names[0]]["image"]
    levels = []
    for name in names:
        arr = tree[name]["image"]
        facts = open_facts(arr)
        levels.append({
            "name": str(name),
            "shape": {str(d): int(n) for d, n in zip(arr.dims, arr.shape, strict=True)},
            "chunks": _chunks(arr),
            "scale": {str(d): float(s) for d, s in facts.get("scale", {}).items()},
            "units": {str(d): str(u) for d, u in facts.get("units", {}).items()},
            "mpp": facts.get("mpp"),
            "magnification": facts.get("magnification"),
        })
    power = tree.attrs.get("objective_power")
    return {
        "source": str(tree.attrs.get("source", "?")),
        "reader": str(tree.attrs.get("reader", "?")),
        "dims": [str(d) for d in first.dims],
        "dtype": str(first.dtype),
        "objective_power": float(power) if power else None,
        "associated_images": list(tree.attrs.get("associated_images") or []),
        "levels": levels,
    }


def describe_pyramid(tree: xr.DataTree) -> str:
    """A few lines naming the source, dims, objective power, associated
    images, and per level shape, chunks, physical scale, µm/px and
    magnification."""
    info = pyramid_summary(tree)
    power, associated = info["objective_power"], info["associated_images"]
    lines = [
        f"source : {info['source']}",
        f"reader : {info['reader']}",
        f"dims   : {', '.join(info['dims'])}",
        f"dtype  : {info['dtype']}",
        f"levels : {len(info['levels'])}",
        f"objective power : {power:g}x" if power else "objective power : not stated",
        f"associated images : {', '.join(associated) if associated else 'none'}",
    ]
    for i, lv in enumerate(info["levels"]):
        shape = ", ".join(f"{d}: {n}" for d, n in lv["shape"].items())
        chunks = ", ".join(f"{d}: {n}" for d, n in lv["chunks"].items())
        phys = ", ".join(f"{d}: {s:g} {lv['units'].get(d, '')}".rstrip()
                         for d, s in lv["scale"].items())
        mpp, mag = lv["mpp"], lv["magnification"]
        extra = (f"  {mpp:.4g} µm/px" if mpp else "") + (f"  {mag:.3g}x" if mag else "")
        lines.append(f"  [{i}] {lv['name']:>6}  shape ({shape})  chunks ({chunks})  "
                     f"scale ({phys}){extra}")
    return "\n".join(lines)

"""Plain-text summaries of opened images (used by ``zarrdask inspect``)."""

from __future__ import annotations

import xarray as xr

from .io.recipe import open_facts

__all__ = ["describe_pyramid"]


def _fmt_chunks(arr: xr.DataArray) -> str:
    chunks = arr.data.chunksize if hasattr(arr.data, "chunksize") else arr.shape
    return "(" + ", ".join(f"{d}: {c}" for d, c in zip(arr.dims, chunks, strict=True)) + ")"


def describe_pyramid(tree: xr.DataTree) -> str:
    """A few lines naming the source, dims, objective power, associated
    images, and per level shape, chunks, physical scale, µm/px and
    magnification."""
    names = tree.attrs.get("levels", list(tree.children))
    first = tree[names[0]]["image"]
    lines = [
        f"source : {tree.attrs.get('source', '?')}",
        f"reader : {tree.attrs.get('reader', '?')}",
        f"dims   : {', '.join(map(str, first.dims))}",
        f"dtype  : {first.dtype}",
        f"levels : {len(names)}",
    ]
    power = tree.attrs.get("objective_power")
    lines.append(f"objective power : {power:g}x" if power else "objective power : not stated")
    associated = tree.attrs.get("associated_images") or []
    lines.append(f"associated images : {', '.join(associated) if associated else 'none'}")
    for i, name in enumerate(names):
        arr = tree[name]["image"]
        shape = ", ".join(f"{d}: {n}" for d, n in zip(arr.dims, arr.shape, strict=True))
        facts = open_facts(arr)
        scale = facts.get("scale", {})
        units = facts.get("units", {})
        phys = ", ".join(f"{d}: {s:g} {units.get(d, '')}".rstrip() for d, s in scale.items())
        mpp, mag = facts.get("mpp"), facts.get("magnification")
        extra = (f"  {mpp:.4g} µm/px" if mpp else "") + (f"  {mag:.3g}x" if mag else "")
        lines.append(f"  [{i}] {name:>6}  shape ({shape})  chunks {_fmt_chunks(arr)}  "
                     f"scale ({phys}){extra}")
    return "\n".join(lines)

"""The notebook view of a coordinate table (``PatchTable._repr_html_``):
patch counts per image, patch size, level and pixel size, and a tiny SVG of
each image's patch grid drawn from the table alone (no pixels are read)."""

from __future__ import annotations

import html
from typing import Any

__all__ = ["table_html"]

_MAX_IMAGES = 20  # listed rows
_MAX_SKETCHES = 4  # images with a grid sketch
_MAX_BOXES = 5000  # boxes per sketch (beyond this the sketch is skipped)


def _sketch(table: Any, image_id: int, rows: Any, side: int = 120) -> str:
    from .overlay import patch_boxes

    entry = table.images[image_id]
    shape = entry.get("shape", {})
    scale = entry.get("scale", {})
    origin = entry.get("origin", {})
    h = float(shape.get("y", 1)) * float(scale.get("y", 1.0))
    w = float(shape.get("x", 1)) * float(scale.get("x", 1.0))
    f = side / max(h, w)
    tops, sizes, rows = patch_boxes(table, image_id)
    cov = rows["coverage"].to_numpy(dtype=float)
    oy, ox = float(origin.get("y", 0.0)), float(origin.get("x", 0.0))
    rects = []
    for (y, x), (bh, bw), c in zip(tops, sizes, cov, strict=True):
        g = int(80 + 175 * min(max(c, 0.0), 1.0))
        rects.append(f'<rect x="{(x - ox) * f:.1f}" y="{(y - oy) * f:.1f}" width="{bw * f:.1f}" '
                     f'height="{bh * f:.1f}" fill="none" stroke="rgb(40,{g},120)" '
                     'stroke-width="0.5"/>')
    return (f'<svg width="{w * f:.0f}" height="{h * f:.0f}" style="background:#f4f4f4">'
            + "".join(rects) + "</svg>")


def table_html(table: Any) -> str:
    """HTML summary of a :class:`~zarrdask.PatchTable` for notebooks."""
    grid = table.grid
    dims = table.dims
    esc = html.escape
    patch = "×".join(str(table.patch_size.get(d, "?")) for d in dims)
    stride = "×".join(str((grid.get("stride") or {}).get(d, "?")) for d in dims)
    pad = "×".join(str(table.pad.get(d, 0)) for d in dims)
    frame = table.frame
    counts = frame["image_id"].value_counts().to_dict() if len(frame) else {}
    head = (f"<b>PatchTable</b>: {len(table)} patches of {esc(patch)} px (stride {esc(stride)}, "
            f"pad {esc(pad)}) from {len(table.images)} image(s), dims {esc(str(dims))}, "
            f"sampler {esc(str(table.meta.get('sampler', 'grid')))}, hash "
            f"<code>{esc(str(table.hash)[:12])}</code>")
    lines = ["<tr><th>id</th><th>image</th><th>patches</th><th>mean coverage</th>"
             "<th>level</th><th>pixel</th><th>shape</th><th>grid</th></tr>"]
    for i, entry in enumerate(table.images[:_MAX_IMAGES]):
        n = int(counts.get(i, 0))
        rows = frame[frame["image_id"] == i]
        cov = f"{float(rows['coverage'].mean()):.2f}" if n else "–"
        scale = entry.get("scale", {})
        pixel = " × ".join(f"{float(scale[d]):g}" for d in dims if d in scale) or "?"
        shape = " × ".join(str(entry.get("shape", {}).get(d, "?")) for d in dims)
        sketch = (_sketch(table, i, rows) if n and i < _MAX_SKETCHES and n <= _MAX_BOXES else "")
        lines.append(
            f"<tr><td>{i}</td><td>{esc(str(entry.get('name', '?')))}</td><td>{n}</td>"
            f"<td>{cov}</td><td>{entry.get('level', 0)}</td><td>{esc(pixel)}</td>"
            f"<td>{esc(shape)}</td><td>{sketch}</td></tr>")
    more = (f"<p>… and {len(table.images) - _MAX_IMAGES} more images</p>"
            if len(table.images) > _MAX_IMAGES else "")
    return f'<div class="zarrdask-table"><p>{head}</p><table>{"".join(lines)}</table>{more}</div>'

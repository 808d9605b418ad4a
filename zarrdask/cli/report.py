"""What ``zarrdask grid`` and ``zarrdask demo`` report about a built table:
a JSON-ready summary (``--json``) and the plain-text table drawn from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["table_summary", "format_summary"]


def _mean(values) -> float | None:
    return round(float(values.mean()), 4) if len(values) else None


def table_summary(table: Any, *, out: str | None = None,
                  timings: Mapping[str, float] | None = None) -> dict[str, Any]:
    """Per-image patch counts, mean coverage, level and µm/px of a table.

    Parameters
    ----------
    table : PatchTable
        The built table.
    out : str, optional
        Where it was written.
    timings : mapping, optional
        Seconds per stage (``cluster``, ``build``, ``write``, ``total``).

    Returns
    -------
    dict
        ``out``, ``patches``, ``mean_coverage``, ``patch_size``, ``stride``,
        ``hash``, ``images`` (per image: ``image_id``, ``source``, ``level``,
        ``mpp``, ``shape``, ``patches``, ``mean_coverage``), ``skipped`` and
        ``timings_s``.
    """
    frame = table.frame
    groups = frame.groupby("image_id")["coverage"] if len(frame) else None
    images = []
    for entry in table.images:
        image_id = int(entry["image_id"])
        cov = (groups.get_group(image_id) if groups is not None
               and image_id in groups.groups else frame["coverage"].iloc[:0])
        images.append({
            "image_id": image_id,
            "source": str(entry.get("open", {}).get("source") or entry.get("name")),
            "level": entry.get("level"),
            "mpp": entry.get("mpp"),
            "shape": dict(entry.get("shape", {})),
            "patches": int(len(cov)),
            "mean_coverage": _mean(cov),
        })
    grid = table.grid
    return {
        "out": out,
        "patches": int(len(frame)),
        "mean_coverage": _mean(frame["coverage"]),
        "patch_size": dict(grid.get("patch", {})),
        "stride": dict(grid.get("stride", {})),
        "hash": table.hash,
        "images": images,
        "skipped": list(table.meta.get("skipped", [])),
        "timings_s": {k: round(float(v), 3) for k, v in (timings or {}).items()},
    }


def _fmt(value: Any, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def format_summary(summary: Mapping[str, Any]) -> str:
    """The summary as an aligned text table with a total line, the skipped
    images and the timings."""
    rows = [("image", "source", "level", "µm/px", "patches", "mean coverage")]
    for im in summary["images"]:
        rows.append((str(im["image_id"]), im["source"], _fmt(im["level"], "d"),
                     _fmt(im["mpp"], ".4g"), str(im["patches"]),
                     _fmt(im["mean_coverage"], ".3f")))
    rows.append(("total", "", "", "", str(summary["patches"]),
                 _fmt(summary["mean_coverage"], ".3f")))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 1 else c.rjust(w)
                       for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
             for r in rows]
    for skip in summary["skipped"]:
        lines.append(f"skipped image {skip['index']} ({skip['source']}): {skip['error']}")
    timings = summary["timings_s"]
    if timings:
        parts = ", ".join(f"{k} {v:.1f} s" for k, v in timings.items() if k != "total")
        lines.append(f"time {timings.get('total', 0):.1f} s ({parts})")
    if summary.get("out"):
        lines.append(f"written to {summary['out']}")
    return "\n".join(lines)

"""Shared pieces of the benchmarks: data, subprocess measurement, reporting."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
DATA = HERE / "data"
RESULTS = HERE / "results"


def ensure_slide(size: int, *, chunk: int = 512, seed: int = 0, levels: int | None = None,
                 name: str | None = None) -> str:
    """Path of a synthetic OME-NGFF 0.4 slide (zarr v2, Blosc-zstd, so that
    zarrdataset 0.2.2 reads it too), written once."""
    from zarrdask.datasets import write_synthetic_slide

    DATA.mkdir(parents=True, exist_ok=True)
    path = DATA / (name or f"slide_{size}_{chunk}_{seed}_{levels or 'all'}_v2.zarr")
    marker = path / ".complete"
    if not marker.exists():
        t0 = time.perf_counter()
        write_synthetic_slide(path, size=size, chunk=chunk, seed=seed, levels=levels,
                              compressor="zstd", zarr_format=2)
        marker.write_text("ok")
        print(f"  wrote {path} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    return str(path)


def run_measured(code: str, *, python: str = sys.executable, env: dict | None = None,
                 timeout: float = 3600) -> dict:
    """Run ``code`` in a fresh interpreter; it must print one JSON line last.

    The child's peak resident memory (``ru_maxrss`` of the child and its own
    children) is added as ``peak_rss_mb``.
    """
    wrapper = (
        "import json, resource, sys\n"
        + code
        + "\nself_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "RESULT['peak_rss_mb'] = max(self_kb, kids_kb) / 1024\n"
        "print(json.dumps(RESULT))\n"
    )
    proc = subprocess.run([python, "-c", wrapper], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"benchmark child failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def save(name: str, result: dict) -> Path:
    """Write ``result`` to ``benchmarks/results/<name>.json``."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(result, indent=2))
    return path


def table(rows: list[tuple[str, str]]) -> str:
    """Two-column plain-text table."""
    width = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{width}}  {v}" for k, v in rows)

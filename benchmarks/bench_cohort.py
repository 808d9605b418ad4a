"""Cohort scale (issue 13): ``build_cohort`` over growing synthetic cohorts
on a 2-worker LocalCluster, incremental rebuilds, reading the table back,
and ``PatchDataset`` memory over partitioned tables of growing row counts.

Usage: ``python benchmarks/bench_cohort.py [--quick] [--sizes 1000 10000 100000]
[--rows 1000000 50000000] [--legacy-max 2000] [--builds-only]``.

Synthetic cohort: a few distinct tiny slides (256², one level) written once;
the cohort's slides are folders of hard links to their files, so a cohort
of N slides costs N folders of links, not N copies.

Measured per cohort size N, each in a fresh process: the client's CPU time
and peak RSS (the client process only, not the workers) and the wall time of
``build_cohort``; the incremental rebuild after adding 1 % new slides; the
time to open the table (manifest + images table, entries not parsed), to
get a first batch from ``PatchDataset`` (and that process's peak RSS), and
to parse every image's entry (``FolderTable.meta``, what ``read_table``
needs); and, for N <= ``--legacy-max``, the same build with
``build_table`` (client-side opens) for comparison. Then the main-process
peak RSS of ``PatchDataset`` reading 2,000 samples of partitioned tables of
``--rows`` rows. Prints one JSON line per measurement, then a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import DATA, run_measured, save  # noqa: E402

ROOT = DATA / "cohort"
DISTINCT = 4


def base_slides() -> list[Path]:
    """The distinct tiny slides the cohort links to (written once)."""
    from zarrdask.datasets import write_synthetic_slide

    out = []
    for i in range(DISTINCT):
        path = ROOT / "base" / f"base{i}.zarr"
        if not (path / ".complete").exists():
            shutil.rmtree(path, ignore_errors=True)
            write_synthetic_slide(path, size=256, chunk=128, levels=1, seed=i, zarr_format=2)
            (path / ".complete").write_text("ok")
        out.append(path)
    return out


def link_slide(base: Path, target: Path) -> None:
    """A slide folder whose files are hard links to ``base``'s."""
    for folder, _dirs, files in os.walk(base):
        rel = Path(folder).relative_to(base)
        (target / rel).mkdir(parents=True, exist_ok=True)
        for name in files:
            if name != ".complete":
                os.link(Path(folder) / name, target / rel / name)


def make_cohort(n: int) -> Path:
    """A folder of ``n`` linked slides (``slide-000000.zarr`` ...), made once."""
    bases = base_slides()
    folder = ROOT / f"n{n}"
    done = folder / ".complete"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        slides = folder / "slides"
        slides.mkdir(parents=True)
        for i in range(n):
            link_slide(bases[i % DISTINCT], slides / f"slide-{i:06d}.zarr")
        done.write_text("ok")
    return folder


_CLIENT = """
import resource, time, sys, os
sys.path.insert(0, {root!r})
import zarrdask as zd
from distributed import Client, LocalCluster

def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None)
client = Client(cluster)
client.run(lambda: __import__("zarrdask.grid.cohort_task"))  # warm workers: imports
RESULT = {{}}
{body}
RESULT['client_peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
client.close(); cluster.close()
"""

_BUILD = """
slides = {slides!r}
out = {out!r}
c0, t0 = cpu(), time.perf_counter()
table = zd.build_cohort(slides, out=out, patch_size=64, masks="tissue", client=client,
                        images_per_task={per_task!r})
RESULT['build_s'] = time.perf_counter() - t0
RESULT['client_cpu_s'] = cpu() - c0
RESULT['rows'] = len(table)
RESULT['build'] = table.manifest['meta']['build']
"""

_LEGACY = """
import glob
slides = sorted(glob.glob({slides!r} + '/*.zarr'))
c0, t0 = cpu(), time.perf_counter()
table = zd.build_table(slides, patch_size=64, masks="tissue", client=client)
RESULT['build_s'] = time.perf_counter() - t0
RESULT['client_cpu_s'] = cpu() - c0
RESULT['rows'] = len(table)
"""

_READ = """
import resource, time, sys
sys.path.insert(0, {root!r})
from zarrdask.table_layout import FolderTable
import zarrdask as zd
import torch
RESULT = {{}}
t0 = time.perf_counter()
t = FolderTable({out!r}); images = t.images()
RESULT['open_s'] = time.perf_counter() - t0
RESULT['images'] = len(images)
del images
t0 = time.perf_counter()
ds = zd.PatchDataset({out!r}, shuffle=True)
batch = next(iter(torch.utils.data.DataLoader(ds, batch_size=64)))
RESULT['first_batch_s'] = time.perf_counter() - t0
RESULT['first_batch_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
t0 = time.perf_counter()
t.meta
RESULT['parse_every_entry_s'] = time.perf_counter() - t0
t0 = time.perf_counter()
zd.read_table({out!r})
RESULT['read_table_s'] = time.perf_counter() - t0
"""

_DATASET_RSS = """
import resource, sys
sys.path.insert(0, {root!r})
import zarrdask as zd
RESULT = {{}}
ds = zd.PatchDataset({path!r}, shuffle=True, chunk_buffer=4)
it = iter(ds)
for _ in range(2000):
    next(it)
RESULT['len'] = len(ds)
RESULT['main_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
import torch
loader = torch.utils.data.DataLoader(ds, batch_size=50, num_workers=2)
for i, _ in enumerate(loader):
    if i == 40:
        break
del loader  # workers exit: their peak shows in RUSAGE_CHILDREN
RESULT['worker_peak_rss_mb'] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
"""


def emit(record: dict) -> dict:
    print(json.dumps(record), flush=True)
    return record


def bench_builds(sizes: list[int], per_task: int, legacy_max: int) -> list[dict]:
    root = str(Path(__file__).resolve().parent.parent)
    out = []
    for n in sizes:
        folder = make_cohort(n)
        table = folder / "table.parquet"
        shutil.rmtree(table, ignore_errors=True)
        shutil.rmtree(folder / "slides-new", ignore_errors=True)
        body = _BUILD.format(slides=str(folder / "slides"), out=str(table), per_task=per_task)
        full = run_measured(_CLIENT.format(root=root, body=body))
        out.append(emit({"measure": "build_cohort", "n": n, **full}))
        # 1 % new slides, linked beside the others, then the rebuild
        extra = max(1, n // 100)
        bases = base_slides()
        for i in range(extra):
            link_slide(bases[i % DISTINCT], folder / "slides" / f"slide-new-{i:06d}.zarr")
        try:
            inc = run_measured(_CLIENT.format(root=root, body=body))
            out.append(emit({"measure": "incremental", "n": n, "added": extra, **inc,
                             "ratio": inc["build_s"] / full["build_s"]}))
            read = run_measured(_READ.format(root=root, out=str(table)))
            out.append(emit({"measure": "read_back", "n": n, **read}))
        finally:
            for i in range(extra):
                shutil.rmtree(folder / "slides" / f"slide-new-{i:06d}.zarr", ignore_errors=True)
        if n <= legacy_max:
            legacy = run_measured(_CLIENT.format(root=root, body=_LEGACY.format(
                slides=str(folder / "slides"))))
            out.append(emit({"measure": "build_table", "n": n, **legacy}))
    return out


def synthetic_rows_table(rows: int) -> str:
    """A partitioned table of ``rows`` synthetic rows over 1,000 images (all
    entries point at one real tiny slide, positions cycling over its 16
    patches; chunk groups of 4 rows as in real slides), written part by part."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from zarrdask.io import open_image
    from zarrdask.table import digest_header, row_runs, runs_digest, source_entry
    from zarrdask.table_files import write_folder
    from zarrdask.table_layout import image_row, images_frame, write_side_tables

    path = ROOT / f"rows{rows}-v2.parquet"
    if (path / "current" / "_manifest.json").exists():
        return str(path)
    slide = base_slides()[0]
    entry = source_entry(open_image(str(slide)))
    n_images, part_rows = 1000, 1_000_000
    per_image = -(-rows // n_images)

    def write(folder: str) -> None:
        parts, runs, first = [], [], 0
        for k, start in enumerate(range(0, rows, part_rows)):
            stop = min(rows, start + part_rows)
            idx = np.arange(start, stop, dtype=np.int64)
            image_id = (idx // per_image).astype(np.int32)
            local = idx % per_image
            # positions cycle over the 16 patches of the tiny slide; chunk
            # groups have 4 rows, as a 512² chunk of a real slide has 4 patches of 256²
            cell = local % 16
            frame = pd.DataFrame({"image_id": image_id, "y": cell // 4 * 64, "x": cell % 4 * 64,
                                  "chunk_id": local // 4,
                                  "coverage": np.ones(len(idx), dtype=np.float32)})
            name = f"part-{k:06d}.parquet"
            pq.write_table(pa.Table.from_pandas(frame, preserve_index=False),
                           os.path.join(folder, name))
            runs.append(row_runs(frame))
            parts.append({"file": name, "rows": len(frame), "first_row": first,
                          "image_min": int(image_id.min()), "image_max": int(image_id.max())})
            first += len(frame)
        records = [image_row({**entry, "image_id": i}) for i in range(n_images)]
        for r in records:
            r["modality.labels"] = None
            r["modality.masks"] = None
        header = digest_header(frame.iloc[:0], num_rows=rows)
        digest = runs_digest(header, runs)
        meta = {"grid": {"dims": ["y", "x"], "patch": {"y": 64, "x": 64},
                         "stride": {"y": 64, "x": 64}, "pad": {"y": 0, "x": 0}},
                "modalities": {}, "per_image_modalities": ["images", "labels", "masks"],
                "inputs_hash": "synthetic", "hash": digest}
        write_side_tables(folder, meta, images_frame({k: [r[k] for r in records]
                                                      for k in records[0]}),
                          [], parts, num_rows=rows, columns=list(frame.columns),
                          table_hash=digest)

    write_folder(str(path), write, overwrite=True)
    return str(path)


def bench_dataset_rss(row_counts: list[int]) -> list[dict]:
    root = str(Path(__file__).resolve().parent.parent)
    out = []
    for rows in row_counts:
        t0 = time.perf_counter()
        path = synthetic_rows_table(rows)
        written = time.perf_counter() - t0
        res = run_measured(_DATASET_RSS.format(root=root, path=path))
        out.append(emit({"measure": "dataset_rss", "rows": rows, "table_write_s": written,
                         **res}))
    return out


def slope(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (n, value) points."""
    x = np.array([p[0] for p in points], dtype=float)
    y = np.array([p[1] for p in points], dtype=float)
    return float(np.polyfit(x, y, 1)[0]) if len(x) > 1 else float("nan")


def summary(records: list[dict]) -> dict:
    builds = [r for r in records if r["measure"] == "build_cohort"]
    legacy = [r for r in records if r["measure"] == "build_table"]
    incs = [r for r in records if r["measure"] == "incremental"]
    reads = [r for r in records if r["measure"] == "read_back"]
    rss = [r for r in records if r["measure"] == "dataset_rss"]
    out = {
        "client_cpu_ms_per_image": 1000 * slope([(r["n"], r["client_cpu_s"]) for r in builds]),
        "legacy_client_cpu_ms_per_image": 1000 * slope([(r["n"], r["client_cpu_s"])
                                                        for r in legacy]),
        "client_peak_rss_mb_max": max(r["client_peak_rss_mb"] for r in builds),
        "build_s": {r["n"]: round(r["build_s"], 2) for r in builds},
        "build_s_per_image": {r["n"]: round(r["build_s"] / r["n"] * 1000, 3) for r in builds},
        "incremental_ratio": {r["n"]: round(r["ratio"], 3) for r in incs},
        "open_s": {r["n"]: round(r["open_s"], 3) for r in reads},
        "first_batch_s": {r["n"]: round(r["first_batch_s"], 3) for r in reads},
        "first_batch_rss_mb": {r["n"]: round(r["first_batch_rss_mb"], 1) for r in reads},
        "parse_every_entry_s": {r["n"]: round(r["parse_every_entry_s"], 3) for r in reads},
        "client_peak_rss_mb": {r["n"]: round(r["client_peak_rss_mb"]) for r in builds},
        "incremental_client_peak_rss_mb": {r["n"]: round(r["client_peak_rss_mb"])
                                           for r in incs},
        "dataset_main_rss_mb": {r["rows"]: round(r["main_rss_mb"], 1) for r in rss},
        "dataset_worker_peak_rss_mb": {r["rows"]: round(r["worker_peak_rss_mb"], 1) for r in rss},
    }
    if len(rss) >= 2:
        out["dataset_main_rss_ratio"] = rss[-1]["main_rss_mb"] / rss[0]["main_rss_mb"]
        out["dataset_worker_rss_ratio"] = (rss[-1]["worker_peak_rss_mb"]
                                           / rss[0]["worker_peak_rss_mb"])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="cohorts of 250, 500 and 1,000 slides; tables of 1e6 and 5e6 rows")
    parser.add_argument("--sizes", type=int, nargs="+", default=None)
    parser.add_argument("--rows", type=int, nargs="+", default=None)
    parser.add_argument("--images-per-task", type=int, default=None)
    parser.add_argument("--legacy-max", type=int, default=2000,
                        help="also time build_table up to this cohort size")
    parser.add_argument("--builds-only", action="store_true",
                        help="only the cohort builds (no PatchDataset row-table measurements)")
    args = parser.parse_args(argv)
    sizes = args.sizes or ([250, 500, 1000] if args.quick else [1000, 10000, 100000])
    rows = args.rows or ([1_000_000, 5_000_000] if args.quick else [1_000_000, 50_000_000])
    records = bench_builds(sizes, args.images_per_task, args.legacy_max)
    if not args.builds_only:
        records += bench_dataset_rss(rows)
    result = summary(records)
    print("\nsummary")
    for key, value in result.items():
        print(f"  {key:40s} {value}")
    save("cohort_quick" if args.quick else "cohort", {"records": records, "summary": result})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

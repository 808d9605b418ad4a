"""Grid benchmark (issue: masks and patch grids as dask graphs).

Measures, each in a fresh process:

1. ``build_table`` of a synthetic 16384² RGB slide (chunks 512², Blosc-zstd)
   with a tissue mask at 1/16 and 256² patches: time and peak memory, and the
   same grid computed by zarrdataset 0.2.2 in its own virtual env (ratio);
2. 64 slides (8 distinct single-level 4096² slides, each listed 8 times, so
   the tissue mask reads level 0) on a LocalCluster with 2 worker processes
   vs 1 (ratio). Both clusters have one thread per worker process (1 × 1
   against 2 × 1 threads, on a 2-core machine), the scheduler in the
   benchmark's process; the slides are written once and reused, and the
   timing starts after the cluster is up and a 2-slide warm-up ran (no
   startup, no imports). Every listed slide is computed: graph keys are per
   image, so a slide listed 8 times is read and masked 8 times;
3. loading a 10-million-row table with ``read_table``.

Usage: ``python benchmarks/bench_grid.py [--quick] [--no-zarrdataset]``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_slide, run_measured, save, table  # noqa: E402

ZARRDASK_GRID = """
import time
import zarrdask as zd
t0 = time.perf_counter()
t = zd.build_table({slide!r}, patch_size=256, masks="tissue", tissue_options={{"mask_scale": 1/16}})
RESULT = {{"seconds": time.perf_counter() - t0, "patches": len(t)}}
"""

ZARRDATASET_GRID = """
import time, warnings
warnings.simplefilter("ignore")
import zarrdataset as zds
t0 = time.perf_counter()
ds = zds.ZarrDataset(
    [zds.ImagesDatasetSpecs(filenames=[{slide!r}], data_group="0", source_axes="CYX", axes="YXC"),
     zds.MasksDatasetSpecs(filenames=[{slide!r}], data_group="0", source_axes="CYX", axes="YXC",
                           image_loader_func=zds.WSITissueMaskGenerator(mask_scale=1/16))],
    patch_sampler=zds.PatchSampler(patch_size=256))
ds._initialize()
# 0.2.2 computes patch positions per chunk, lazily: enumerate them all
n = 0
for collection, chunks in zip(ds._arr_lists, ds._toplefts):
    for chunk_tlbr in chunks:
        n += len(ds._patch_sampler.compute_patches(collection, chunk_tlbr))
RESULT = {{"seconds": time.perf_counter() - t0, "patches": int(n)}}
"""

CLUSTER_GRID = """
import time
from distributed import Client, LocalCluster
import zarrdask as zd
slides = {slides!r}
with LocalCluster(n_workers={workers}, threads_per_worker=1, processes=True,
                  dashboard_address=None) as cluster, Client(cluster) as client:
    zd.build_table(slides[:2], patch_size=256, masks="tissue", client=client)  # warm up
    t0 = time.perf_counter()
    t = zd.build_table(slides, patch_size=256, masks="tissue", client=client)
    RESULT = {{"seconds": time.perf_counter() - t0, "patches": len(t)}}
"""

LOAD_TABLE = """
import time, numpy as np, pandas as pd, zarrdask as zd
from zarrdask.table import PatchTable
n = {rows}
rng = np.random.default_rng(0)
frame = pd.DataFrame({{"image_id": rng.integers(0, 1000, n).astype(np.int32),
                      "y": rng.integers(0, 65536, n), "x": rng.integers(0, 65536, n),
                      "chunk_id": rng.integers(0, 16384, n), "coverage": rng.random(n).astype(np.float32)}})
PatchTable(frame, {{"grid": {{"dims": ["y", "x"]}}, "hash": "bench"}}).to_parquet({path!r})
del frame
t0 = time.perf_counter()
t = zd.read_table({path!r})
RESULT = {{"seconds": time.perf_counter() - t0, "rows": len(t)}}
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--no-zarrdataset", action="store_true", help="skip zarrdataset 0.2.2")
    args = parser.parse_args()
    size = 4096 if args.quick else 16384
    n_slides = 8 if args.quick else 64
    rows = 1_000_000 if args.quick else 10_000_000

    slide = ensure_slide(size)
    result: dict = {"size": size}
    result["zarrdask"] = run_measured(ZARRDASK_GRID.format(slide=slide))
    if not args.no_zarrdataset:
        try:
            from zarrdataset_venv import ensure_venv

            result["zarrdataset"] = run_measured(ZARRDATASET_GRID.format(slide=slide),
                                                 python=ensure_venv())
            result["speedup_vs_zarrdataset"] = (
                result["zarrdataset"]["seconds"] / result["zarrdask"]["seconds"])
        except Exception as exc:  # reported, not hidden
            result["zarrdataset_error"] = str(exc)[-2000:]

    # single-level slides: the tissue mask must read and reduce level 0
    small = [ensure_slide(2048 if args.quick else 4096, seed=s, levels=1) for s in range(8)]
    slides = [small[i % len(small)] for i in range(n_slides)]
    one = run_measured(CLUSTER_GRID.format(slides=slides, workers=1))
    two = run_measured(CLUSTER_GRID.format(slides=slides, workers=2))
    result["cluster"] = {"slides": n_slides, "distinct_slides": len(small),
                         "threads_per_worker": 1, "one_worker": one, "two_workers": two,
                         "speedup": one["seconds"] / two["seconds"]}

    with tempfile.TemporaryDirectory() as tmp:
        result["load_table"] = run_measured(LOAD_TABLE.format(rows=rows, path=f"{tmp}/t.parquet"))

    path = save("grid", result)
    z = result["zarrdask"]
    rows_out = [
        (f"build_table {size}² tissue 1/16 patch 256", f"{z['seconds']:.2f} s, {z['patches']} patches, peak {z['peak_rss_mb']:.0f} MB"),
    ]
    if "zarrdataset" in result:
        zd = result["zarrdataset"]
        rows_out.append(("zarrdataset 0.2.2 same grid", f"{zd['seconds']:.1f} s, {zd['patches']} patches, peak {zd['peak_rss_mb']:.0f} MB"))
        rows_out.append(("speed-up vs zarrdataset (target >= 50x)", f"{result['speedup_vs_zarrdataset']:.1f}x"))
    elif "zarrdataset_error" in result:
        rows_out.append(("zarrdataset 0.2.2", "failed: " + result["zarrdataset_error"].splitlines()[-1]))
    c = result["cluster"]
    rows_out.append((f"{n_slides} slides, 1 worker", f"{c['one_worker']['seconds']:.2f} s"))
    rows_out.append((f"{n_slides} slides, 2 workers", f"{c['two_workers']['seconds']:.2f} s"))
    rows_out.append(("2 vs 1 worker (target >= 1.7x)", f"{c['speedup']:.2f}x"))
    lt = result["load_table"]
    rows_out.append((f"read_table {lt['rows']:,} rows (target <= 2 s)", f"{lt['seconds']:.2f} s"))
    print(table(rows_out))
    print(f"  results: {path}")


if __name__ == "__main__":
    main()

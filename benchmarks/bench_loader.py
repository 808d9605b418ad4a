"""Throughput of PatchDataset against the physical limit of chunk decoding.

Run::

    python benchmarks/bench_loader.py                 # 16384² slide (writes it once, ~40 s)
    python benchmarks/bench_loader.py --size 4096     # smaller, quicker
    python benchmarks/bench_loader.py --quick          # smoke run
    python benchmarks/bench_loader.py --no-zarrdataset

On a synthetic RGB slide (chunks 512², Blosc-zstd) with a table of every
256² patch it measures, in one run and on the same files:

* the *limit*: every chunk read and decoded with numcodecs directly in
  ``--workers`` processes, as patch-equivalents/s (chunks/s x patches per
  chunk);
* zarr-python's read path (``arr[chunk]`` in the same number of processes);
* the DataLoader transport ceiling: a dataset yielding ready arrays of the
  patch's size through the same DataLoader (what batching and inter-process
  transfer cost alone);
* PatchDataset through ``DataLoader(batch_size=16, num_workers=2)``,
  sequential and shuffled (``chunk_buffer=16``), with the peak RSS of each
  worker (psutil);
* the time to the first batch from a table of 1000 slides;
* zarrdataset 0.2.2 on a zarr v2 copy of the slide (its own venv, see
  ``zarrdataset_venv.py``), iterated directly and through a 2-worker
  DataLoader with ``zarrdataset_worker_init_fn``.

Each rate is the best of ``--repeat`` runs (the machine may be shared).
Prints a table and writes ``benchmarks/results/loader.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing as mp
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from typing import Any

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
DATA = os.path.join(HERE, "data")
RESULTS = os.path.join(HERE, "results")


# -- data ---------------------------------------------------------------------------

def ensure_slide(size: int, chunk: int, *, zarr_format: int = 3, levels: int | None = None) -> str:
    """The synthetic slide of ``size``² in ``benchmarks/data`` (written if missing)."""
    from zarrdask.datasets import write_synthetic_slide

    name = f"slide_{size}" + ("" if chunk == 512 else f"_c{chunk}") + ("" if zarr_format == 3 else "_v2")
    path = os.path.join(DATA, f"{name}.zarr")
    marker = os.path.join(path, "zarr.json" if zarr_format == 3 else ".zgroup")
    if not os.path.exists(marker) or not os.path.exists(os.path.join(path, "0")):
        os.makedirs(DATA, exist_ok=True)
        print(f"writing {path} (once) ...", flush=True)
        write_synthetic_slide(path, size=size, chunk=chunk, levels=levels, compressor="zstd",
                              zarr_format=zarr_format)
    return path


def grid_table(path: str, patch: int, n_images: int = 1):
    """Table of every ``patch``² patch of level 0, for ``n_images`` entries
    pointing at the same slide."""
    import pandas as pd

    from zarrdask.io import open_image
    from zarrdask.table import PatchTable, source_entry

    image = open_image(path, level=0)
    entry = source_entry(image, image_id=0)
    h, w = entry["shape"]["y"], entry["shape"]["x"]
    cy, cx = entry["chunks"]["y"], entry["chunks"]["x"]
    yy, xx = (a.ravel() for a in np.meshgrid(np.arange(0, h - patch + 1, patch),
                                             np.arange(0, w - patch + 1, patch), indexing="ij"))
    cid = (yy // cy) * math.ceil(w / cx) + xx // cx
    order = np.lexsort((xx, yy, cid))
    yy, xx, cid = yy[order], xx[order], cid[order]
    n = len(yy)
    frame = pd.DataFrame({
        "image_id": np.repeat(np.arange(n_images, dtype=np.int32), n),
        "y": np.tile(yy, n_images), "x": np.tile(xx, n_images),
        "chunk_id": np.tile(cid, n_images), "coverage": np.ones(n * n_images, np.float32),
    })
    entries = [dict(entry, image_id=i) for i in range(n_images)]
    meta = {
        "grid": {"dims": ["y", "x"], "patch": {"y": patch, "x": patch},
                 "stride": {"y": patch, "x": patch}, "pad": {"y": 0, "x": 0},
                 "min_area": 1, "allow_incomplete": False},
        "images": entries,
        "modalities": {"images": entries, "labels": [None] * n_images, "masks": [None] * n_images},
        "hash": f"bench-{os.path.basename(path)}-{patch}-{n_images}",
    }
    return PatchTable(frame, meta)


def ensure_tiled_slide(path: str, factor: int) -> str:
    """A slide ``factor`` times larger per side than level 0 of ``path``,
    made of hard links to its chunk files (no extra disk space): a zarr v3
    array whose chunk ``(c, i, j)`` is the source's ``(c, i % n, j % n)``.

    Used to show that a worker's memory does not grow with the slide."""
    src = os.path.join(path, "0")
    with open(os.path.join(src, "zarr.json")) as fh:
        meta = json.load(fh)
    if (meta.get("chunk_key_encoding", {}).get("configuration") or {}).get("separator", "/") != "/":
        raise ValueError(f"{src}: expected '/'-separated chunk keys")
    channels, h, w = meta["shape"]
    cc, ch, cw = meta["chunk_grid"]["configuration"]["chunk_shape"]
    ny, nx = h // ch, w // cw
    out = os.path.join(DATA, f"{os.path.basename(path).removesuffix('.zarr')}_x{factor}.zarr")
    done = os.path.join(out, "zarr.json")
    if os.path.exists(done):
        return out
    print(f"linking {out} (once) ...", flush=True)
    shutil.rmtree(out, ignore_errors=True)  # an interrupted earlier attempt
    for c in range(math.ceil(channels / cc)):
        for i in range(ny * factor):
            row = os.path.join(out, "c", str(c), str(i))
            os.makedirs(row, exist_ok=True)
            for j in range(nx * factor):
                os.link(os.path.join(src, "c", str(c), str(i % ny), str(j % nx)), os.path.join(row, str(j)))
    meta["shape"] = [meta["shape"][0], h * factor, w * factor]
    with open(done + ".tmp", "w") as fh:
        json.dump(meta, fh)
    os.replace(done + ".tmp", done)  # written last: a partial folder is redone
    return out


# -- the limit and zarr-python ---------------------------------------------------------

def _chunk_keys(path: str) -> tuple[list[str], str]:
    array = os.path.join(path, "0")
    if os.path.exists(os.path.join(array, "zarr.json")):
        with open(os.path.join(array, "zarr.json")) as fh:
            meta = json.load(fh)
        shape, chunks = meta["shape"], meta["chunk_grid"]["configuration"]["chunk_shape"]
        sep = (meta.get("chunk_key_encoding", {}).get("configuration") or {}).get("separator", "/")
        fmt = lambda idx: sep.join(("c", *map(str, idx)))  # noqa: E731
    else:
        with open(os.path.join(array, ".zarray")) as fh:
            meta = json.load(fh)
        shape, chunks = meta["shape"], meta["chunks"]
        sep = meta.get("dimension_separator") or "."
        fmt = lambda idx: sep.join(map(str, idx))  # noqa: E731
    grid = [range(math.ceil(s / c)) for s, c in zip(shape, chunks, strict=True)]
    keys = [fmt((a, b, c)) for a in grid[0] for b in grid[1] for c in grid[2]]
    return keys, array


class _ChainDecoder:
    """A zarr v3 codec chain as the direct read path runs it: crc32c checked
    and stripped, then Blosc."""

    def __init__(self, codecs: list) -> None:
        self.codecs = codecs

    def decode(self, raw: bytes) -> bytes:
        for codec in self.codecs:
            raw = codec.decode(raw)
        return raw


def chunk_decoder(array: str):
    """The numcodecs codec(s) of a zarr array's chunks: v2 ``compressor``, or
    the v3 chain (Blosc, crc32c), in the order decoding runs them. Blosc runs
    without its global-context lock, which forked processes share and which
    would serialise threads."""
    import numcodecs
    import numcodecs.blosc

    numcodecs.blosc.use_threads = False
    if os.path.exists(os.path.join(array, "zarr.json")):
        with open(os.path.join(array, "zarr.json")) as fh:
            codecs = json.load(fh)["codecs"]
        names = [c["name"] for c in codecs]
        if names not in (["bytes", "blosc", "crc32c"], ["bytes", "blosc"]):
            raise ValueError(f"{array}: codecs {names} are not measured by the raw decode")
        chain = [numcodecs.CRC32C()] if "crc32c" in names else []
        return _ChainDecoder([*chain, numcodecs.Blosc()])
    with open(os.path.join(array, ".zarray")) as fh:
        meta = json.load(fh)
    if meta.get("filters"):
        raise ValueError(f"{array}: filters {meta['filters']} are not measured by the raw decode")
    return numcodecs.get_codec(meta["compressor"])


def _decode_keys(args: tuple[str, list[str]]) -> int:
    array, keys = args
    codec = chunk_decoder(array)
    total = 0
    for key in keys:
        with open(os.path.join(array, key), "rb") as fh:
            raw = fh.read()
        total += np.frombuffer(codec.decode(raw), dtype=np.uint8).size
    return total


def _zarr_keys(args: tuple[str, list[tuple[int, int]], int]) -> int:
    import zarr

    array, blocks, chunk = args
    arr = zarr.open_array(array, mode="r")
    total = 0
    for i, j in blocks:
        total += arr[:, i * chunk:(i + 1) * chunk, j * chunk:(j + 1) * chunk].size
    return total


def _split(items: list, parts: int) -> list[list]:
    return [items[k * len(items) // parts:(k + 1) * len(items) // parts] for k in range(parts)]


def measure_limit(path: str, procs: int, passes: int = 1) -> float:
    """Chunks decoded per second by ``procs`` processes reading files and
    calling numcodecs directly (every chunk ``passes`` times)."""
    keys, array = _chunk_keys(path)
    keys = keys * passes
    with mp.get_context("fork").Pool(procs) as pool:
        pool.map(_decode_keys, [(array, keys[:2])] * procs)  # warm the pool
        t0 = time.perf_counter()
        pool.map(_decode_keys, [(array, part) for part in _split(keys, procs)])
        return len(keys) / (time.perf_counter() - t0)


def measure_zarr(path: str, procs: int, chunk: int, passes: int = 1) -> float:
    """Chunks per second read with zarr-python (``arr[chunk slices]``),
    every chunk ``passes`` times."""
    import zarr

    array = os.path.join(path, "0")
    shape = zarr.open_array(array, mode="r").shape
    blocks = [(i, j) for i in range(math.ceil(shape[1] / chunk)) for j in range(math.ceil(shape[2] / chunk))]
    blocks = blocks * passes
    with mp.get_context("spawn").Pool(procs) as pool:  # zarr's event loop does not survive fork
        pool.map(_zarr_keys, [(array, blocks[:1], chunk)] * procs)
        t0 = time.perf_counter()
        pool.map(_zarr_keys, [(array, part, chunk) for part in _split(blocks, procs)])
        return len(blocks) / (time.perf_counter() - t0)


# -- DataLoader runs --------------------------------------------------------------------

class _RssMonitor:
    """Peak RSS of each child process of this one, sampled every ``every`` s."""

    def __init__(self, every: float = 0.02) -> None:
        import psutil

        self._me = psutil.Process()
        self.peak: dict[int, int] = {}
        self.peak_uss: dict[int, int] = {}
        self._stop = threading.Event()
        self._every = every
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        tick = 0
        while not self._stop.is_set():
            for child in self._me.children(recursive=True):
                try:
                    rss = child.memory_info().rss
                    uss = child.memory_full_info().uss if tick % 10 == 0 else 0
                except psutil.Error:
                    continue
                self.peak[child.pid] = max(self.peak.get(child.pid, 0), rss)
                self.peak_uss[child.pid] = max(self.peak_uss.get(child.pid, 0), uss)
            tick += 1
            self._stop.wait(self._every)

    def __enter__(self) -> _RssMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def batch_len(batch: Any) -> int:
    """Patches in a collated batch: a tensor (zarrdataset's single modality),
    a dict of modalities (PatchDataset) or a tuple of modalities."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    if isinstance(batch, dict):
        return batch_len(next(iter(batch.values())))
    if isinstance(batch, list | tuple):
        return batch_len(batch[0])
    return len(batch)


def run_loader(dataset, *, batch: int, workers: int, monitor: bool = False,
               worker_init_fn: Any = None) -> dict[str, float]:
    """Iterate a DataLoader over ``dataset`` once."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch, num_workers=workers,
                                         worker_init_fn=worker_init_fn)
    mon = _RssMonitor() if monitor else None
    if mon:
        mon.__enter__()
    try:
        t0 = time.perf_counter()
        it = iter(loader)
        first = next(it)
        t1 = time.perf_counter()
        n = first_n = batch_len(first)
        for b in it:
            n += batch_len(b)
        t2 = time.perf_counter()
    finally:
        if mon:
            mon.__exit__(None, None, None)
    out = {"patches": n, "seconds": t2 - t0, "first_batch_s": t1 - t0,
           "rate": n / (t2 - t0), "steady_rate": (n - first_n) / max(t2 - t1, 1e-9)}
    if mon:
        out["peak_rss_mb"] = [round(v / 2**20, 1) for v in mon.peak.values()]
        out["peak_uss_mb"] = [round(v / 2**20, 1) for v in mon.peak_uss.values()]
    return out


class ReadyDataset(torch.utils.data.IterableDataset):
    """Yields ready arrays of the patch's size: the DataLoader's own cost
    (batching, inter-process transfer), without reading anything."""

    def __init__(self, n: int, shape: tuple[int, ...]) -> None:
        self.n = n
        self.shape = shape

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        w, k = (info.id, info.num_workers) if info else (0, 1)
        src = np.ones(self.shape, dtype=np.uint8)
        for _ in range(w * self.n // k, (w + 1) * self.n // k):
            yield {"images": src.copy()}


def compat_dataset(path: str, patch: int, passes: int = 1):
    """zarrdataset user code, unchanged, on zarrdask's engine (the slide
    listed ``passes`` times, as in the PatchDataset runs)."""
    import zarrdask as zds

    specs = [zds.ImagesDatasetSpecs(filenames=[path] * passes, data_group="0", source_axes="CYX")]
    return zds.ZarrDataset(specs, patch_sampler=zds.PatchSampler(patch_size=patch), shuffle=False)


def shuffle_sweep(table, *, buffers: list[int], batch: int, chunk: int, read_threads: int,
                  seed: int = 0) -> list[dict[str, float]]:
    """Randomness against decode work: for each ``chunk_buffer`` K, the
    in-process rate (no DataLoader, so transport does not hide decode work)
    and how mixed consecutive batches are (distinct storage chunks per batch
    of ``batch`` samples; sequential order gives ``batch / patches per chunk``)."""
    from zarrdask.dataset import PatchDataset

    for _ in PatchDataset(table, read_threads=read_threads):  # warm-up pass (page cache, pools)
        pass
    rows = []
    for k in buffers:
        ds = PatchDataset(table, shuffle=k > 0, chunk_buffer=max(k, 1), seed=seed,
                          read_threads=read_threads)
        t0 = time.perf_counter()
        keys = []
        for sample in ds:
            y, x = (int(v) for v in np.asarray(sample["position"])[-2:, 0])
            keys.append((int(sample["image_id"]), y // chunk, x // chunk))
        el = time.perf_counter() - t0
        per_batch = [len(set(keys[i:i + batch])) for i in range(0, len(keys) - batch + 1, batch)]
        rows.append({"chunk_buffer": k, "rate": len(keys) / el,
                     "distinct_chunks_per_batch": float(np.mean(per_batch))})
    return rows


def run_direct(dataset) -> dict[str, float]:
    """Iterate ``dataset`` in this process (no DataLoader)."""
    t0 = time.perf_counter()
    n = sum(1 for _ in dataset)
    el = time.perf_counter() - t0
    return {"patches": n, "seconds": el, "rate": n / el, "steady_rate": n / el}


def best(runs: list[dict[str, Any]], key: str = "steady_rate") -> dict[str, Any]:
    return max(runs, key=lambda r: r[key])


# -- zarrdataset -------------------------------------------------------------------------

_ZDS_SCRIPT = r'''
import json, sys, time
import torch
import zarrdataset as zds
from torch.utils.data import DataLoader

path, patch, batch, workers, max_s = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5])

def make(shuffle):
    sampler = zds.PatchSampler(patch_size=patch)
    specs = [zds.ImagesDatasetSpecs(filenames=[path], data_group="0", source_axes="CYX")]
    return zds.ZarrDataset(specs, patch_sampler=sampler, shuffle=shuffle)

def timed(iterable, count):
    t0 = time.perf_counter(); n = 0; first = None
    for item in iterable:
        n += count(item)
        if first is None:
            first = time.perf_counter() - t0
        if time.perf_counter() - t0 > max_s:
            break
    el = time.perf_counter() - t0
    return {"patches": n, "seconds": el, "rate": n / el, "first_s": first}

out = {"zarrdataset": zds.__version__ if hasattr(zds, "__version__") else "0.2.2"}
for shuffle in (False, True):
    tag = "shuffled" if shuffle else "sequential"
    out[f"direct_{tag}"] = timed(make(shuffle), lambda x: 1)
    loader = DataLoader(make(shuffle), batch_size=batch, num_workers=workers,
                        worker_init_fn=zds.zarrdataset_worker_init_fn)
    out[f"loader_{tag}"] = timed(loader, lambda b: len(b[0]) if isinstance(b, (list, tuple)) else len(b))
print("JSON" + json.dumps(out))
'''


def measure_zarrdataset(path: str, *, patch: int, batch: int, workers: int, max_s: float) -> dict:
    """zarrdataset 0.2.2 in its own venv on the zarr v2 copy of the slide."""
    sys.path.insert(0, HERE)
    from zarrdataset_venv import run_in_venv

    with tempfile.NamedTemporaryFile("w", suffix=".py", delete=False) as fh:
        fh.write(_ZDS_SCRIPT)
        script = fh.name
    try:
        done = run_in_venv(script, path, str(patch), str(batch), str(workers), str(max_s),
                           timeout=3600)
    finally:
        os.remove(script)
    for line in done.stdout.splitlines():
        if line.startswith("JSON"):
            return json.loads(line[4:])
    raise RuntimeError(f"zarrdataset run failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")


# -- main --------------------------------------------------------------------------------

def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description="PatchDataset throughput benchmark")
    parser.add_argument("--size", type=int, default=16384, help="slide edge in pixels")
    parser.add_argument("--chunk", type=int, default=512)
    parser.add_argument("--patch", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--read-threads", type=int, default=4)
    parser.add_argument("--chunk-buffer", type=int, default=16)
    parser.add_argument("--passes", type=int, default=3,
                        help="passes over the slide in each timed run (the table lists it this many times)")
    parser.add_argument("--slides", type=int, default=1000, help="images in the first-batch table")
    parser.add_argument("--repeat", type=int, default=3, help="runs per measurement (best kept)")
    parser.add_argument("--no-zarrdataset", action="store_true", help="skip zarrdataset 0.2.2")
    parser.add_argument("--zarrdataset-max-seconds", type=float, default=60.0)
    parser.add_argument("--large-factor", type=int, default=4,
                        help="memory check on a slide this many times larger per side (0: skip)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4096² slide, one repeat, 100 slides, no zarrdataset")
    parser.add_argument("--threads", type=int, default=2, help="PatchLoader threads")
    parser.add_argument("--peer-seconds", type=float, default=20.0,
                        help="time spent on each of xbatcher and zarrdataset per round")
    parser.add_argument("--no-xbatcher", dest="xbatcher", action="store_false",
                        help="skip xbatcher")
    parser.add_argument("--fast-path-only", action="store_true",
                        help="only the PatchLoader figures and their references (issue 11)")
    parser.add_argument("--out", default=os.path.join(RESULTS, "loader.json"))
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.size, ns.repeat, ns.slides, ns.no_zarrdataset, ns.large_factor = 4096, 1, 100, True, 2
        ns.passes = 1

    from zarrdask.dataset import PatchDataset

    path = ensure_slide(ns.size, ns.chunk)
    per_chunk = (ns.chunk // ns.patch) ** 2
    # the slide listed ``passes`` times: longer runs, steadier figures
    table = grid_table(path, ns.patch, n_images=ns.passes)
    n_patches = len(table)
    results: dict[str, Any] = {
        "config": {**vars(ns), "slide": path, "patches": n_patches, "patches_per_chunk": per_chunk,
                   "cpus": os.cpu_count(), "python": platform.python_version()},
    }
    if ns.fast_path_only:
        return fast_path_run(ns, path, table, per_chunk, results)
    import zarrdask as zds

    limit, zarr_rate, ready, seq, shuf, direct, compat = [], [], [], [], [], [], []
    patch_shape = (3, ns.patch, ns.patch)
    for _ in range(ns.repeat):  # interleaved, so a busy moment hits every measurement
        limit.append(measure_limit(path, ns.workers, ns.passes) * per_chunk)
        zarr_rate.append(measure_zarr(path, ns.workers, ns.chunk, ns.passes) * per_chunk)
        ready.append(run_loader(ReadyDataset(n_patches, patch_shape), batch=ns.batch,
                                workers=ns.workers, monitor=True))
        seq.append(run_loader(PatchDataset(table, read_threads=ns.read_threads),
                              batch=ns.batch, workers=ns.workers, monitor=True))
        shuf.append(run_loader(PatchDataset(table, shuffle=True, chunk_buffer=ns.chunk_buffer,
                                            read_threads=ns.read_threads),
                               batch=ns.batch, workers=ns.workers, monitor=True))
        direct.append(run_direct(PatchDataset(table, read_threads=ns.read_threads)))
        compat.append(run_loader(compat_dataset(path, ns.patch, ns.passes), batch=ns.batch, workers=ns.workers,
                                 monitor=True, worker_init_fn=zds.zarrdataset_worker_init_fn))
    results["limit_patches_per_s"] = max(limit)
    results["zarr_python_patches_per_s"] = max(zarr_rate)
    results["transport_ceiling_patches_per_s"] = best(ready)["steady_rate"]
    results["sequential"] = best(seq)
    results["shuffled"] = best(shuf)
    results["direct_in_process"] = best(direct)
    results["compat_sequential"] = best(compat)
    # K = 0 is sequential order
    results["shuffle_sweep"] = shuffle_sweep(table, buffers=[0, 1, 4, 16, 64, 256], batch=ns.batch,
                                             chunk=ns.chunk, read_threads=ns.read_threads)
    lim = results["limit_patches_per_s"]
    ceiling = results["transport_ceiling_patches_per_s"]
    # decode and transport share the same cores: their costs add up
    results["combined_bound_patches_per_s"] = 1.0 / (1.0 / lim + 1.0 / ceiling)
    results["all_runs"] = {"limit": limit, "zarr": zarr_rate,
                           "transport": [r["steady_rate"] for r in ready],
                           "sequential": [r["steady_rate"] for r in seq],
                           "shuffled": [r["steady_rate"] for r in shuf],
                           "direct": [r["rate"] for r in direct],
                           "compat": [r["steady_rate"] for r in compat]}
    results["transport_worker_peak_rss_mb"] = max(max(r.get("peak_rss_mb") or [0]) for r in ready)
    results["transport_worker_peak_uss_mb"] = max(max(r.get("peak_uss_mb") or [0]) for r in ready)
    results["peak_rss_mb_per_worker"] = max(max(r.get("peak_rss_mb") or [0]) for r in seq + shuf)
    results["peak_uss_mb_per_worker"] = max(max(r.get("peak_uss_mb") or [0]) for r in seq + shuf)

    if ns.large_factor > 1:  # a worker's memory must not grow with the slide
        large = ensure_tiled_slide(path, ns.large_factor)
        large_table = grid_table(large, ns.patch)
        run = run_loader(PatchDataset(large_table, read_threads=ns.read_threads),
                         batch=ns.batch, workers=ns.workers, monitor=True)
        small_peak = max(max(r.get("peak_rss_mb") or [0]) for r in seq)
        results["large_slide"] = {
            "size": ns.size * ns.large_factor, "patches": len(large_table),
            "steady_rate": run["steady_rate"], "peak_rss_mb": run.get("peak_rss_mb"),
            "peak_uss_mb": run.get("peak_uss_mb"),
            "peak_rss_mb_per_worker": max(run.get("peak_rss_mb") or [0]),
            "small_slide_peak_rss_mb_per_worker": small_peak,
        }

    # first batch from a table of many slides
    t0 = time.perf_counter()
    many = grid_table(path, ns.patch, n_images=ns.slides)
    t_table = time.perf_counter() - t0
    first = {}
    for shuffle in (False, True):
        t0 = time.perf_counter()
        ds = PatchDataset(many, shuffle=shuffle, read_threads=ns.read_threads)
        t_ds = time.perf_counter() - t0
        t0 = time.perf_counter()
        it = iter(torch.utils.data.DataLoader(ds, batch_size=ns.batch, num_workers=ns.workers))
        next(it)
        first["shuffled" if shuffle else "sequential"] = {
            "dataset_s": t_ds, "first_batch_s": time.perf_counter() - t0}
        del it
    results["many_slides"] = {"slides": ns.slides, "rows": len(many), "table_s": t_table, **first}

    if not ns.no_zarrdataset:
        v2 = ensure_slide(ns.size, ns.chunk, zarr_format=2, levels=1)
        table2 = grid_table(v2, ns.patch)
        ours_v2 = best([run_loader(PatchDataset(table2, read_threads=ns.read_threads),
                                   batch=ns.batch, workers=ns.workers) for _ in range(ns.repeat)])
        results["sequential_v2"] = ours_v2
        try:
            results["zarrdataset"] = measure_zarrdataset(
                v2, patch=ns.patch, batch=ns.batch, workers=ns.workers,
                max_s=ns.zarrdataset_max_seconds)
        except Exception as exc:  # report, do not lose the other figures
            results["zarrdataset_error"] = str(exc)

    sys.path.insert(0, HERE)
    import loader_fast_path

    large_fast = grid_table(ensure_tiled_slide(path, ns.large_factor), ns.patch) \
        if ns.large_factor > 1 else None
    results["fast_path"] = loader_fast_path.measure(path, table, ns=ns, per_chunk=per_chunk,
                                                    large_table=large_fast)
    results["ratios"] = {
        "sequential/limit": results["sequential"]["steady_rate"] / lim,
        "shuffled/sequential": results["shuffled"]["steady_rate"] / results["sequential"]["steady_rate"],
        "transport_ceiling/limit": results["transport_ceiling_patches_per_s"] / lim,
        "sequential/transport_ceiling": results["sequential"]["steady_rate"] / ceiling,
        "sequential/combined_bound": results["sequential"]["steady_rate"] / results["combined_bound_patches_per_s"],
        "direct_in_process/limit": results["direct_in_process"]["rate"] / lim,
        "zarr_python/limit": results["zarr_python_patches_per_s"] / lim,
        "compat/sequential": results["compat_sequential"]["steady_rate"] / results["sequential"]["steady_rate"],
    }
    if "large_slide" in results:
        big = results["large_slide"]
        results["ratios"]["peak_rss_large/small"] = (
            big["peak_rss_mb_per_worker"] / big["small_slide_peak_rss_mb_per_worker"])
    zd = results.get("zarrdataset")
    if zd:
        results["ratios"]["zarrdask_v2/zarrdataset_loader"] = (
            results["sequential_v2"]["steady_rate"] / zd["loader_sequential"]["rate"])
        results["ratios"]["zarrdask_v2/zarrdataset_direct"] = (
            results["sequential_v2"]["steady_rate"] / zd["direct_sequential"]["rate"])
    os.makedirs(os.path.dirname(ns.out), exist_ok=True)
    with open(ns.out, "w") as fh:
        json.dump(results, fh, indent=2)
    print_table(results)
    zd_rate = (results.get("zarrdataset") or {}).get("loader_sequential", {}).get("rate")
    loader_fast_path.print_summary(loader_fast_path.summary(
        results["fast_path"], combined_bound=results["combined_bound_patches_per_s"],
        zarrdataset_loader=zd_rate))
    print(f"\nwritten {ns.out}")
    return results


def fast_path_run(ns: argparse.Namespace, path: str, table: Any, per_chunk: int,
                  results: dict[str, Any]) -> dict[str, Any]:
    """``--fast-path-only``: the PatchLoader figures, the decode limit and the
    DataLoader transport ceiling they are compared with (same run)."""
    sys.path.insert(0, HERE)
    import loader_fast_path

    # the machine's load, at the start and the end: ratios of a loaded run are not
    # those of a quiet one (2-thread figures need two free cores)
    loader_fast_path.emit("load_avg_start", load=[round(x, 2) for x in os.getloadavg()])
    limit, ready = [], []
    for _ in range(ns.repeat):
        limit.append(measure_limit(path, ns.workers, ns.passes) * per_chunk)
        ready.append(run_loader(ReadyDataset(len(table), (3, ns.patch, ns.patch)),
                                batch=ns.batch, workers=ns.workers)["steady_rate"])
    lim, ceiling = max(limit), max(ready)
    bound = 1.0 / (1.0 / lim + 1.0 / ceiling)
    for name, value in (("limit_processes", lim), ("transport_ceiling", ceiling),
                        ("decode_transport_bound", bound)):
        loader_fast_path.emit(name, rate=round(value, 1))
    large = grid_table(ensure_tiled_slide(path, ns.large_factor), ns.patch) \
        if ns.large_factor > 1 else None
    fast = loader_fast_path.measure(path, table, ns=ns, per_chunk=per_chunk, large_table=large)
    results.update({"limit_patches_per_s": lim, "transport_ceiling_patches_per_s": ceiling,
                    "combined_bound_patches_per_s": bound, "fast_path": fast})
    peers: dict[str, float] = {}
    if not ns.no_zarrdataset:
        # the same zarr v2 file for both: zarrdataset 0.2.2 cannot read v3
        v2 = ensure_slide(ns.size, ns.chunk, zarr_format=2, levels=1)
        try:
            from zarrdask.dataset import PatchLoader

            ours = loader_fast_path.iterate_batches(PatchLoader(
                grid_table(v2, ns.patch), batch_size=ns.batch, threads=ns.threads))
            results["zarrdataset"] = measure_zarrdataset(
                v2, patch=ns.patch, batch=ns.batch, workers=ns.workers, max_s=ns.peer_seconds)
            peers = {"zarrdataset": results["zarrdataset"]["loader_sequential"]["rate"],
                     "patch_loader_v2": ours["steady_rate"]}
            for name, value in peers.items():
                loader_fast_path.emit(name, rate=round(value, 1), slide=v2)
        except Exception as exc:  # reported, the rest of the run stands
            results["zarrdataset_error"] = str(exc)
            print(f"zarrdataset 0.2.2 not measured: {exc}", file=sys.stderr)
    loader_fast_path.emit("load_avg_end", load=[round(x, 2) for x in os.getloadavg()])
    rows = loader_fast_path.summary(fast, combined_bound=bound, peers=peers)
    results["fast_path_ratios"] = {name: value for name, value, _ in rows}
    loader_fast_path.print_summary(rows)
    out = ns.out if ns.out != os.path.join(RESULTS, "loader.json") else \
        os.path.join(RESULTS, "loader_fast_path.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as fh:
        json.dump(results, fh, indent=2)
    print(f"\nwritten {out}")
    return results


def print_table(r: dict[str, Any]) -> None:
    cfg = r["config"]
    lim = r["limit_patches_per_s"]
    rows = [
        (f"decode limit (numcodecs, {cfg['workers']} procs)", lim, "1.00"),
        (f"zarr-python arr[chunk] ({cfg['workers']} procs)", r["zarr_python_patches_per_s"],
         f"{r['ratios']['zarr_python/limit']:.2f}"),
        ("DataLoader transport ceiling", r["transport_ceiling_patches_per_s"],
         f"{r['ratios']['transport_ceiling/limit']:.2f}"),
        ("decode + transport bound (derived)", r["combined_bound_patches_per_s"],
         f"{r['combined_bound_patches_per_s'] / lim:.2f}"),
        ("PatchDataset in one process (no DataLoader)", r["direct_in_process"]["rate"],
         f"{r['ratios']['direct_in_process/limit']:.2f}"),
        ("PatchDataset sequential", r["sequential"]["steady_rate"],
         f"{r['ratios']['sequential/limit']:.2f}"),
        (f"PatchDataset shuffled (buffer {cfg['chunk_buffer']})", r["shuffled"]["steady_rate"],
         f"{r['shuffled']['steady_rate'] / lim:.2f}"),
    ]
    rows.append(("zarrdask.ZarrDataset (compat) sequential", r["compat_sequential"]["steady_rate"],
                 f"{r['compat_sequential']['steady_rate'] / lim:.2f}"))
    if "sequential_v2" in r:
        rows.append(("PatchDataset sequential, zarr v2 copy", r["sequential_v2"]["steady_rate"],
                     f"{r['sequential_v2']['steady_rate'] / lim:.2f}"))
    zd = r.get("zarrdataset")
    if zd:
        for key, label in (("direct_sequential", "zarrdataset 0.2.2 direct, sequential"),
                           ("loader_sequential", "zarrdataset 0.2.2 DataLoader, sequential"),
                           ("direct_shuffled", "zarrdataset 0.2.2 direct, shuffled"),
                           ("loader_shuffled", "zarrdataset 0.2.2 DataLoader, shuffled")):
            rows.append((label, zd[key]["rate"], f"{zd[key]['rate'] / lim:.2f}"))
    print(f"\nslide {cfg['size']}² chunks {cfg['chunk']}² patches {cfg['patch']}² "
          f"({cfg['passes']} passes, {cfg['patches']} patches, {cfg['patches_per_chunk']} per chunk), batch {cfg['batch']}, "
          f"{cfg['workers']} workers, {cfg['cpus']} CPUs, best of {cfg['repeat']}")
    print(f"{'measurement':45s} {'patches/s':>10s} {'/limit':>7s}")
    for label, rate, ratio in rows:
        print(f"{label:45s} {rate:10.0f} {ratio:>7s}")
    ratios = r["ratios"]
    print(f"\nsequential / limit            {ratios['sequential/limit']:.2f}  (target >= 0.90)")
    print(f"shuffled / sequential         {ratios['shuffled/sequential']:.2f}  (target >= 0.80)")
    print(f"sequential / transport ceiling {ratios['sequential/transport_ceiling']:.2f}")
    print(f"sequential / combined bound   {ratios['sequential/combined_bound']:.2f}")
    print(f"peak RSS per worker           {r['peak_rss_mb_per_worker']:.0f} MB (target <= 400; "
          f"USS {r['peak_uss_mb_per_worker']:.0f} MB; a worker of the transport-ceiling run: "
          f"RSS {r['transport_worker_peak_rss_mb']:.0f} MB, USS {r['transport_worker_peak_uss_mb']:.0f} MB)")
    print("\nshuffle buffer sweep, in one process (K=0: sequential order)")
    print(f"{'chunk_buffer K':>15s} {'patches/s':>10s} {'distinct chunks per batch':>27s}")
    for row in r.get("shuffle_sweep", []):
        print(f"{row['chunk_buffer']:15d} {row['rate']:10.0f} {row['distinct_chunks_per_batch']:27.1f}")
    print(f"compat / PatchDataset sequential {ratios['compat/sequential']:.2f}  (target >= 0.80)")
    if "large_slide" in r:
        big = r["large_slide"]
        print(f"peak RSS per worker, {big['size']}² slide ({big['patches']} patches) "
              f"{big['peak_rss_mb_per_worker']:.0f} MB vs {big['small_slide_peak_rss_mb_per_worker']:.0f} MB "
              f"on {cfg['size']}²: ratio {ratios['peak_rss_large/small']:.2f}  (target: the same, <= 400 MB)")
    many = r["many_slides"]
    print(f"first batch, {many['slides']} slides ({many['rows']} rows): sequential "
          f"{many['sequential']['first_batch_s']:.2f} s, shuffled {many['shuffled']['first_batch_s']:.2f} s "
          f"(target <= 1 s; dataset construction {many['sequential']['dataset_s']:.2f} s)")
    for key in ("zarrdask_v2/zarrdataset_loader", "zarrdask_v2/zarrdataset_direct"):
        if key in ratios:
            print(f"{key:30s} {ratios[key]:.1f}x")
    if "zarrdataset_error" in r:
        print(f"zarrdataset: {r['zarrdataset_error'][:500]}")


if __name__ == "__main__":
    main()

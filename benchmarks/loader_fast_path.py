"""The in-process fast path (issue 11), measured by ``bench_loader.py``.

In one run, interleaved round by round so that a busy moment of a shared
machine hits every figure alike:

* ``raw_threads_<n>``: every chunk of the slide read and decoded with
  its own numcodecs codec by ``n`` threads of one process (Blosc and zstd
  release the GIL), as
  patch-equivalents/s: the reference of the in-process path;
* ``patch_loader_sequential`` / ``patch_loader_shuffled``: ``PatchLoader``
  with ``threads`` threads, batches of ``batch`` (with the garbage
  collector's pauses in the benchmark process meanwhile: ``gc_seconds``,
  ``gc_full`` full collections);
* ``dataset_workers``: ``PatchDataset`` in ``DataLoader(num_workers=w,
  batch_size=batch)`` (per-sample collate in the workers);
* ``loader_in_workers``: ``PatchLoader(threads=1)`` in ``DataLoader(
  batch_size=None, num_workers=w)``: each worker builds whole batches of its
  share, each batch crosses the process boundary once;
* ``patch_loader_peak_rss``: peak RSS of a process running one
  ``PatchLoader`` epoch (sampled with psutil), on the slide and on a slide
  ``large_factor`` times larger per side.

Each measurement is printed as one JSON line; :func:`summary` gives the
ratios and their targets.
"""

from __future__ import annotations

import gc
import json
import multiprocessing as mp
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import torch


def emit(name: str, **values: Any) -> dict[str, Any]:
    """Print one measurement as a JSON line and return it."""
    row = {"measurement": name, **values}
    print(json.dumps(row), flush=True)
    return row


def raw_thread_decode(path: str, threads: int, passes: int, per_chunk: int) -> float:
    """Patch-equivalents/s of numcodecs decoding every chunk of level 0 with
    ``threads`` threads of this process."""
    from bench_loader import _chunk_keys, chunk_decoder

    keys, array = _chunk_keys(path)
    keys = keys * passes
    codec = chunk_decoder(array)

    def decode(key: str) -> int:
        with open(os.path.join(array, key), "rb") as fh:
            return len(codec.decode(fh.read()))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(decode, keys[:threads]))  # warm
        t0 = time.perf_counter()
        list(pool.map(decode, keys))
        return len(keys) * per_chunk / (time.perf_counter() - t0)


def iterate_batches(batches: Any) -> dict[str, float]:
    """Patches/s over one pass of an iterable of batches (steady rate after
    the first batch, and overall), and the garbage collector's pauses in
    this process meanwhile (full collections hold the GIL: every thread
    waits)."""
    from bench_loader import batch_len

    pauses = {"seconds": 0.0, "full": 0, "start": 0.0}

    def on_gc(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            pauses["start"] = time.perf_counter()
            return
        pauses["seconds"] += time.perf_counter() - pauses["start"]
        pauses["full"] += info["generation"] == 2

    gc.callbacks.append(on_gc)
    try:
        t0 = time.perf_counter()
        it = iter(batches)
        n = first = batch_len(next(it))
        t1 = time.perf_counter()
        for b in it:
            n += batch_len(b)
        t2 = time.perf_counter()
    finally:
        gc.callbacks.remove(on_gc)
    return {"patches": n, "seconds": t2 - t0, "rate": n / (t2 - t0),
            "steady_rate": (n - first) / max(t2 - t1, 1e-9),
            "gc_seconds": round(pauses["seconds"], 4), "gc_full": pauses["full"]}


class _XbatcherPatches(torch.utils.data.Dataset):
    """xbatcher 0.4's ``BatchGenerator`` over the slide (one 256² patch per
    item), as a map-style dataset of tensors: how an xarray user would feed
    a DataLoader with it."""

    def __init__(self, path: str, patch: int) -> None:
        self.path, self.patch, self._gen = path, patch, None

    def _generator(self) -> Any:
        if self._gen is None:  # opened in each worker
            import xbatcher

            import zarrdask as zd

            image = zd.open_image(self.path)
            self._gen = xbatcher.BatchGenerator(image, input_dims={"y": self.patch,
                                                                   "x": self.patch})
        return self._gen

    def __len__(self) -> int:
        return len(self._generator())

    def __getitem__(self, i: int) -> torch.Tensor:
        import dask

        # each DataLoader worker reads on its own thread: dask's threaded
        # scheduler pool, inherited through fork from a parent that computed
        # before, would never run a task (the benchmark hung there)
        with dask.config.set(scheduler="synchronous"):
            return torch.from_numpy(self._generator()[i].values)

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path, "patch": self.patch, "_gen": None}


def _fresh_generator(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: each worker opens the slide itself
    instead of using the parent's open arrays."""
    info = torch.utils.data.get_worker_info()
    if info is not None:
        info.dataset._gen = None


def xbatcher_rate(path: str, *, patch: int, batch: int, workers: int, max_s: float) -> float:
    """Patches/s of xbatcher's ``BatchGenerator`` in ``DataLoader(num_workers=
    workers, batch_size=batch)``, over at most ``max_s`` seconds."""
    loader = torch.utils.data.DataLoader(_XbatcherPatches(path, patch), batch_size=batch,
                                         num_workers=workers,
                                         worker_init_fn=_fresh_generator)
    it = iter(loader)
    n = len(next(it))
    t0 = time.perf_counter()
    for b in it:
        n += len(b)
        if time.perf_counter() - t0 > max_s:
            break
    return (n - batch) / (time.perf_counter() - t0)


def _loader_epoch(table: Any, kwargs: dict[str, Any]) -> None:
    from zarrdask.dataset import PatchLoader

    for _ in PatchLoader(table, **kwargs):
        pass


def peak_rss_mb(table: Any, **kwargs: Any) -> float:
    """Peak RSS (MB) of a fresh process running one PatchLoader epoch."""
    import psutil

    ctx = mp.get_context("spawn")  # a clean process: no pages inherited from this one
    proc = ctx.Process(target=_loader_epoch, args=(table, kwargs))
    proc.start()
    peak = 0
    handle = psutil.Process(proc.pid)
    while proc.is_alive():
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            break
        time.sleep(0.02)
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"the PatchLoader run failed (exit code {proc.exitcode})")
    return peak / 2**20


def measure(path: str, table: Any, *, ns: Any, per_chunk: int, large_table: Any = None
            ) -> dict[str, Any]:
    """Every fast-path figure, best of ``ns.repeat`` interleaved rounds."""
    from zarrdask.dataset import PatchDataset, PatchLoader

    threads, workers, batch = ns.threads, ns.workers, ns.batch
    runs: dict[str, list[float]] = {}

    def keep(name: str, value: float, **extra: Any) -> None:
        runs.setdefault(name, []).append(value)
        emit(name, rate=round(value, 1), **extra)

    for round_ in range(ns.repeat):
        keep(f"raw_threads_{threads}", raw_thread_decode(path, threads, ns.passes, per_chunk),
             round=round_)
        keep("raw_threads_1", raw_thread_decode(path, 1, ns.passes, per_chunk), round=round_)
        seq = iterate_batches(PatchLoader(table, batch_size=batch, threads=threads))
        keep("patch_loader_sequential", seq["steady_rate"], round=round_, threads=threads,
             gc_seconds=seq["gc_seconds"], gc_full=seq["gc_full"])
        shuf = iterate_batches(PatchLoader(table, batch_size=batch, threads=threads, shuffle=True,
                                           chunk_buffer=ns.chunk_buffer))
        keep("patch_loader_shuffled", shuf["steady_rate"], round=round_,
             chunk_buffer=ns.chunk_buffer, gc_seconds=shuf["gc_seconds"], gc_full=shuf["gc_full"])
        per_sample = iterate_batches(torch.utils.data.DataLoader(
            PatchDataset(table), batch_size=batch, num_workers=workers))
        keep("dataset_workers", per_sample["steady_rate"], round=round_, workers=workers)
        whole = iterate_batches(torch.utils.data.DataLoader(
            PatchLoader(table, batch_size=batch, threads=1), batch_size=None,
            num_workers=workers))
        keep("loader_in_workers", whole["steady_rate"], round=round_, workers=workers)
        if getattr(ns, "xbatcher", True):
            keep("xbatcher", xbatcher_rate(path, patch=ns.patch, batch=batch, workers=workers,
                                           max_s=ns.peer_seconds), round=round_, workers=workers)
    out: dict[str, Any] = {name: max(values) for name, values in runs.items()}
    out["all_runs"] = runs
    out["threads"] = threads
    out["patch_loader_peak_rss_mb"] = peak_rss_mb(table, batch_size=batch, threads=threads)
    emit("patch_loader_peak_rss", mb=round(out["patch_loader_peak_rss_mb"], 1))
    if large_table is not None:
        out["patch_loader_peak_rss_large_mb"] = peak_rss_mb(large_table, batch_size=batch,
                                                            threads=threads)
        emit("patch_loader_peak_rss_large", mb=round(out["patch_loader_peak_rss_large_mb"], 1),
             patches=len(large_table))
    return out


def summary(fast: dict[str, Any], *, combined_bound: float | None = None,
            peers: dict[str, float] | None = None) -> list[tuple[str, float | None, str]]:
    """``(ratio name, value or None when not measured, target)`` rows."""
    t = fast["threads"]
    seq = fast["patch_loader_sequential"]
    rows: list[tuple[str, float | None, str]] = [
        (f"PatchLoader seq / raw {t}-thread decode", seq / fast[f"raw_threads_{t}"], ">= 0.85"),
        ("PatchLoader shuffled / sequential", fast["patch_loader_shuffled"] / seq, ">= 0.80"),
        ("PatchDataset workers / decode+transport bound",
         fast["dataset_workers"] / combined_bound if combined_bound else None, ">= 0.90"),
        ("PatchLoader / PatchDataset workers", seq / fast["dataset_workers"], "(info)"),
        ("whole batches in workers / per-sample collate",
         fast["loader_in_workers"] / fast["dataset_workers"], "(keep the faster)"),
        ("PatchLoader / zarrdataset 0.2.2 (2 workers, same v2 file)",
         peers["patch_loader_v2"] / peers["zarrdataset"] if peers else None, ">= 3"),
        ("PatchLoader / xbatcher (2 workers)",
         seq / fast["xbatcher"] if fast.get("xbatcher") else None, ">= 15"),
        ("PatchLoader peak RSS MB", fast["patch_loader_peak_rss_mb"], "<= 400"),
    ]
    if "patch_loader_peak_rss_large_mb" in fast:
        rows.append(("peak RSS large / small slide",
                     fast["patch_loader_peak_rss_large_mb"] / fast["patch_loader_peak_rss_mb"],
                     "<= 1.10"))
    return rows


def print_summary(rows: list[tuple[str, float | None, str]]) -> None:
    print(f"\n{'fast path ratio':50s} {'value':>8s}  target")
    for name, value, target in rows:
        shown = "   -   " if value is None else f"{value:8.2f}"
        print(f"{name:50s} {shown:>8s}  {target}")


__all__ = ["emit", "measure", "summary", "print_summary", "raw_thread_decode"]

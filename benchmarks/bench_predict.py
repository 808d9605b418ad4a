"""Prediction-writing benchmark (issue 14: predictions back into OME-NGFF).

Measures how fast ``PredictionWriter`` turns patch predictions into an
OME-NGFF image, against writing the same output chunks straight with zarr
(same shape, chunks and codecs: Blosc-zstd + crc32c), in one run:

1. a 4096² slide (``--quick``: 1024²), every 256² patch with stride 192 (so
   patches overlap and straddle the 512² output chunks), one float32 channel,
   Gaussian blending; predictions are generated in memory (seeded noise), so
   neither the model nor the input read is timed;
2. the writer in one process, and in 2 processes writing their halves of the
   table at once (as DDP ranks do: the last to close combines what the other
   left and builds the pyramid);
3. the baseline: the finished level-0 chunks, already assembled in memory,
   written with ``zarr`` (``array[chunk] = block``), sequentially and from 2
   processes. It does no blending, cropping or bookkeeping: it is the floor
   the writer cannot beat.

Reported: patches/s (writes plus ``close()``, pyramid included, and writes
alone), and the writer/zarr ratios. Usage:
``python benchmarks/bench_predict.py [--quick] [--repeat N]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
import sys
import tempfile
import time
from pathlib import Path
from queue import Empty

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_slide, save, table  # noqa: E402

PATCH, STRIDE, CHUNK, BATCH = 256, 192, 512, 32


def _predictions(table_obj, rows: np.ndarray, seed: int):
    """Batches of (predictions, positions, image_ids) for ``rows``, seeded per batch."""
    from zarrdask.dataset.boxes import read_level_starts

    frame = table_obj.frame
    entry = table_obj.images[0]
    for start in range(0, len(rows), BATCH):
        sel = rows[start:start + BATCH]
        starts = read_level_starts(frame.loc[sel, ["y", "x"]].to_numpy(), entry, ["y", "x"])
        positions = np.stack([starts, starts + PATCH], axis=-1)
        rng = np.random.default_rng(seed + start)
        yield (rng.random((len(sel), 1, PATCH, PATCH), dtype=np.float32), positions,
               np.zeros(len(sel), dtype=np.int64))


def _writer_share(args, barrier=None) -> tuple[float, float]:
    table_path, out, rank, world = args
    from zarrdask.predict import PredictionWriter
    from zarrdask.table import read_table

    tab = read_table(table_path)
    rows = np.array_split(np.arange(len(tab)), world)[rank]
    batches = list(_predictions(tab, rows, seed=rank * 10**6))  # generated before timing
    if barrier is not None:
        barrier.wait()
    t0 = time.time()
    writer = PredictionWriter(tab, out, channels=1, blend="gaussian", chunks=CHUNK)
    for values, positions, ids in batches:
        writer.write(values, positions, ids)
    t_write = time.time() - t0
    writer.close()
    return t0, t_write, time.time()


def _zarr_share(args, barrier=None) -> tuple[float, float]:
    import zarr

    from zarrdask.predict.ngff import codecs

    out, shape, rank, world = args
    grid = [-(-s // CHUNK) for s in shape]
    chunks = np.array_split(np.arange(grid[0] * grid[1]), world)[rank]
    rng = np.random.default_rng(rank)
    blocks = {int(c): rng.random((1, CHUNK, CHUNK), dtype=np.float32) for c in chunks}
    if rank == 0:
        zarr.create_array(out, shape=(1, *shape), chunks=(1, CHUNK, CHUNK), dtype="float32",
                          fill_value=np.nan, overwrite=True, **codecs())
    else:
        while not Path(out, "zarr.json").exists():
            time.sleep(0.01)
    arr = zarr.open_array(out, mode="r+")
    if barrier is not None:
        barrier.wait()
    t0 = time.time()
    for c, block in blocks.items():
        i, j = divmod(c, grid[1])
        ys = slice(i * CHUNK, min((i + 1) * CHUNK, shape[0]))
        xs = slice(j * CHUNK, min((j + 1) * CHUNK, shape[1]))
        arr[:, ys, xs] = block[:, :ys.stop - ys.start, :xs.stop - xs.start]
    return t0, time.time()


def _child(fn, job, barrier, queue) -> None:
    queue.put(fn(job, barrier))


def _parallel(fn, jobs) -> float:
    """Wall time from the common start (a barrier, after each process has
    imported and prepared its data) to the last process's end."""
    ctx = multiprocessing.get_context("spawn")
    barrier, queue = ctx.Barrier(len(jobs)), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(fn, job, barrier, queue)) for job in jobs]
    for p in procs:
        p.start()
    results = []
    try:
        while len(results) < len(procs):
            try:
                results.append(queue.get(timeout=5))
            except Empty:
                dead = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
                if dead:
                    raise RuntimeError(f"a benchmark process failed (exit codes {dead})") from None
    finally:
        for p in procs:
            p.join(timeout=60)
            if p.is_alive():
                p.kill()
    return max(r[-1] for r in results) - min(r[0] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeat", type=int, default=1, help="best of N")
    args = parser.parse_args()
    size = 1024 if args.quick else 4096
    slide = ensure_slide(size, chunk=CHUNK)

    import zarrdask as zds

    work = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    try:
        tab = zds.build_table([slide], patch_size=PATCH, stride=STRIDE,
                              allow_incomplete_patches=True)
        table_path = tab.to_parquet(work / "table.parquet")
        n = len(tab)
        shape = (size, size)
        best: dict[str, float] = {}

        def keep(name: str, seconds: float) -> None:
            best[name] = min(best.get(name, float("inf")), seconds)

        for r in range(args.repeat):
            out = work / f"seq{r}"
            t0, t_write, t_end = _writer_share((table_path, str(out), 0, 1))
            keep("writer_seq_write", t_write)
            keep("writer_seq_total", t_end - t0)
            out2 = work / f"par{r}"
            keep("writer_2proc_total",
                 _parallel(_writer_share, [(table_path, str(out2), k, 2) for k in range(2)]))
            n_chunks = (-(-size // CHUNK)) ** 2
            t0, t_end = _zarr_share((str(work / f"z{r}.zarr"), shape, 0, 1))
            keep("zarr_seq", t_end - t0)
            keep("zarr_2proc", _parallel(_zarr_share, [(str(work / f"zp{r}.zarr"), shape, k, 2)
                                                       for k in range(2)]))
            shutil.rmtree(out), shutil.rmtree(out2)
        rate = {k: n / v for k, v in best.items()}
        result = {"size": size, "patch": PATCH, "stride": STRIDE, "chunk": CHUNK,
                  "patches": n, "output_chunks": n_chunks, "seconds": best,
                  "patches_per_s": rate,
                  "ratio_seq_total_vs_zarr": best["zarr_seq"] / best["writer_seq_total"],
                  "ratio_seq_write_vs_zarr": best["zarr_seq"] / best["writer_seq_write"],
                  "ratio_2proc_vs_zarr": best["zarr_2proc"] / best["writer_2proc_total"]}
        save("predict", result)
        print(f"prediction writing: {size}² slide, {n} patches of {PATCH}² (stride {STRIDE}), "
              f"{n_chunks} output chunks of {CHUNK}², float32, Gaussian blend")
        print(table([
            ("writer, 1 process, writes only", f"{rate['writer_seq_write']:.0f} patches/s"),
            ("writer, 1 process, writes + close (pyramid)", f"{rate['writer_seq_total']:.0f} patches/s"),
            ("writer, 2 processes, wall time to complete image", f"{rate['writer_2proc_total']:.0f} patches/s"),
            ("zarr, same chunks assembled, 1 process", f"{rate['zarr_seq']:.0f} patches/s (equiv.)"),
            ("zarr, same chunks assembled, 2 processes", f"{rate['zarr_2proc']:.0f} patches/s (equiv.)"),
            ("writer / zarr, 1 process (writes + close)", f"{result['ratio_seq_total_vs_zarr']:.2f}"),
            ("writer / zarr, 1 process (writes only)", f"{result['ratio_seq_write_vs_zarr']:.2f}"),
            ("writer / zarr, 2 processes", f"{result['ratio_2proc_vs_zarr']:.2f}"),
        ]))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Open benchmark: opening reads metadata only, and reading costs what zarr costs.

Measures, in this process, against plain zarr-python on the same data:

1. **open**: time to open a 3 x 65536 x 65536 RGB OME-NGFF pyramid (zarr v3,
   8 levels, chunks 512²) whose chunks were never written, so anything beyond
   metadata would show: ``zarrdask.open_pyramid`` and ``zarrdask.open_image``
   against ``zarr.open_group`` followed by opening every level array (what a
   zarr user needs to know the pyramid), with and without consolidated
   metadata. Median of ``--repeats`` calls after one warm-up.
2. **read**: throughput (decompressed MB/s, 1 MB = 10^6 bytes) of reading
   level 0 of a written synthetic slide (``write_synthetic_slide``, Blosc-zstd,
   ``--size``², chunks 512²) chunk by chunk, single-threaded: raw
   ``zarr.Array[block slices]`` for every storage chunk, against
   ``open_image(path).data`` written into a discarding sink by ``da.store``
   (one graph, synchronous scheduler) and computed block by block
   (``.blocks[i].compute(scheduler="synchronous")``). Opening is not timed
   here (it is step 1). Three passes (interleaved: raw, store, blocks) after
   one warm-up read, median reported.

Usage: ``python benchmarks/bench_open.py [--quick] [--size N] [--repeats N]``.
Writes ``benchmarks/results/open.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask.array as da
import numpy as np
import zarr

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import DATA, ensure_slide, save, table  # noqa: E402

import zarrdask  # noqa: E402

#: Targets checked (printed as ok / MISS; the JSON holds the figures).
TARGETS = {
    "open_pyramid_ms": 100.0,  # 65536² pyramid, metadata only, at most this
    "open_vs_zarr_max": 5.0,  # open_pyramid / (zarr.open_group + levels), at most this
    "read_ratio_min": 0.8,  # zarrdask (da.store) MB/s / raw zarr MB/s, at least this
}

EMPTY_SIZE = 65536
EMPTY_LEVELS = 8
CHUNK = 512


def write_empty_pyramid(path: Path, *, consolidated: bool) -> str:
    """Write the metadata of an RGB OME-NGFF 0.5 pyramid of ``EMPTY_SIZE``²
    pixels and ``EMPTY_LEVELS`` levels without writing any chunk.

    Parameters
    ----------
    path : Path
        Output ``.zarr`` folder (replaced).
    consolidated : bool
        Whether to consolidate the metadata into the root ``zarr.json``.

    Returns
    -------
    str
        The path written.
    """
    group = zarr.open_group(path, mode="w", zarr_format=3)
    datasets = []
    for i in range(EMPTY_LEVELS):
        n = EMPTY_SIZE >> i
        group.create_array(str(i), shape=(3, n, n), chunks=(3, CHUNK, CHUNK), dtype="uint8",
                           dimension_names=("c", "y", "x"))
        datasets.append({"path": str(i), "coordinateTransformations": [
            {"type": "scale", "scale": [1.0, 0.25 * 2**i, 0.25 * 2**i]}]})
    group.attrs["ome"] = {"version": "0.5", "multiscales": [{
        "axes": [{"name": "c", "type": "channel"},
                 {"name": "y", "type": "space", "unit": "micrometer"},
                 {"name": "x", "type": "space", "unit": "micrometer"}],
        "datasets": datasets,
    }]}
    if consolidated:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # v3 consolidation is not in the spec yet
            zarr.consolidate_metadata(path)
    return str(path)


def median_seconds(fn: Callable[[], Any], repeats: int) -> float:
    """Median wall time of ``fn()`` over ``repeats`` calls, after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def bench_open(repeats: int) -> dict[str, Any]:
    """Open times (seconds) of the empty 65536² pyramid, plain and consolidated."""
    out: dict[str, Any] = {"shape": [3, EMPTY_SIZE, EMPTY_SIZE], "levels": EMPTY_LEVELS,
                           "chunk": CHUNK, "repeats": repeats}
    for label, consolidated in (("plain", False), ("consolidated", True)):
        path = write_empty_pyramid(DATA / f"empty_{EMPTY_SIZE}_{label}.zarr",
                                   consolidated=consolidated)
        chunk_files = [p for p in Path(path).rglob("*") if p.is_file() and p.name != "zarr.json"]
        assert not chunk_files, f"{path} holds chunk files: {chunk_files[:3]}"

        def raw_levels(path: str = path) -> list:
            group = zarr.open_group(path, mode="r")
            return [group[str(i)] for i in range(EMPTY_LEVELS)]

        def check(path: str = path) -> None:
            tree = zarrdask.open_pyramid(path)
            levels = [tree[name]["image"].shape for name in tree.attrs["levels"]]
            expected = [tuple(a.shape) for a in raw_levels(path)]
            assert levels == expected, (levels, expected)

        check()
        res = {
            "open_pyramid_s": median_seconds(lambda p=path: zarrdask.open_pyramid(p), repeats),
            "open_image_s": median_seconds(lambda p=path: zarrdask.open_image(p), repeats),
            "zarr_open_group_levels_s": median_seconds(raw_levels, repeats),
            "zarr_open_group_s": median_seconds(lambda p=path: zarr.open_group(p, mode="r"),
                                                repeats),
        }
        res["pyramid_vs_zarr"] = res["open_pyramid_s"] / res["zarr_open_group_levels_s"]
        res["image_vs_zarr"] = res["open_image_s"] / res["zarr_open_group_levels_s"]
        out[label] = res
    return out


class _Sink:
    """A ``da.store`` target that keeps nothing and counts bytes."""

    def __init__(self) -> None:
        self.nbytes = 0

    def __setitem__(self, key: Any, value: np.ndarray) -> None:
        self.nbytes += value.nbytes


def _block_slices(shape: tuple[int, ...], chunks: tuple[int, ...]) -> list[tuple[slice, ...]]:
    ranges = [range(0, s, c) for s, c in zip(shape, chunks, strict=True)]
    grids = np.meshgrid(*[np.arange(len(r)) for r in ranges], indexing="ij")
    out = []
    for idx in zip(*(g.ravel() for g in grids), strict=True):
        out.append(tuple(slice(r[i], min(r[i] + c, s))
                         for r, i, c, s in zip(ranges, idx, chunks, shape, strict=True)))
    return out


def read_raw(z: zarr.Array) -> int:
    """Read every storage chunk of ``z`` with zarr-python; returns bytes read."""
    return sum(z[sl].nbytes for sl in _block_slices(z.shape, z.chunks))


def read_store(data: da.Array) -> int:
    """Compute ``data`` into a discarding sink with ``da.store`` (one graph)."""
    sink = _Sink()
    da.store(data, sink, lock=False, scheduler="synchronous")
    return sink.nbytes


def read_blocks(data: da.Array) -> int:
    """Compute ``data`` one block at a time (one graph per block)."""
    return sum(data.blocks[idx].compute(scheduler="synchronous").nbytes
               for idx in np.ndindex(*data.numblocks))


def verify_same_pixels(path: str, samples: int = 6) -> None:
    """A few blocks read both ways must be identical (not timed)."""
    z = zarr.open_array(f"{path}/0", mode="r")
    data = zarrdask.open_image(path).data
    slices = _block_slices(z.shape, z.chunks)
    rng = np.random.default_rng(0)
    for i in rng.choice(len(slices), size=min(samples, len(slices)), replace=False):
        np.testing.assert_array_equal(data[slices[i]].compute(scheduler="synchronous"),
                                      z[slices[i]])


def bench_read(size: int, passes: int = 3) -> dict[str, Any]:
    """Throughput of the three ways of reading level 0 of a ``size``² slide."""
    path = ensure_slide(size, chunk=CHUNK)
    verify_same_pixels(path)
    nbytes = 3 * size * size
    ways: dict[str, tuple[Callable[[], Any], Callable[[Any], int]]] = {
        "raw_zarr": (lambda: zarr.open_array(f"{path}/0", mode="r"), read_raw),
        "zarrdask_store": (lambda: zarrdask.open_image(path).data, read_store),
        "zarrdask_blocks": (lambda: zarrdask.open_image(path).data, read_blocks),
    }
    read_raw(zarr.open_array(f"{path}/0", mode="r"))  # warm the page cache once
    seconds: dict[str, list[float]] = {k: [] for k in ways}
    for _ in range(passes):
        for name, (open_fn, read_fn) in ways.items():
            opened = open_fn()  # opening is timed by bench_open, not here
            t0 = time.perf_counter()
            got = read_fn(opened)
            seconds[name].append(time.perf_counter() - t0)
            assert got == nbytes, f"{name} read {got} bytes, expected {nbytes}"
    out: dict[str, Any] = {"path": path, "shape": [3, size, size], "chunk": CHUNK,
                           "megabytes": nbytes / 1e6, "passes": passes}
    for name, times in seconds.items():
        med = statistics.median(times)
        out[name] = {"seconds": times, "median_s": med, "mb_per_s": nbytes / 1e6 / med}
    raw = out["raw_zarr"]["mb_per_s"]
    out["store_vs_raw"] = out["zarrdask_store"]["mb_per_s"] / raw
    out["blocks_vs_raw"] = out["zarrdask_blocks"]["mb_per_s"] / raw
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 2048² slide and 5 open repeats")
    parser.add_argument("--size", type=int, default=None,
                        help="edge of the written slide for the read test (default 8192)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="calls per open timing (default 25, 5 with --quick)")
    args = parser.parse_args()
    size = args.size or (2048 if args.quick else 8192)
    repeats = args.repeats or (5 if args.quick else 25)

    result: dict[str, Any] = {
        "zarrdask": zarrdask.__version__, "zarr": zarr.__version__,
        "python": platform.python_version(), "machine": platform.machine(),
        "quick": args.quick, "targets": TARGETS,
    }
    result["open"] = bench_open(repeats)
    result["read"] = bench_read(size)
    plain = result["open"]["plain"]
    read = result["read"]
    checks = {
        "open_pyramid_ms": plain["open_pyramid_s"] * 1e3 <= TARGETS["open_pyramid_ms"],
        "open_vs_zarr_max": plain["pyramid_vs_zarr"] <= TARGETS["open_vs_zarr_max"],
        "read_ratio_min": read["store_vs_raw"] >= TARGETS["read_ratio_min"],
    }
    result["targets_met"] = checks
    path = save("open", result)

    def ok(name: str) -> str:
        return "ok" if checks[name] else "MISS"

    rows = []
    for label in ("plain", "consolidated"):
        o = result["open"][label]
        rows += [
            (f"open 65536² x{EMPTY_LEVELS} levels, {label}: open_pyramid",
             f"{o['open_pyramid_s'] * 1e3:7.2f} ms  ({o['pyramid_vs_zarr']:.2f}x zarr)"),
            (f"  {label}: open_image", f"{o['open_image_s'] * 1e3:7.2f} ms  "
                                        f"({o['image_vs_zarr']:.2f}x zarr)"),
            (f"  {label}: zarr.open_group + {EMPTY_LEVELS} level arrays",
             f"{o['zarr_open_group_levels_s'] * 1e3:7.2f} ms"),
            (f"  {label}: zarr.open_group alone", f"{o['zarr_open_group_s'] * 1e3:7.2f} ms"),
        ]
    rows += [
        (f"read {size}² level 0 ({read['megabytes']:.0f} MB), raw zarr",
         f"{read['raw_zarr']['mb_per_s']:7.1f} MB/s"),
        ("  zarrdask open_image().data, da.store to sink",
         f"{read['zarrdask_store']['mb_per_s']:7.1f} MB/s  ({read['store_vs_raw']:.2f}x raw)"),
        ("  zarrdask open_image().data, .blocks[i].compute()",
         f"{read['zarrdask_blocks']['mb_per_s']:7.1f} MB/s  ({read['blocks_vs_raw']:.2f}x raw)"),
        (f"target: open_pyramid <= {TARGETS['open_pyramid_ms']:.0f} ms", ok("open_pyramid_ms")),
        (f"target: open_pyramid <= {TARGETS['open_vs_zarr_max']:.0f}x zarr open",
         ok("open_vs_zarr_max")),
        (f"target: da.store read >= {TARGETS['read_ratio_min']:.1f}x raw zarr",
         ok("read_ratio_min")),
    ]
    print(table(rows))
    print(f"  results: {path}")
    print(json.dumps({"targets_met": checks}))


if __name__ == "__main__":
    main()

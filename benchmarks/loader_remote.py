"""``PatchLoader`` on S3 with added latency, against the same slide on disk.

Run::

    python benchmarks/loader_remote.py [--size 8192] [--delay-ms 20] [--repeat 2] [--quick]

In one run, interleaved round by round, on one synthetic slide (zarr v2,
512² zstd chunks, every 256² patch of level 0):

* ``local``: ``PatchLoader(threads=2)`` on the slide on local disk;
* ``raw_s3_fetch`` / ``raw_s3_fetch_latency``: every chunk fetched (not
  decoded) by one batched asynchronous ``s3fs.cat``, direct and through the
  proxy: what the loopback server and the S3 client deliver at most here;
* ``s3``: the same table read from moto's S3 server on loopback (its own
  process, ``moto_server``), no added latency: what the server and the
  HTTP client cost on this machine;
* ``s3_latency``: the same through :mod:`latency_proxy` (its own process),
  which adds ``--delay-ms`` to every request, with the default options and
  with ``read_threads`` raised (``--read-threads``).

Both servers share the machine's cores with the loader, so ``s3`` / ``local``
is what the loopback server costs here, and ``s3_latency`` / ``s3`` is how
much of the latency the loader hides. The target of issue 11 is
``s3_latency`` (default settings) >= 0.70 of ``local``. One JSON line per
measurement, then a table; results in ``benchmarks/results/loader_remote.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from typing import Any

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from common import RESULTS, ensure_slide  # noqa: E402
from loader_fast_path import emit, iterate_batches  # noqa: E402

KEY, SECRET, REGION, BUCKET = "AKIABENCHMARKKEY0000", "benchmark-secret", "us-east-1", "bench"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout:.0f} s")


@contextmanager
def moto_server():
    """``moto_server`` in its own process; yields its endpoint URL."""
    port = _free_port()
    exe = os.path.join(os.path.dirname(sys.executable), "moto_server")
    proc = subprocess.Popen([exe, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


@contextmanager
def latency_proxy(endpoint: str, delay_ms: float):
    """:mod:`latency_proxy` in its own process in front of ``endpoint``."""
    upstream = endpoint.split("://", 1)[1]
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "latency_proxy.py"),
                             "--upstream", upstream, "--delay-ms", str(delay_ms)],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = int(proc.stdout.readline())
        _wait_port(port)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def storage_options(endpoint: str) -> dict[str, Any]:
    return {"endpoint_url": endpoint, "key": KEY, "secret": SECRET,
            "client_kwargs": {"region_name": REGION}}


def upload(path: str, endpoint: str) -> str:
    """Copy the slide folder into the bucket; returns its ``s3://`` URL."""
    from concurrent.futures import ThreadPoolExecutor

    import boto3

    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION,
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET)
    client.create_bucket(Bucket=BUCKET)
    name = os.path.basename(path.rstrip("/"))
    files = [os.path.join(folder, f) for folder, _, names in os.walk(path) for f in names]

    def put(full: str) -> None:
        key = f"{name}/{os.path.relpath(full, path)}"
        client.upload_file(full, BUCKET, key)

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, files))
    return f"s3://{BUCKET}/{name}"


def raw_fetch_rate(url: str, endpoint: str, per_chunk: int) -> float:
    """Patch-equivalents/s of fetching every level-0 chunk with one batched,
    asynchronous ``s3fs.cat`` (no decode): what the server and the client
    library deliver at most through ``endpoint``."""
    import s3fs

    fs = s3fs.S3FileSystem(**storage_options(endpoint), skip_instance_cache=True)
    keys = [k for k in fs.find(f"{url}/0") if os.path.basename(k)[:1].isdigit()]
    t0 = time.perf_counter()
    fs.cat(keys)
    return len(keys) * per_chunk / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    import zarrdask as zd

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=8192, help="slide edge in pixels")
    parser.add_argument("--delay-ms", type=float, default=20.0)
    parser.add_argument("--threads", type=int, default=2, help="PatchLoader threads")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--read-threads", type=int, default=32,
                        help="the raised read_threads setting measured beside the default")
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--quick", action="store_true", help="4096² slide, one round")
    parser.add_argument("--out", default=os.path.join(RESULTS, "loader_remote.json"))
    ns = parser.parse_args(argv)
    if ns.quick:
        ns.size, ns.repeat = 4096, 1
    path = ensure_slide(ns.size)
    local = zd.build_table(path, patch_size=256)
    runs: dict[str, list[float]] = {}

    def keep(name: str, batches: Any, **extra: Any) -> None:
        rate = iterate_batches(batches)["steady_rate"]
        runs.setdefault(name, []).append(rate)
        emit(name, rate=round(rate, 1), **extra)

    with moto_server() as endpoint:
        url = upload(path, endpoint)
        remote = zd.build_table({"source": url, "storage_options": storage_options(endpoint)},
                                patch_size=256)
        if len(remote) != len(local):
            raise RuntimeError(f"remote table has {len(remote)} rows, local {len(local)}")
        with latency_proxy(endpoint, ns.delay_ms) as slow:
            for round_ in range(ns.repeat):
                for name, where in (("raw_s3_fetch", endpoint), ("raw_s3_fetch_latency", slow)):
                    rate = raw_fetch_rate(url, where, per_chunk=4)
                    runs.setdefault(name, []).append(rate)
                    emit(name, rate=round(rate, 1), round=round_)
                keep("local", zd.PatchLoader(local, batch_size=ns.batch, threads=ns.threads),
                     round=round_)
                keep("s3", zd.PatchLoader(remote, batch_size=ns.batch, threads=ns.threads,
                                          storage_options=storage_options(endpoint)),
                     round=round_)
                keep("s3_latency", zd.PatchLoader(remote, batch_size=ns.batch, threads=ns.threads,
                                                  storage_options=storage_options(slow)),
                     round=round_, delay_ms=ns.delay_ms)
                keep("s3_latency_more_read_threads", zd.PatchLoader(
                    remote, batch_size=ns.batch, threads=ns.threads, read_threads=ns.read_threads,
                    storage_options=storage_options(slow)),
                    round=round_, delay_ms=ns.delay_ms, read_threads=ns.read_threads)
    best = {name: max(values) for name, values in runs.items()}
    ratios = {
        "raw s3 fetch / local": best["raw_s3_fetch"] / best["local"],
        "s3 / raw s3 fetch": best["s3"] / best["raw_s3_fetch"],
        "s3_latency / raw s3 fetch with latency": best["s3_latency"] / best["raw_s3_fetch_latency"],
        "s3 / local": best["s3"] / best["local"],
        "s3_latency / s3": best["s3_latency"] / best["s3"],
        "s3_latency / local (target >= 0.70)": best["s3_latency"] / best["local"],
        f"s3_latency read_threads={ns.read_threads} / local":
            best["s3_latency_more_read_threads"] / best["local"],
    }
    result = {"size": ns.size, "patches": len(local), "delay_ms": ns.delay_ms,
              "threads": ns.threads, "best": best, "runs": runs, "ratios": ratios}
    os.makedirs(os.path.dirname(ns.out), exist_ok=True)
    with open(ns.out, "w") as fh:
        json.dump(result, fh, indent=2)
    print("\n| measurement (best of rounds) | patches/s |\n| --- | ---: |")
    for name, value in best.items():
        print(f"| {name} | {value:.0f} |")
    print("\n| ratio | measured |\n| --- | ---: |")
    for name, value in ratios.items():
        print(f"| {name} | {value:.2f} |")
    return result


if __name__ == "__main__":
    main()

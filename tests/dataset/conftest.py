"""Fixtures of the dataset tests: small synthetic slides and grid tables
built directly (positions on a regular grid), independent of build_table."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd
import pytest
import zarr

from zarrdask.io import open_image
from zarrdask.table import PatchTable, source_entry


@pytest.fixture(scope="session")
def slide3(tmp_path_factory) -> str:
    """1024² RGB, chunks 256², 2 levels, zarr v3 (OME-NGFF 0.5)."""
    from zarrdask.datasets import write_synthetic_slide

    path = tmp_path_factory.mktemp("ds") / "slide3.zarr"
    return write_synthetic_slide(path, size=1024, chunk=256, levels=2, seed=5, zarr_format=3)


@pytest.fixture(scope="session")
def slide2(tmp_path_factory) -> str:
    """1024² RGB, chunks 256², 2 levels, zarr v2 (OME-NGFF 0.4)."""
    from zarrdask.datasets import write_synthetic_slide

    path = tmp_path_factory.mktemp("ds") / "slide2.zarr"
    return write_synthetic_slide(path, size=1024, chunk=256, levels=2, seed=6, zarr_format=2)


@pytest.fixture(scope="session")
def pixels() -> Callable[[str, int], np.ndarray]:
    """``pixels(path, level)``: the whole stored level as numpy (cached)."""
    cache: dict[tuple[str, int], np.ndarray] = {}

    def get(path: str, level: int = 0) -> np.ndarray:
        if (path, level) not in cache:
            cache[(path, level)] = zarr.open_array(f"{path}/{level}", mode="r")[:]
        return cache[(path, level)]

    return get


def _grid_starts(extent: int, patch: int, stride: int, incomplete: bool) -> np.ndarray:
    stop = extent if incomplete else extent - patch + 1
    return np.arange(0, max(stop, 0), stride, dtype=np.int64)


def build_grid_table(images: Sequence[Any], *, patch: int = 64, stride: int | None = None,
                     pad: int = 0, level: int = 0, labels: Sequence[Any] | None = None,
                     extra: dict[str, Sequence[Any]] | None = None, allow_incomplete: bool = False,
                     axes: str | None = None, offset: int = 0, table_hash: str = "test") -> PatchTable:
    """A coordinate table over ``images`` (paths or arrays) like build_table's.

    Positions are a regular grid (read-level pixels, starting at ``offset``)
    converted to level-0 pixels; ``chunk_id`` is the row-major chunk of the
    top-left at the read level.
    """
    stride = stride or patch
    entries, frames, sources = [], [], []
    for image_id, item in enumerate(images):
        kwargs = {"level": level} if isinstance(item, str) else {"axes": axes}
        arr = open_image(item, **kwargs)
        entry = source_entry(arr, image_id=image_id)
        entries.append(entry)
        sources.append(None if isinstance(item, str) else arr)
        h, w = entry["shape"]["y"], entry["shape"]["x"]
        cy, cx = entry["chunks"]["y"], entry["chunks"]["x"]
        ys = _grid_starts(h - offset, patch, stride, allow_incomplete) + offset
        xs = _grid_starts(w - offset, patch, stride, allow_incomplete) + offset
        yy, xx = (a.ravel() for a in np.meshgrid(ys, xs, indexing="ij"))
        to0 = {d: entry["scale"][d] / entry["scale0"][d] for d in ("y", "x")}
        frame = pd.DataFrame({
            "image_id": image_id,
            "y": np.rint(yy * to0["y"]).astype(np.int64),
            "x": np.rint(xx * to0["x"]).astype(np.int64),
            "chunk_id": (yy // cy) * math.ceil(w / cx) + xx // cx,
            "coverage": np.linspace(0.0, 1.0, len(yy), dtype=np.float32),
        })
        frame = frame.sort_values(["chunk_id", "y", "x"], kind="stable")
        frames.append(frame)
    modalities: dict[str, Any] = {"images": entries, "labels": [None] * len(entries),
                                  "masks": [None] * len(entries)}
    if labels is not None:
        modalities["labels"] = [_modality_entry(lab) for lab in labels]
    for name, items in (extra or {}).items():
        modalities[name] = [_modality_entry(it) for it in items]
    meta = {
        "grid": {"dims": ["y", "x"], "patch": {"y": patch, "x": patch},
                 "stride": {"y": stride, "x": stride}, "pad": {"y": pad, "x": pad},
                 "min_area": 1, "allow_incomplete": allow_incomplete},
        "images": entries,
        "modalities": modalities,
        "hash": table_hash,
    }
    frame = pd.concat(frames, ignore_index=True)
    return PatchTable(frame, meta, sources=sources)


def _modality_entry(item: Any) -> Any:
    if item is None or (isinstance(item, dict) and "weak" in item):
        return item
    if isinstance(item, tuple):  # (path, level)
        return source_entry(open_image(item[0], level=item[1]))
    return source_entry(open_image(item))


@pytest.fixture(scope="session")
def make_table() -> Callable[..., PatchTable]:
    """The :func:`build_grid_table` helper."""
    return build_grid_table


def patch_key(sample: dict) -> tuple[int, int, int]:
    """``(image_id, y, x)`` of a sample, to compare sets of patches."""
    pos = np.asarray(sample["position"])
    return (int(sample["image_id"]), int(pos[0, 0]), int(pos[1, 0]))


@pytest.fixture(scope="session")
def key_of() -> Callable[[dict], tuple[int, int, int]]:
    return patch_key


# -- remote stores: the io tests' moto server, and a fault-injecting proxy ----------------

def _load_io_servers() -> Any:
    """tests/io/conftest.py as a module (its S3 server fixtures are reused here)."""
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "io" / "conftest.py"
    spec = importlib.util.spec_from_file_location("_zarrdask_io_servers", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


_io_servers = _load_io_servers()
remote_files = _io_servers.remote_files
s3_server = _io_servers.s3_server


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of a server, whose behaviour can be
    switched at any time (also for connections already open):

    * ``"forward"``: pass bytes both ways;
    * ``"silent"``: accept and read requests, never answer;
    * ``"garbage"``: answer any request with bytes that are not HTTP, then close;
    * ``"reset"``: close the connection at once.
    """

    def __init__(self, host: str, port: int) -> None:
        import socket
        import threading

        self.target = (host, port)
        self.mode = "forward"
        self.requests = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self._held: list = []
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="fault-proxy")
        self._thread.start()

    def _accept(self) -> None:
        import threading

        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: Any) -> None:
        import socket
        import threading

        upstream = None
        try:
            while not self._closed.is_set():
                data = client.recv(65536)
                if not data:
                    return
                self.requests += 1
                mode = self.mode
                if mode == "silent":
                    self._held.append(client)
                    while not self._closed.is_set() and client.recv(65536):
                        pass
                    return
                if mode == "garbage":
                    client.sendall(b"\x00\x01 this is not HTTP \xff\xfe\r\n\r\n")
                    return
                if mode == "reset":
                    return
                if upstream is None:
                    upstream = socket.create_connection(self.target, timeout=30)
                    threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
                upstream.sendall(data)
        except OSError:
            return
        finally:
            for sock in (client, upstream):
                if sock is not None:
                    try:
                        sock.close()
                    except OSError:
                        pass

    def _pump(self, src: Any, dst: Any) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data or self.mode != "forward":
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                try:
                    sock.close()
                except OSError:
                    pass

    def close(self) -> None:
        self._closed.set()
        self._listener.close()
        for sock in self._held:
            try:
                sock.close()
            except OSError:
                pass


@pytest.fixture
def fault_proxy(s3_server):
    """A :class:`FaultProxy` in front of the moto S3 server."""
    from urllib.parse import urlparse

    target = urlparse(s3_server.endpoint_url)
    proxy = FaultProxy(target.hostname, target.port)
    try:
        yield proxy
    finally:
        proxy.close()

"""Real servers on 127.0.0.1 for the remote-source tests.

* :func:`remote_files`: a local folder holding what the servers publish (zarr
  v3 and v2 OME-NGFF slides, a TIFF and a PNG).
* :func:`s3_server`: moto's S3 API server (a real HTTP server speaking the S3
  protocol) with a bucket holding every file of :func:`remote_files`.
* :func:`http_server`: a plain ``http.server`` serving that folder.
* :func:`closed_port`: a loopback port where nothing listens.
* :func:`silent_endpoint`: a loopback socket that accepts connections and
  never answers.
* :func:`garbage_endpoint`: a loopback server answering bytes that are not HTTP.
* :func:`s3_proxy`, :func:`http_proxy`: a :class:`FaultProxy` in front of the
  S3 or HTTP server, switched to silence or garbage while a client reads.

Credentials are fake and travel only through ``storage_options``; nothing is
put in the environment.
"""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

#: Fake credentials of the S3 server; the tests check they never leak.
S3_KEY = "AKIAZARRDASKTESTKEY0"
S3_SECRET = "zarrdask-s3cr3t-must-not-leak-9f3b"
S3_REGION = "us-east-1"


@dataclass(frozen=True)
class RemoteFiles:
    """The local originals of what the test servers publish.

    Attributes
    ----------
    root : Path
        Folder served (its relative paths are the S3 keys and URL paths).
    tiff, png : numpy.ndarray
        Pixels written to ``image.tif`` and ``image.png``.
    """

    root: Path
    tiff: np.ndarray
    png: np.ndarray

    def local(self, name: str) -> str:
        """Local path of ``name`` (e.g. ``"slide_v3.zarr"``)."""
        return str(self.root / name)


@dataclass(frozen=True)
class S3Server:
    """A running S3 API server and the bucket the tests read.

    Attributes
    ----------
    endpoint_url : str
        ``http://127.0.0.1:PORT``.
    bucket : str
        Bucket holding every file of :class:`RemoteFiles` under the same
        relative path.
    key, secret : str
        The fake credentials (the tests check they never leak).
    storage_options : dict
        What ``open_image(..., storage_options=...)`` needs: endpoint and the
        fake credentials.
    """

    endpoint_url: str
    bucket: str
    key: str
    secret: str
    storage_options: dict[str, Any] = field(default_factory=dict)

    def url(self, name: str) -> str:
        """``s3://bucket/name``."""
        return f"s3://{self.bucket}/{name}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def remote_files(tmp_path_factory) -> RemoteFiles:
    """Two small OME-NGFF slides (zarr v3 and v2, 512², chunks 128², 2 levels),
    a 256² zarr v3 slide in a folder without the ``.zarr`` suffix
    (``slide_plain``), a tiled RGB TIFF and an RGB PNG, written to one folder."""
    import tifffile
    from PIL import Image

    from zarrdask.datasets import write_synthetic_slide

    root = tmp_path_factory.mktemp("served")
    write_synthetic_slide(root / "slide_v3.zarr", size=512, chunk=128, levels=2, seed=11,
                          zarr_format=3)
    write_synthetic_slide(root / "slide_v2.zarr", size=512, chunk=128, levels=2, seed=12,
                          zarr_format=2)
    # a store whose name does not say "zarr": found by its metadata documents
    write_synthetic_slide(root / "slide_plain", size=256, chunk=128, levels=1, seed=13,
                          zarr_format=3)
    rng = np.random.default_rng(5)
    tiff = rng.integers(0, 255, size=(96, 160, 3), dtype=np.uint8)
    tifffile.imwrite(root / "image.tif", tiff, tile=(32, 32), photometric="rgb")
    png = rng.integers(0, 255, size=(40, 56, 3), dtype=np.uint8)
    Image.fromarray(png).save(root / "image.png")
    return RemoteFiles(root=root, tiff=tiff, png=png)


@pytest.fixture(scope="session")
def s3_server(remote_files: RemoteFiles) -> Iterator[S3Server]:
    """moto's S3 server on 127.0.0.1 with bucket ``zarrdask-test`` holding
    every file of :func:`remote_files`; stopped after the session."""
    import boto3
    from moto.server import ThreadedMotoServer

    # port 0: the kernel picks a free port, read back with get_host_and_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client(
            "s3", endpoint_url=endpoint, region_name=S3_REGION,
            aws_access_key_id=S3_KEY, aws_secret_access_key=S3_SECRET,
        )
        bucket = "zarrdask-test"
        client.create_bucket(Bucket=bucket)
        for folder, _dirs, files in os.walk(remote_files.root):
            for name in files:
                full = Path(folder) / name
                key = full.relative_to(remote_files.root).as_posix()
                client.upload_file(str(full), bucket, key)
        client.close()
        yield S3Server(
            endpoint_url=endpoint,
            bucket=bucket,
            key=S3_KEY,
            secret=S3_SECRET,
            storage_options={"endpoint_url": endpoint, "key": S3_KEY, "secret": S3_SECRET,
                             "client_kwargs": {"region_name": S3_REGION}},
        )
    finally:
        server.stop()


class _QuietHandler(SimpleHTTPRequestHandler):
    """Static files, without a log line per request on stderr."""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib name
        pass


@pytest.fixture(scope="session")
def http_server(remote_files: RemoteFiles) -> Iterator[str]:
    """``http://127.0.0.1:PORT``: a plain static HTTP server over
    :func:`remote_files` (no listings that zarr could use, no S3 API)."""
    handler = partial(_QuietHandler, directory=str(remote_files.root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="zarrdask-test-http",
                              daemon=True)
    thread.start()
    try:
        host, port = server.server_address[:2]
        yield f"http://{host}:{port}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def closed_port() -> int:
    """A loopback port with nothing listening (connections are refused)."""
    return _free_port()


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a socket that completes TCP handshakes
    (the kernel queues them) but never reads nor answers."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        sock.close()


#: What :class:`FaultProxy` answers in ``"garbage"`` mode: not HTTP at all.
GARBAGE = b"\x00\xffTHIS IS NOT HTTP\r\n\r\n\x13\x37 garbage"


class FaultProxy:
    """A TCP proxy on 127.0.0.1 in front of a real server, whose behaviour
    can be switched while a client uses it.

    Modes: ``"pass"`` forwards bytes both ways; ``"silent"`` accepts
    connections and never answers; ``"garbage"`` answers each connection
    with bytes that are not HTTP and closes it. Switching closes every open
    connection, so clients that keep connections alive meet the new mode.
    """

    def __init__(self, upstream: tuple[str, int] | None, mode: str = "pass") -> None:
        self.upstream = upstream
        self.mode = mode
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        #: connections accepted so far (each a request, or a retry of one)
        self.accepted = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self._thread = threading.Thread(target=self._accept, name="zarrdask-fault-proxy",
                                        daemon=True)
        self._thread.start()

    def set_mode(self, mode: str) -> None:
        """Switch to ``mode`` and drop every open connection."""
        with self._lock:
            self.mode = mode
            conns, self._open = list(self._open), set()
        for conn in conns:
            _close(conn)

    def close(self) -> None:
        """Stop listening and drop every connection."""
        _close(self._listener)
        self.set_mode("closed")
        self._thread.join(timeout=10)

    def _track(self, *conns: socket.socket) -> None:
        with self._lock:
            self._open.update(conns)

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            mode = self.mode
            if mode == "silent":
                self._track(client)  # kept open, never read nor answered
            elif mode == "garbage":
                threading.Thread(target=self._garbage, args=(client,), daemon=True).start()
            elif mode == "pass" and self.upstream is not None:
                try:
                    upstream = socket.create_connection(self.upstream, timeout=10)
                except OSError:
                    _close(client)
                    continue
                upstream.settimeout(None)
                self._track(client, upstream)
                for a, b in ((client, upstream), (upstream, client)):
                    threading.Thread(target=_pump, args=(a, b), daemon=True).start()
            else:
                _close(client)

    @staticmethod
    def _garbage(client: socket.socket) -> None:
        try:
            client.recv(65536)
            client.sendall(GARBAGE)
        except OSError:
            pass
        finally:
            _close(client)


def _pump(source: socket.socket, target: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            target.sendall(data)
    except OSError:
        pass
    finally:
        _close(source)
        _close(target)


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


def _host_port(url: str) -> tuple[str, int]:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return str(parsed.hostname), int(parsed.port or 80)


@pytest.fixture
def s3_proxy(s3_server: S3Server) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the S3 server (``proxy.url`` is the
    ``endpoint_url`` to use)."""
    proxy = FaultProxy(_host_port(s3_server.endpoint_url))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def http_proxy(http_server: str) -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` in front of the static HTTP server."""
    proxy = FaultProxy(_host_port(http_server))
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def silent_proxy() -> Iterator[FaultProxy]:
    """A :class:`FaultProxy` that is silent from the start (it counts the
    connections it accepts)."""
    proxy = FaultProxy(None, mode="silent")
    try:
        yield proxy
    finally:
        proxy.close()


@pytest.fixture
def garbage_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a server that answers every connection
    with bytes that are not HTTP."""
    proxy = FaultProxy(None, mode="garbage")
    try:
        yield proxy.url
    finally:
        proxy.close()

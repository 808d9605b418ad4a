"""The dask cluster of a command: a client of ``--scheduler`` or of a new
LocalCluster, with the dashboard served only when ``--dashboard`` asks for it."""

from __future__ import annotations

import socket
import sys

__all__ = ["SchedulerError", "Cluster", "add_cluster_options", "check_dashboard",
           "DEFAULT_DASHBOARD"]

_SCHEDULER_TIMEOUT = 10  # seconds to reach --scheduler
#: address of ``--dashboard`` given without a value
DEFAULT_DASHBOARD = "127.0.0.1:8787"


class SchedulerError(Exception):
    """``--scheduler`` or ``--dashboard`` cannot be used (unreachable, no
    workers, bokeh missing)."""


def add_cluster_options(p, *, threads: bool) -> None:
    """``--workers`` (``--threads``) of the LocalCluster and ``--dashboard``."""
    from .args import at_least

    p.add_argument("--workers", type=at_least(1), default=2,
                   help="LocalCluster worker processes")
    if threads:
        p.add_argument("--threads", type=at_least(1), default=1,
                       help="threads per LocalCluster worker")
    p.add_argument("--dashboard", nargs="?", const=DEFAULT_DASHBOARD, default=None,
                   metavar="ADDRESS",
                   help="serve the dask dashboard (needs bokeh: pip install "
                        f"'zarrdask[interactive]') and print its link; ADDRESS defaults to "
                        f"{DEFAULT_DASHBOARD} (a free port if that one is taken)")


def check_dashboard(address: str | None) -> None:
    """Before any cluster starts: ``--dashboard`` needs bokeh."""
    if address is None:
        return
    try:
        import bokeh  # noqa: F401
    except ImportError:
        raise SchedulerError(
            "argument --dashboard: the dask dashboard needs bokeh, which is not installed; "
            "pip install 'zarrdask[interactive]' (or bokeh>=3.1), or omit --dashboard"
        ) from None


def _free(address: str) -> str:
    """``address`` when its port is free, else the same host on a free port
    (instead of distributed's "Port 8787 is already in use" warning)."""
    host, _, port = address.rpartition(":")
    try:
        with socket.socket() as s:
            s.bind((host or "127.0.0.1", int(port)))
    except (OSError, ValueError):
        return f"{host}:0"
    return address


def _probe(address: str) -> None:
    """Fail fast on a TCP address nothing listens on (distributed itself
    retries until its timeout)."""
    from distributed.comm import parse_address
    from distributed.comm.addressing import parse_host_port

    protocol, location = parse_address(address)
    if protocol not in ("tcp", "tls"):
        return
    host, port = parse_host_port(location, 8786)
    with socket.create_connection((host, port), timeout=_SCHEDULER_TIMEOUT):
        pass


def _connect(address: str, wait_workers: float):
    """A client of the scheduler at ``address``, with at least one worker
    within ``wait_workers`` seconds."""
    from distributed import Client

    try:
        _probe(address)
        client = Client(address, timeout=_SCHEDULER_TIMEOUT)
    except (OSError, TimeoutError, ValueError) as exc:
        reason = " ".join(str(exc).split()) or f"no answer within {_SCHEDULER_TIMEOUT} s"
        raise SchedulerError(
            f"argument --scheduler: cannot reach a dask scheduler at {address} "
            f"({type(exc).__name__}: {reason}); "
            "start one with `dask scheduler` and pass its address (tcp://host:8786), or omit "
            "--scheduler for a local cluster") from None
    try:
        client.wait_for_workers(1, timeout=wait_workers)
    except (OSError, TimeoutError) as exc:
        client.close()
        raise SchedulerError(
            f"argument --scheduler: the scheduler at {address} has no worker after "
            f"{wait_workers:g} s (--wait-workers); start one with `dask worker {address}`"
        ) from exc
    return client


class Cluster:
    """A distributed client on ``scheduler`` or on a new LocalCluster.

    Parameters
    ----------
    scheduler : str or None
        Address of a running scheduler; None starts a LocalCluster.
    workers, threads : int
        LocalCluster worker processes and threads per worker.
    wait_workers : float
        Seconds to wait for a worker on ``scheduler``.
    dashboard : str or None
        Serve the dashboard of the LocalCluster on this address and print its
        link (on ``scheduler``: print that scheduler's link). None: no
        dashboard; the scheduler's HTTP server takes a free port.
    log : file
        Where the dashboard link is printed.
    """

    def __init__(self, scheduler: str | None, workers: int, threads: int, *,
                 wait_workers: float = 60, dashboard: str | None = None,
                 log=sys.stdout) -> None:
        self.scheduler, self.workers, self.threads = scheduler, workers, threads
        self.wait_workers, self.dashboard, self.log = wait_workers, dashboard, log
        self.cluster = None

    def __enter__(self):
        from distributed import Client, LocalCluster

        if self.scheduler:
            self.client = _connect(self.scheduler, self.wait_workers)
        else:
            if self.dashboard is None:
                options = {"dashboard_address": "127.0.0.1:0",
                           "scheduler_kwargs": {"dashboard": False}}
            else:
                options = {"dashboard_address": _free(self.dashboard)}
            self.cluster = LocalCluster(n_workers=self.workers, threads_per_worker=self.threads,
                                        processes=True, **options)
            self.client = Client(self.cluster)
        if self.dashboard is not None:
            link = self.client.dashboard_link
            print(f"dask dashboard: {link}" if link else
                  "dask dashboard: the scheduler serves none", file=self.log, flush=True)
        return self.client

    def __exit__(self, *exc) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

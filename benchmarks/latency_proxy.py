"""A TCP proxy that adds a fixed delay to every request it forwards.

Run as its own process, so that its work does not compete with the measured
process for the GIL::

    python benchmarks/latency_proxy.py --upstream 127.0.0.1:PORT --delay-ms 20

It prints the port it listens on (one line) and forwards until killed. Each
time a client sends bytes (an HTTP request on a keep-alive connection, which
arrives in one segment for a GET), the proxy waits ``--delay-ms`` before
passing them upstream; answers flow back undelayed. Every request of a
client therefore takes the added latency once, as a distant object store
adds its round trip.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time


def _pump(source: socket.socket, target: socket.socket, delay: float) -> None:
    try:
        while True:
            data = source.recv(1 << 16)
            if not data:
                break
            if delay:
                time.sleep(delay)
            target.sendall(data)
    except OSError:
        pass
    finally:
        for sock in (source, target):
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()


def serve(upstream: tuple[str, int], delay_ms: float, port: int = 0) -> None:
    """Accept connections on 127.0.0.1:``port`` forever (see the module docs)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(256)
    print(listener.getsockname()[1], flush=True)
    delay = delay_ms / 1000
    while True:
        client, _ = listener.accept()
        server = socket.create_connection(upstream)
        for sock in (client, server):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(target=_pump, args=(client, server, delay), daemon=True).start()
        threading.Thread(target=_pump, args=(server, client, 0.0), daemon=True).start()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upstream", required=True, help="HOST:PORT to forward to")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="added latency per request")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0: any free)")
    ns = parser.parse_args(argv)
    host, _, port = ns.upstream.rpartition(":")
    serve((host, int(port)), ns.delay_ms, ns.port)


if __name__ == "__main__":
    sys.exit(main())

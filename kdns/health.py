"""The operator's HTTP endpoint: ``/health``, ``/ready`` and ``/metrics``.

* ``/health`` is 200 when the process is alive **and the UDP serving loop answers**: each request
  sends one real DNS query (``dns-version.<zone> TXT``) to our own listener and waits for the
  reply, so a wedged serving thread fails the liveness probe.
* ``/ready`` is 200 once every initial list has completed and a table is published (R8.2).
* ``/metrics`` is Prometheus text (``kdns.metrics``: CoreDNS's families and kdns's own).

The same class serves the metrics-only port (``--metrics-listen``, CoreDNS's 9153): without
``alive`` and ``ready`` it answers ``/metrics`` alone. Extra ``routes`` (path -> handler of the
query string, returning a status and a body) add operator endpoints such as the query log's
switch. It runs on a ``ThreadingHTTPServer`` in its own thread and never touches the DNS hot path.
"""

from __future__ import annotations

import http.server
import ipaddress
import logging
import os
import socket
import struct
import threading
from collections.abc import Callable, Mapping
from typing import Any, Final

from kdns import dns
from kdns.names import Name

logger = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 1.0
METRICS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

Route = Callable[[str, str], tuple[int, str]]
"""An extra endpoint: (HTTP method, query string) in, (HTTP status, text body) out."""


def probe_query(zone: Name, query_id: int) -> bytes:
    header = struct.pack(">HHHHHH", query_id, 0, 1, 0, 0, 0)
    return header + dns.from_labels(("dns-version", *zone)) + struct.pack(">HH", dns.TXT, 1)


def probe_udp(host: str, port: int, zone: Name, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Ask our own UDP listener one question; True if a matching reply came back in time."""
    if ipaddress.ip_address(host).is_unspecified:
        host = "::1" if ":" in host else "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    query_id = int.from_bytes(os.urandom(2), "big")
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout_s)
        try:
            sock.sendto(probe_query(zone, query_id), (host, port))
            reply = sock.recv(4096)
        except OSError:
            return False
    return len(reply) >= 4 and reply[:2] == query_id.to_bytes(2, "big") and bool(reply[2] & 0x80)


class HealthServer:
    """Serves the three endpoints from callbacks; knows nothing else about kdns."""

    def __init__(
        self,
        host: str,
        port: int,
        alive: Callable[[], bool] | None,
        ready: Callable[[], tuple[bool, str]] | None,
        metrics: Callable[[], str],
        *,
        reuse_port: bool = False,
        routes: Mapping[str, Route] | None = None,
    ) -> None:
        owner = self
        extra = dict(routes or {})

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path, _, query = self.path.partition("?")
                alive, ready = owner.alive, owner.ready
                if path in ("/health", "/healthz") and alive is not None:
                    ok = alive()
                    self._send(200 if ok else 503, "ok\n" if ok else "serving loop not answering\n")
                elif path in ("/ready", "/readyz") and ready is not None:
                    ok, why = ready()
                    self._send(200 if ok else 503, why + "\n")
                elif path == "/metrics":
                    self._send(200, owner.metrics(), METRICS_CONTENT_TYPE)
                elif path in extra:
                    status, body = extra[path]("GET", query)
                    self._send(status, body)
                else:
                    self._send(404, "not found\n")

            def do_POST(self) -> None:
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    form = self.rfile.read(min(length, 65536)).decode(errors="replace")
                    query = f"{query}&{form}" if query else form
                if path in extra:
                    status, body = extra[path]("POST", query)
                    self._send(status, body)
                else:
                    self._send(404, "not found\n")

            def _send(self, status: int, body: str, content_type: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                logger.debug("health %s", format % args)

        family = socket.AF_INET6 if ":" in host else socket.AF_INET

        class Server(http.server.ThreadingHTTPServer):
            address_family = family
            daemon_threads = True
            allow_reuse_port = reuse_port  # SO_REUSEPORT: a successor process may bind it too

        self.alive = alive
        self.ready = ready
        self.metrics = metrics
        self._server = Server((host, port), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="health", daemon=True
        )

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=3)

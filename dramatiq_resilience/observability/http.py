"""The HTTP endpoint: ``GET /metrics`` (Prometheus text) and ``GET /health`` (JSON, 200 or 503).

Bound to 127.0.0.1 by default: put it behind your scraper's network, not on
every interface.  It runs in ``dramatiq-resilience serve``, in a fork of the
``dramatiq`` main process (``Metrics(expose=True)``), or anywhere with
:class:`ObservabilityServer` (tests, an in-process worker).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .metrics_middleware import DEFAULT_HOST, DEFAULT_PORT

__all__ = ["ObservabilityServer"]

logger = logging.getLogger(__name__)

INDEX = b"dramatiq-resilience: GET /metrics (Prometheus), GET /health (JSON; 200 healthy, 503 otherwise)\n"


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        try:
            if path == "/metrics":
                self._metrics()
            elif path == "/health":
                self._health()
            elif path == "/":
                self._send(200, INDEX, "text/plain; charset=utf-8")
            else:
                self._send(404, b"not found: try /metrics or /health\n", "text/plain; charset=utf-8")
        except Exception as exc:
            logger.exception("Failed to answer GET %s.", self.path)
            self._send(500, f"error: {exc}\n".encode(), "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        from prometheus_client.exposition import choose_encoder

        encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
        self._send(200, encoder(self.server.owner.registry), content_type)

    def _health(self) -> None:
        health = self.server.owner.health
        if health is None:
            error = {"error": "no health scorer here (give dramatiq-resilience serve --app or --redis)"}
            self._send(404, json.dumps(error).encode(), "application/json")
            return
        report = health()
        body = json.dumps(report.to_dict(), indent=2, sort_keys=True).encode()
        self._send(report.http_status, body, "application/json")

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        logger.debug(format, *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: ObservabilityServer


class ObservabilityServer:
    """Serves ``/metrics`` from ``registry`` and ``/health`` from ``health()`` (a ``HealthReport``).

    Parameters:
      registry: a ``prometheus_client.CollectorRegistry`` (see
        :func:`~dramatiq_resilience.observability.collectors.exposition_registry`).
      health: a callable returning the current ``HealthReport``, or ``None``
        (``/health`` then answers 404).
      host: the interface to bind (default ``127.0.0.1``).
      port: the port (default 9192; 0 picks a free one, see :attr:`port`).
    """

    def __init__(
        self,
        *,
        registry: Any,
        health: Callable[[], Any] | None = None,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
    ) -> None:
        self.registry = registry
        self.health = health
        self._server = _Server((host, port), _Handler)
        self._server.owner = self
        self._thread: threading.Thread | None = None

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> ObservabilityServer:
        """Serve from a background thread."""
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="dramatiq-resilience-http", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve from this thread until :meth:`close` (or an exception such as ``KeyboardInterrupt``)."""
        try:
            self._server.serve_forever()
        finally:
            self._server.server_close()

    def close(self) -> None:
        """Stop serving and release the port."""
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()

    def __enter__(self) -> ObservabilityServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.close()

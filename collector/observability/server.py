"""The HTTP server: GET /health, /stats, /metrics and the status page at /, from a daemon thread.

Why a thread of the supervisor with a callback: the supervisor owns the shared-memory block and its
bookkeeping, so it builds a fresh snapshot per data request (snapshot_fn); the answers themselves are the
pure functions of collector.observability.health, .stats and .metrics. A failing callback answers 500 and
never takes the server (or the supervisor) down. The status page is a static file shipped with the
package (static/status.html), read once.
"""

from __future__ import annotations

import json
import logging
import os
import selectors
import threading
from collections.abc import Callable
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any

from collector.observability.health import DEFAULT_THRESHOLDS, HealthThresholds, health
from collector.observability.metrics import METRICS_CONTENT_TYPE, render_metrics
from collector.observability.snapshot import Snapshot, iso
from collector.observability.stats import stats_json

log = logging.getLogger(__name__)

HTML_CONTENT_TYPE = "text/html; charset=utf-8"


@cache
def status_page() -> bytes:
    """The status page's HTML (package data, so it ships inside the wheel and needs no network)."""
    return resources.files("collector.observability").joinpath("static/status.html").read_bytes()


class HealthServer:
    """GET /health, /stats, /metrics and / (the status page) from a daemon thread; snapshot_fn() is called
    once per data request (the page itself is static and polls /stats and /health from the browser).

    Binds 127.0.0.1 by default: the endpoints reveal internals and have no authentication, so exposing
    them further is a deliberate configuration choice (or a reverse proxy's job).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, snapshot_fn: Callable[[], Snapshot] | None = None,
                 thresholds: HealthThresholds = DEFAULT_THRESHOLDS, metrics_enabled: bool = True) -> None:
        if snapshot_fn is None:
            raise ValueError("snapshot_fn is required")
        self.metrics_enabled = metrics_enabled
        self.host = host
        self.port = port
        self.snapshot_fn = snapshot_fn
        self.thresholds = thresholds
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._wake: tuple[int, int] | None = None

    def start(self) -> None:
        handler = _make_handler(self)
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True  # a stuck client must not hold the supervisor's exit
        self._server.timeout = 0  # handle_request() is called once a connection is waiting: never block in it
        self.port = self._server.server_address[1]
        self._wake = os.pipe()
        self._thread = threading.Thread(target=self._serve, args=(self._server, self._wake[0]), name="health-http",
                                        daemon=True)
        self._thread.start()
        log.info("status page and health endpoints on http://%s:%d/{,health,stats,metrics}",
                 self.host, self.port)

    @staticmethod
    def _serve(server: ThreadingHTTPServer, wake_r: int) -> None:
        """Accept until stop() writes to the wake pipe. Not serve_forever: it wakes every poll_interval
        (0.5 s) to look for a shutdown request, two wake-ups a second of an otherwise idle supervisor for
        as long as it runs; here the thread sleeps until a connection or the stop arrives."""
        with selectors.DefaultSelector() as sel:
            sel.register(server, selectors.EVENT_READ)
            sel.register(wake_r, selectors.EVENT_READ)
            while True:
                ready = sel.select()
                if any(key.fileobj == wake_r for key, _ in ready):
                    return
                server.handle_request()

    def stop(self) -> None:
        if self._server is None:
            return
        if self._wake is not None:
            os.write(self._wake[1], b"x")
        if self._thread is not None:
            self._thread.join()
        self._server.server_close()
        if self._wake is not None:
            for fd in self._wake:
                os.close(fd)
        self._server = self._thread = self._wake = None

    def respond(self, path: str) -> tuple[int, str, bytes]:
        """(status, content type, body) for a GET of path; pure apart from calling snapshot_fn."""
        path = path.split("?", 1)[0]
        if path == "/":
            return 200, HTML_CONTENT_TYPE, status_page()
        if path not in ("/health", "/stats", "/metrics") or (path == "/metrics" and not self.metrics_enabled):
            return 404, "application/json", _json({"error": "not found",
                                                    "endpoints": ["/", "/health", "/stats", "/metrics"]})
        try:
            snap = self.snapshot_fn()
            if path == "/health":
                ok, reasons = health(snap, snap["now_ms"], self.thresholds)
                return (200 if ok else 503), "application/json", _json(
                    {"ok": ok, "reasons": reasons, "checked_at": iso(snap["now_ms"])})
            if path == "/stats":
                return 200, "application/json", _json(stats_json(snap))
            return 200, METRICS_CONTENT_TYPE, render_metrics(snap).encode()
        except Exception as e:  # never let a bad snapshot take the endpoint down: report it and keep serving
            log.error("%s failed: %s: %s", path, type(e).__name__, e, exc_info=True)
            return 500, "application/json", _json({"error": type(e).__name__})


def _json(obj: object) -> bytes:
    return json.dumps(obj, allow_nan=False, default=str).encode()


def _make_handler(server: HealthServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - the http.server naming convention
            status, ctype, body = server.respond(self.path)
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - signature of the base class
            log.debug("%s - " + format, self.address_string(), *args)

    return Handler

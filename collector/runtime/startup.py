"""Start-up checks: the traps a first run falls into, each answered with one line naming the config key.

A broken config file already stops the collector with exit code 2 and one line (collector.config); these
are the same for what only the machine can tell: a health port taken by another program, a log or spool
directory the collector may not write, exchange endpoints that do not answer, a database mode the server
cannot give. They run before anything is started, so nothing is left half running and no traceback hides
the cause. A database that is merely down is not a trap: the writer keeps retrying (and spools), and
/health says why.
"""

from __future__ import annotations

import errno
import logging
import os
import socket
import tempfile
import urllib.error
import urllib.request
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import psycopg

from collector.config import Config
from collector.db import setup as dbsetup
from collector.db.mode import Mode
from collector.db.schema import SchemaError, ensure_schema

log = logging.getLogger(__name__)

# The exchange probe: each venue's cheapest public request (Binance /fapi/v1/ping, weight 1; OKX's and
# Bybit's server time) answers in well under a second from anywhere it serves; 5 s separates "slow" from
# "not there" without making a first start wait long.
EXCHANGE_PROBE_TIMEOUT_S = 5.0
PROBE_PATHS = {"binance": "/fapi/v1/ping", "okx": "/api/v5/public/time", "bybit": "/v5/market/time"}
# The start-up database check: a reachable server answers in milliseconds; an unreachable host must not
# delay the start for the OS's TCP timeout (the writer keeps retrying anyway).
DATABASE_CONNECT_TIMEOUT_S = 5


class StartupError(Exception):
    """The collector cannot start as configured; str() is one line: the key, the problem, the fix."""


def check_writable_dir(directory: Path, key: str) -> None:
    """Create `directory` if needed and prove a file can be written there (permissions alone lie to root)."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise StartupError(f"{key}: cannot write in {directory}: {e.strerror or e}") from None


def check_log_file(filename: str | Path, key: str = "logging.filename") -> None:
    path = Path(filename)
    check_writable_dir(path.parent if str(path.parent) else Path("."), key)
    if path.exists() and not os.access(path, os.W_OK):
        raise StartupError(f"{key}: cannot write {path}: permission denied")


def check_port_free(host: str, port: int, key: str = "monitoring.health_check_port") -> None:
    """Bind and release the health port as the HTTP server will (SO_REUSEADDR), so 'in use' is caught now."""
    if port == 0:  # any free port: cannot be taken
        return
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            what = "is in use by another program" if e.errno == errno.EADDRINUSE else f"cannot be bound ({e.strerror})"
            raise StartupError(f"{key}: port {port} on {host} {what}: stop that program or choose another port"
                               ) from None


def check_exchange(rest_url: str, key: str = "exchange.rest_url", timeout: float = EXCHANGE_PROBE_TIMEOUT_S,
                   venue: str = "binance") -> None:
    """GET the venue's probe (PROBE_PATHS): its REST endpoint must answer before workers are started against it."""
    url = rest_url.rstrip("/") + PROBE_PATHS[venue]
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - the configured endpoint
            resp.read()
    except urllib.error.HTTPError as e:
        if e.code in (418, 429) or (venue == "bybit" and e.code == 403):  # rate limited or banned (Bybit's
            return  # 403 "access too frequent"): reachable, and the workers' REST budget handles it
        raise StartupError(f"{key}: {url} answered HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = getattr(e, "reason", e)
        raise StartupError(f"{key}: cannot reach {url}: {reason}") from None


def check_machine(cfg: Config, simulate: bool) -> None:
    """Every check that needs no database, in the order a user would fix them. Raises StartupError."""
    check_log_file(cfg.logging.filename)
    check_writable_dir(Path(cfg.writer.spool_dir), "writer.spool_dir")
    check_port_free(cfg.monitoring.health_check_host, cfg.monitoring.health_check_port)
    if not simulate:  # only the venues collected: a user of OKX alone need not reach Binance
        ex = cfg.exchange
        for venue in cfg.collection.exchanges:
            key = (f"exchange.{venue}.rest_url" if venue != "binance" else
                   "exchange.rest_url" if ex.rest_url else f"exchange.preset ({ex.preset})")
            check_exchange(ex.venue_endpoints(venue).rest, key, venue=venue)


def prepare_database(dsn: str, mode: Mode, retention: Mapping[str, timedelta | None]) -> str | None:
    """Create the database if missing (and allowed), decide the back-end and ensure the schema, before the
    writer starts, so a refused database.mode stops the start with one line and the one warning about an
    unusable TimescaleDB lands on the console. Returns the back-end, or None when the database cannot be
    used yet (logged with the server's message; the writer keeps retrying and /health shows it).
    """
    try:
        with dbsetup.connect(dsn, autocommit=True, connect_timeout=DATABASE_CONNECT_TIMEOUT_S,
                             application_name="collector-setup") as conn:
            backend = ensure_schema(conn, mode, retention)
    except SchemaError as e:
        text = str(e)
        raise StartupError(text if text.startswith("database") else f"database: {text}") from None
    except psycopg.Error as e:
        log.error("database not usable yet (the writer keeps retrying): %s", dbsetup.describe(e))
        return None
    log.info("database ready: %s back-end", "TimescaleDB" if backend == "timescaledb" else "plain PostgreSQL")
    return backend

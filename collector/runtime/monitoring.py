"""The supervisor's health wiring: the snapshot it serves, the HTTP endpoints, the stats log lines.

Why apart from the arbiter: serving /health, /stats and /metrics and logging a readable summary is
reporting, not supervision. The snapshot combines what the arbiter knows about its children (pid, alive,
restarts) with the coordinator's tiers and every child's shared-memory slot (collector.observability).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from collector.config import MonitoringConfig
from collector.observability.health import health
from collector.observability.server import HealthServer
from collector.observability.snapshot import ChildInfo, build_snapshot
from collector.observability.stats import stats_json
from collector.pipeline.tiers import TierAssignment
from collector.runtime.shm import StatsBlock
from collector.runtime.startup import StartupError

log = logging.getLogger(__name__)


class Monitor:
    """Snapshot, endpoints and stats log of one run; `children()` and `tiers()` are read per request."""

    def __init__(self, stats: StatsBlock | None, children: Callable[[], Iterable[ChildInfo]],
                 tiers: Callable[[], tuple[dict[str, TierAssignment], int | None]],
                 api: Callable[[], dict[str, Any] | None] = lambda: None) -> None:
        self.stats, self.children, self.tiers, self.api = stats, children, tiers, api
        self.started_ms = int(time.time() * 1000)
        self.server: HealthServer | None = None

    def snapshot(self) -> dict[str, Any]:
        tiers, tiers_ms = self.tiers()
        return build_snapshot(self.stats, list(self.children()), tiers, int(time.time() * 1000),
                              tiers_computed_ms=tiers_ms, started_ms=self.started_ms, api=self.api())

    def start(self, mon: MonitoringConfig) -> None:
        """Listen on monitoring.health_check_host:port; StartupError (one line) when that is impossible."""
        server = HealthServer(mon.health_check_host, mon.health_check_port, self.snapshot,
                              metrics_enabled=mon.metrics_enabled)
        try:
            server.start()
        except OSError as e:  # taken since check_port_free, or (SIGHUP) a new port that is taken
            raise StartupError(f"monitoring.health_check_port: cannot listen on {mon.health_check_host}:"
                               f"{mon.health_check_port}: {e.strerror or e}") from None
        self.server = server
        log.info("health, stats and metrics on http://%s:%d/", mon.health_check_host, server.port)

    def restart(self, mon: MonitoringConfig) -> None:
        """SIGHUP changed the monitoring settings; a failure keeps the collector collecting without endpoints."""
        self.stop()
        try:
            self.start(mon)
        except StartupError as e:
            log.error("SIGHUP: %s", e)

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None

    def log_stats(self) -> None:
        snap = self.snapshot()
        t = stats_json(snap).get("totals", {})
        ok, reasons = health(snap, int(time.time() * 1000))
        log.info("stats: trades %s funding %s liquidations %s open_interest %s candles %s errors %s | kept %s | %s",
                 t.get("trades_count"), t.get("funding_count"), t.get("liquidations_count"),
                 t.get("open_interest_count"), t.get("candles_count"), t.get("errors"), t.get("kept"),
                 "healthy" if ok else "UNHEALTHY: " + "; ".join(reasons))

    def log_final(self) -> None:
        """One readable summary of the whole run, from the children's last published counters."""
        t = stats_json(self.snapshot()).get("totals", {})
        received = t.get("received", {})
        kept = t.get("kept", {})
        trades_in = int(received.get("trades", 0))
        log.info("stopped. committed rows: trades %d (of %d received, %.2f%% kept: %s), funding %d, "
                 "liquidations %d, open_interest %d, candles %d; errors %d; rejected %s",
                 t.get("trades_count", 0), trades_in, 100 * t.get("trades_count", 0) / max(trades_in, 1),
                 ", ".join(f"{k} {int(v)}" for k, v in kept.items() if v), t.get("funding_count", 0),
                 t.get("liquidations_count", 0), t.get("open_interest_count", 0), t.get("candles_count", 0),
                 t.get("errors", 0), {k: int(v) for k, v in t.get("rejected", {}).items() if v} or "none")

"""The HTTP server: /health, /stats, /metrics and the status page over real HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request

import pytest
from helpers import settled_wakeups, thread_wakeups, wait_for
from prometheus_client.parser import text_string_to_metric_families
from test_health import _publish_healthy, _snap

from collector.observability.server import HealthServer
from collector.runtime.shm import StatsBlock


def _get(port: int, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


@pytest.fixture
def server_for(block: StatsBlock):
    servers = []

    def start(snapshot_fn) -> HealthServer:
        s = HealthServer(snapshot_fn=snapshot_fn)
        s.start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_http_endpoints(block: StatsBlock, server_for, capfd) -> None:
    _publish_healthy(block)
    srv = server_for(lambda: _snap(block))
    assert srv.host == "127.0.0.1" and srv.port > 0
    status, ctype, body = _get(srv.port, "/health")
    assert (status, ctype) == (200, "application/json") and json.loads(body)["ok"] is True
    status, ctype, body = _get(srv.port, "/stats?pretty=1")
    assert status == 200 and json.loads(body)["totals"]["trades_count"] == 1_000
    status, ctype, body = _get(srv.port, "/metrics")
    assert status == 200 and ctype == "text/plain; version=0.0.4; charset=utf-8"
    assert "collector_worker_received" in {f.name for f in text_string_to_metric_families(body.decode())}
    status, ctype, body = _get(srv.port, "/")
    assert (status, ctype) == (200, "text/html; charset=utf-8") and b'id="workers"' in body
    status, _, body = _get(srv.port, "/nope")
    assert status == 404 and "/health" in json.loads(body)["endpoints"]
    assert capfd.readouterr().err == ""  # no per-request log lines on stderr


def test_http_health_503_when_a_child_is_dead(block: StatsBlock, server_for) -> None:
    _publish_healthy(block)
    srv = server_for(lambda: _snap(block, c2={"alive": False, "pid": None, "restarts": 1}))
    status, _, body = _get(srv.port, "/health")
    doc = json.loads(body)
    assert status == 503 and doc["ok"] is False
    assert doc["reasons"] == ["worker 2 is down (restarting; 1 restarts so far)"]


def test_http_survives_a_failing_snapshot(block: StatsBlock, server_for, caplog) -> None:
    calls = []

    def flaky() -> dict:
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("boom")
        return _snap(block)

    srv = server_for(flaky)
    with caplog.at_level(logging.ERROR, logger="collector.observability.server"):
        status, _, body = _get(srv.port, "/metrics")
    assert status == 500 and json.loads(body) == {"error": "RuntimeError"}
    assert any("RuntimeError" in r.getMessage() for r in caplog.records)
    status, _, _ = _get(srv.port, "/stats")  # still serving
    assert status == 200


def test_stop_releases_the_port(block: StatsBlock) -> None:
    srv = HealthServer(snapshot_fn=lambda: _snap(block))
    srv.start()
    port = srv.port
    srv.stop()
    again = HealthServer(port=port, snapshot_fn=lambda: _snap(block))
    again.start()  # would raise EADDRINUSE if the first had not closed its socket
    again.stop()




def test_the_server_thread_sleeps_until_a_request_or_the_stop(block: StatsBlock) -> None:
    """An idle supervisor's HTTP thread must not wake on a timer (serve_forever's poll every 0.5 s did, two
    wake-ups a second for as long as the collector runs); a request and the stop still wake it at once."""
    srv = HealthServer(snapshot_fn=lambda: _snap(block))
    srv.start()
    thread = srv._thread
    assert thread is not None
    try:
        wait_for(lambda: _get(srv.port, "/health")[0] in (200, 503), 10, "the first answer")
        before = settled_wakeups(thread)
        time.sleep(1.6)  # the window observed, not a synchronisation: serve_forever woke 3 times in it
        assert thread_wakeups(thread) - before == 0
        assert _get(srv.port, "/stats")[0] == 200
    finally:
        srv.stop()
    assert not thread.is_alive()

"""The token rule (required off loopback, checked on every route when set), the refusal to start off
loopback without one, and the token never reaching a log."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from conftest import ServerThread, free_port
from helpers import ROOT, wait_for, write_config

from collector.api.app import ApiSettings
from collector.api.serve import is_loopback, token_problem
from collector.config import ApiConfig

TOKEN = "s3cret-token-7f1e"
ROUTES = ["candles?symbol=BTCUSDT", "trades?symbol=BTCUSDT", "funding?symbol=BTCUSDT",
          "liquidations?symbol=BTCUSDT", "open_interest?symbol=BTCUSDT", "symbols", "latest"]


@pytest.mark.parametrize("host,loopback", [("127.0.0.1", True), ("127.8.9.10", True), ("::1", True),
                                           ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                           ("::", False), ("10.1.2.3", False), ("example.org", False)])
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert (token_problem(host, None) is None) is loopback
    assert token_problem(host, TOKEN) is None


def test_every_route_requires_the_configured_token(filled_db: str) -> None:
    with ServerThread(ApiSettings(dsn=filled_db, token=TOKEN)) as srv:
        for route in ROUTES:
            url = f"{srv.url}/api/v1/{route}"
            missing = httpx.get(url)
            assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer", route
            assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert httpx.get(url, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
            assert httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200, route
        # the document stays readable, and says how to authenticate
        spec = httpx.get(f"{srv.url}/api/v1/openapi.json").json()
        assert "HTTPBearer" in spec["components"]["securitySchemes"]


def _api(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "collector", "api", *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def test_refuses_to_bind_off_loopback_without_a_token(tmp_path: Path) -> None:
    cfg = write_config(tmp_path / "main.yaml", api={"host": "0.0.0.0", "token_env": "NO_SUCH_VARIABLE_FOR_TEST"})
    proc = _api("--config", str(cfg), "--dsn", "postgresql://127.0.0.1:1/none", cwd=tmp_path)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 2
    assert out.strip().splitlines() == [
        "error: api.host 0.0.0.0 is not a loopback address: set api.token, api.token_file or the environment "
        "variable named by api.token_env, or bind 127.0.0.1"]


def test_served_process_takes_the_token_from_a_file_and_never_logs_it(filled_db: str, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    port = free_port()
    cfg = write_config(tmp_path / "main.yaml", api={"port": port, "token_file": str(tmp_path / "token")},
                       logging={"level": "DEBUG"})
    proc = _api("--config", str(cfg), "--dsn", filled_db, cwd=tmp_path)
    try:
        url = f"http://127.0.0.1:{port}/api/v1/symbols"

        def answers() -> int:
            try:
                return httpx.get(url, timeout=5).status_code
            except httpx.TransportError:
                assert proc.poll() is None, proc.communicate()[0]
                return 0

        assert wait_for(answers, 60, "collector api to listen") == 401
        r = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"})
        assert r.status_code == 200 and len(r.json()["data"]) >= 6
    finally:
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
    assert "GET /api/v1/symbols" in out  # the access log is on: requests are logged...
    assert TOKEN not in out  # ...and the token is not
    assert TOKEN not in repr(ApiConfig(token=TOKEN))

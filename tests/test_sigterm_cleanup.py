"""A pytest of this suite that is sent SIGTERM stops the throwaway PostgreSQL it started (tests/conftest.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from helpers import wait_for

TESTS = Path(__file__).resolve().parent

HELD = '''
import os
import time
from pathlib import Path


def test_held(pg_server_url):
    Path(os.environ["HELD_URL_FILE"]).write_text(pg_server_url)
    time.sleep(300)  # until the SIGTERM
'''


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=5) as conn:
            conn.execute("SELECT 1")
        return True
    except psycopg.OperationalError:
        return False


def test_sigterm_stops_the_throwaway_postgres(tmp_path: Path) -> None:
    (tmp_path / "test_held.py").write_text(HELD)
    url_file = tmp_path / "url"
    env = {k: v for k, v in os.environ.items() if k != "TEST_DATABASE_URL"}  # make it start its own server
    env.update(HELD_URL_FILE=str(url_file), PYTHONPATH=os.pathsep.join([str(TESTS), env.get("PYTHONPATH", "")]))
    child = subprocess.Popen([sys.executable, "-m", "pytest", "-q", "-p", "conftest", "-p", "no:cacheprovider",
                              "test_held.py"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    pid_file: Path | None = None
    try:
        wait_for(lambda: url_file.exists() and url_file.read_text(), 120, "the child's server")
        url = url_file.read_text()
        with psycopg.connect(url) as conn:
            pid_file = Path(conn.execute("SHOW data_directory").fetchone()[0]) / "postmaster.pid"
        assert pid_file.exists()
        child.send_signal(signal.SIGTERM)
        out, _ = child.communicate(timeout=120)
        assert child.returncode != 0, out
        assert not pid_file.exists(), out  # stopped, not left running
        assert not _answers(url), out
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        if pid_file is not None and pid_file.exists():  # the failure this test is about: clean up after it
            os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
            pytest.fail("the child's PostgreSQL outlived it")

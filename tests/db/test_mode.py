"""The back-end decision (storage.decide_mode), every combination of what a server can say, as a table."""

from __future__ import annotations

import pytest

from collector.db.schema import ModeDecision, ModeFacts, decide_mode, parse_version, preload_listed

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

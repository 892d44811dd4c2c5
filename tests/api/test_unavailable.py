"""A query past the statement timeout and a database that cannot be reached answer 503 with one line,
never a 500, and never the DSN."""

from __future__ import annotations

import httpx
import psycopg
from conftest import ServerThread, free_port

from collector.api.app import ApiSettings


def test_statement_timeout_answers_503(filled_db: str) -> None:
    with ServerThread(ApiSettings(dsn=filled_db, statement_timeout_ms=300)) as srv, \
            psycopg.connect(filled_db) as locker:
        # an exclusive lock held by another session: the API's read waits for it until its timeout
        locker.execute("LOCK TABLE symbol_tiers IN ACCESS EXCLUSIVE MODE")
        r = httpx.get(f"{srv.url}/api/v1/symbols", timeout=30)
        locker.rollback()
        assert r.status_code == 503
        assert r.json() == {"detail": "the query exceeded the statement timeout (300 ms); ask for a shorter "
                                      "range or fewer rows"}
        assert httpx.get(f"{srv.url}/api/v1/symbols", timeout=30).status_code == 200  # the pool recovered


def test_unreachable_database_answers_503() -> None:
    dsn = f"postgresql://reader:pw-secret@127.0.0.1:{free_port()}/collector?connect_timeout=2"
    with ServerThread(ApiSettings(dsn=dsn, statement_timeout_ms=100)) as srv:
        r = httpx.get(f"{srv.url}/api/v1/latest", timeout=30)
    assert r.status_code == 503 and r.headers["retry-after"] == "5"
    assert r.json() == {"detail": "database unavailable"}

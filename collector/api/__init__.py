"""The read API: the collected tables over HTTP (JSON, CSV, Arrow IPC), read-only, under /api/v1/.

query (what each endpoint selects, whitelisted SQL, paging) -> db (read-only pool) -> encode (formats) ->
app (FastAPI routes, auth, errors) -> serve (`python -m collector api`). Needs the `api` extra.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    """`python -m collector api` (imported lazily: the collector itself never needs FastAPI)."""
    from collector.api.serve import main as serve

    return serve(argv)

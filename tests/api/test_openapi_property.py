"""Property test of the generated OpenAPI document: schemathesis drives every operation with generated
parameters, valid and invalid, against the real server and data; no answer may be a 5xx, be undocumented,
break the declared schema, or accept what the schema says is invalid.

Bounded: a fixed number of examples per generation mode, so the test takes well under a minute.
(schemathesis' pytest plugin, `from_fixture`, does not run under pytest 9; the strategy API does.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings


@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_server_error_no_schema_violation(api_url: str, mode: schemathesis.GenerationMode) -> None:
    schema = schemathesis.openapi.from_url(f"{api_url}/api/v1/openapi.json")
    operations = [r.ok().label for r in schema.get_all_operations()]
    assert len(operations) == 7, operations
    seen: set[str] = set()

    @given(case=schema.as_strategy(generation_mode=mode))
    @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    def run(case: schemathesis.Case) -> None:
        seen.add(case.operation.label)
        case.call_and_validate(timeout=30)

    run()
    assert seen == set(operations)  # every operation was exercised


def test_real_rows_conform_to_the_document(api_url: str, filled_db: str) -> None:
    """Generated parameters rarely name a stored symbol; these do, so non-empty pages (nulls included)
    are validated against the declared response schemas too."""
    import psycopg

    with psycopg.connect(filled_db) as conn:
        row = conn.execute("SELECT symbol FROM liquidations GROUP BY 1 ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert row is not None
    schema = schemathesis.openapi.from_url(f"{api_url}/api/v1/openapi.json")
    wide = {"symbol": row[0], "start": "2020-01-01T00:00:00Z", "end": "2100-01-01T00:00:00Z", "limit": 3}
    calls = {"/api/v1/candles": {**wide, "include_partial": "true"}, "/api/v1/trades": wide,
             "/api/v1/funding": wide, "/api/v1/liquidations": wide, "/api/v1/open_interest": wide,
             "/api/v1/symbols": {}, "/api/v1/latest": {}}
    for path, params in calls.items():
        for time_format in ("iso", "ms"):
            case = schema[path]["GET"].Case(query={**params, "time_format": time_format})
            response = case.call_and_validate(timeout=30)
            assert response.json()["data"], path

"""The API's first request after start imports nothing: the imports a page's decode makes on first use (pyarrow
imports pandas, when installed, the first time it converts a numpy array) happen while the app starts
(collector.api.app.warm_up), not in the first user's request (which took 170-470 ms before, against ~10 ms
for the next).

In a fresh interpreter: this test process has imported everything long ago.
"""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg

_SCRIPT = """
import json, sys
from fastapi.testclient import TestClient
from collector.api.app import ApiSettings, create_app

dsn, symbol = sys.argv[1], sys.argv[2]
with TestClient(create_app(ApiSettings(dsn=dsn))) as client:  # the lifespan: the app as it starts
    before = set(sys.modules)
    statuses = []
    for path, params in (("trades", {"symbol": symbol}), ("candles", {"symbol": symbol, "timeframe": "1m"}),
                         ("funding", {"symbol": symbol}), ("latest", {}), ("symbols", {})):
        for fmt in ("arrow", "json", "csv"):
            r = client.get(f"/api/v1/{path}", params={**params, "start": 0, "end": "2100-01-01", "format": fmt})
            statuses.append(r.status_code)
    print(json.dumps({"statuses": statuses, "imported": sorted(set(sys.modules) - before)}))
"""


def test_the_first_requests_import_nothing(filled_db: str) -> None:
    with psycopg.connect(filled_db) as conn:
        row = conn.execute("SELECT symbol FROM trades GROUP BY symbol ORDER BY count(*) DESC LIMIT 1").fetchone()
    assert row is not None
    out = subprocess.run([sys.executable, "-c", _SCRIPT, filled_db, row[0]], capture_output=True, text=True,
                         timeout=120, check=True)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert set(got["statuses"]) == {200}
    assert got["imported"] == []

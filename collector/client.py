"""A small client for the read API that hands back polars or pandas DataFrames, from a notebook in three lines:

    from collector.client import Client
    api = Client("http://127.0.0.1:8081")          # token="..." when the API requires one
    df = api.candles("BTCUSDT", "1m", start="2025-03-12", end="2025-03-13")

It always asks for Arrow IPC: the columns arrive as typed buffers (float64, int64, UTC timestamps), so
nothing goes through JSON text and back to floats, and it follows the time cursor until the range is
complete. A series' `symbol` and `venue` columns (candles, trades, funding, liquidations, open interest)
are Categorical in polars and category in pandas: the API sends them dictionary-encoded, not a string per
row (`symbols` and `latest` keep them as plain text). Every method takes `venue=` (binance, bybit, okx): given, only that venue's rows; omitted, every
venue's, each row naming its venue. Standard library HTTP only; needs pyarrow and polars or pandas (the
`client` extra).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime
from typing import Any, Literal

import pyarrow as pa

ARROW = "application/vnd.apache.arrow.stream"
TimeArg = str | int | datetime | None
Kind = Literal["polars", "pandas", "arrow"]


class ApiError(RuntimeError):
    """The API answered with an error status; the message is its one-line detail."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(f"HTTP {status}: {detail}")
        self.status = status
        self.detail = detail


def _time(value: TimeArg) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    return str(int(value))  # epoch milliseconds


class Client:
    """One API base URL (and token); each method returns the whole requested range as one DataFrame."""

    def __init__(self, base_url: str, token: str | None = None, as_: Kind = "polars", timeout: float = 60.0,
                 page_rows: int | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.as_ = as_
        self.timeout = timeout
        self.page_rows = page_rows  # None: the server's default page size

    def __repr__(self) -> str:  # the token stays out of notebooks' outputs
        return f"Client({self.base_url!r}, token={'<set>' if self._token else None}, as_={self.as_!r})"

    def _get(self, path: str, params: dict[str, Any]) -> pa.Table:
        query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        req = urllib.request.Request(f"{self.base_url}/api/v1/{path}?{query}", headers={"Accept": ARROW})
        if self._token:
            req.add_header("Authorization", f"Bearer {self._token}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read()
        except urllib.error.HTTPError as e:
            raw = e.read()
            try:
                detail = str(json.loads(raw)["detail"])
            except (ValueError, KeyError, TypeError):
                detail = raw[:200].decode(errors="replace")
            raise ApiError(e.code, detail) from None
        return pa.ipc.open_stream(body).read_all()

    def _paged(self, path: str, params: dict[str, Any]) -> pa.Table:
        params = {**params, "limit": self.page_rows}
        tables = []
        while True:
            table = self._get(path, params)
            tables.append(table.replace_schema_metadata(None))
            cursor = (table.schema.metadata or {}).get(b"next_cursor")
            if not cursor:
                break
            params["cursor"] = cursor.decode()
        return pa.concat_tables(tables) if len(tables) > 1 else tables[0]

    def _frame(self, table: pa.Table, as_: Kind | None) -> Any:
        kind = as_ or self.as_
        if kind == "arrow":
            return table
        if kind == "pandas":
            return table.to_pandas()
        import polars as pl

        return pl.from_arrow(table)

    def candles(self, symbol: str, timeframe: str = "1m", start: TimeArg = None, end: TimeArg = None,
                include_partial: bool = False, venue: str | None = None, as_: Kind | None = None) -> Any:
        """Complete candles (unless include_partial) of [start, end); a day up to now by default."""
        return self._frame(self._paged("candles", {"symbol": symbol, "venue": venue, "timeframe": timeframe,
                                                   "start": _time(start), "end": _time(end),
                                                   "include_partial": str(include_partial).lower()}), as_)

    def trades(self, symbol: str, start: TimeArg = None, end: TimeArg = None, save_reason: str | None = None,
               venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._paged("trades", {"symbol": symbol, "venue": venue, "start": _time(start), "end": _time(end),
                                                  "save_reason": save_reason}), as_)

    def funding(self, symbol: str, start: TimeArg = None, end: TimeArg = None, venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._paged("funding", {"symbol": symbol, "venue": venue, "start": _time(start), "end": _time(end)}),
                           as_)

    def liquidations(self, symbol: str, start: TimeArg = None, end: TimeArg = None,
                     venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._paged("liquidations", {"symbol": symbol, "venue": venue, "start": _time(start),
                                                        "end": _time(end)}), as_)

    def open_interest(self, symbol: str, start: TimeArg = None, end: TimeArg = None,
                      venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._paged("open_interest", {"symbol": symbol, "venue": venue, "start": _time(start),
                                                         "end": _time(end)}), as_)

    def symbols(self, venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._get("symbols", {"venue": venue}), as_)

    def latest(self, venue: str | None = None, as_: Kind | None = None) -> Any:
        return self._frame(self._get("latest", {"venue": venue}), as_)

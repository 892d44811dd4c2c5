"""The read API's HTTP surface: FastAPI routes under /api/v1/, generated OpenAPI, auth and error mapping.

FastAPI because the OpenAPI document (/api/v1/openapi.json, browsable at /api/v1/docs) is generated from
these signatures, so it cannot drift from what the server accepts; the property test in tests/api drives
every route from that document. What a route selects is collector.api.query's (whitelisted, parameterised
SQL); how rows are laid out is collector.api.encode's. A bad parameter answers 400 or 422 naming it; a
database that is down or too slow answers 503; nothing a user sends becomes SQL text.

No `from __future__ import annotations` here: FastAPI reads the route signatures' annotations, and some
(Limit) are local to create_app, which string annotations could not resolve.
"""

import hmac
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

import psycopg
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from psycopg_pool import PoolTimeout
from pydantic import BaseModel, create_model

from collector.api import columnar, db, encode, query
from collector.api.encode import Format, TimeFormat
from collector.api.query import BadParameter, Column, Series

log = logging.getLogger(__name__)

PREFIX = "/api/v1"


@dataclass(frozen=True)
class ApiSettings:
    """What the app needs, resolved from config (collector.api.serve) or given by a test."""

    dsn: str = field(repr=False)
    token: str | None = field(default=None, repr=False)
    max_rows: int = 100_000
    default_rows: int = 10_000
    statement_timeout_ms: int = 5_000
    pool_size: int = 4


class Problem(BaseModel):
    """Every error body: one line saying what is wrong (a bad parameter is named first)."""

    detail: str


_PY_TYPES: dict[str, Any] = {"time": str | int, "float": float, "int": int, "str": str}


def _row_model(name: str, columns: Sequence[Column]) -> type[BaseModel]:
    fields: dict[str, Any] = {}
    for c in columns:
        t = _PY_TYPES[c.kind]
        fields[c.name] = (t | None, ...) if c.nullable else (t, ...)
    return create_model(name, **fields)


def _page_model(name: str, columns: Sequence[Column]) -> type[BaseModel]:
    row = _row_model(f"{name}Row", columns)
    return create_model(f"{name}Page", data=(list[row], ...), next_cursor=(str | None, ...))  # type: ignore[valid-type]


_OTHER_FORMATS = {
    "text/csv": {"schema": {"type": "string"}},
    encode.ARROW_MEDIA_TYPE: {"schema": {"type": "string", "format": "binary"}},
}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"model": Problem, "description": "A parameter that cannot be used (the message names it)"},
    401: {"model": Problem, "description": "Missing or wrong bearer token"},
    503: {"model": Problem, "description": "Database unavailable, or the query exceeded the statement timeout"},
}


def _responses(paged: bool) -> dict[int | str, dict[str, Any]]:
    headers = {"X-Next-Cursor": {"description": "cursor of the next page, when there is one",
                                 "schema": {"type": "string"}}} if paged else {}
    ok: dict[str, Any] = {"content": _OTHER_FORMATS, "description": "JSON, CSV or Arrow IPC (format= or Accept)"}
    if headers:
        ok["headers"] = headers
    return {200: ok, **_ERRORS}


Symbol = Annotated[str, Query(pattern=r"^[A-Z0-9]{2,30}$", description="the venue's own name, e.g. BTCUSDT")]
VenueParam = Annotated[query.Venue | None, Query(
    description="only this venue's rows; omitted: every venue's (each row names its venue, so Binance's and "
                "Bybit's BTCUSDT are told apart)")]
Start = Annotated[str | None, Query(description="ISO 8601 (UTC unless an offset is given) or epoch ms; "
                                                "inclusive; default: a day before end")]
End = Annotated[str | None, Query(description="ISO 8601 or epoch ms; exclusive; default: now")]
CursorParam = Annotated[str | None, Query(description="next_cursor of the previous page (replaces start)")]
FormatParam = Annotated[Format | None, Query(alias="format", description="overrides the Accept header")]
TimesParam = Annotated[TimeFormat, Query(description="JSON/CSV times: ISO 8601 or epoch ms (Arrow: timestamp)")]


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def warm_up() -> None:
    """Every series' empty page decoded and rendered in every format, so the imports made on first use
    (columnar.empty_pages says which) happen before the first request, not in it."""
    series = [*query.SERIES.values(), query.candle_series("1m", False)]
    for s, arrays in zip(series, columnar.empty_pages(series), strict=True):
        for fmt in ("arrow", "json", "csv"):
            encode.render_arrays(fmt, arrays, s.columns, "iso", None, columnar.PAGE_GIVEN)


def create_app(settings: ApiSettings) -> FastAPI:
    """The app; its pool opens with the app's lifespan (uvicorn, or a TestClient used as a context)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        pool = db.make_pool(settings.dsn, settings.pool_size, settings.statement_timeout_ms)
        await pool.open(wait=False)
        warm_up()  # while the pool connects
        app.state.pool = pool
        try:
            yield
        finally:
            await pool.close()

    app = FastAPI(title="Binance futures collector: read API", version="1", lifespan=lifespan,
                  openapi_url=f"{PREFIX}/openapi.json", docs_url=f"{PREFIX}/docs", redoc_url=None,
                  description="Read-only access to the collected tables. Every list endpoint pages by time "
                              "cursor: follow next_cursor (JSON body, X-Next-Cursor header, or the Arrow "
                              "schema's metadata) until it is null. Every row names its `venue` (binance, "
                              "bybit, okx) and every endpoint takes an optional `venue`: given, only that "
                              "venue's rows; omitted, every venue's (no default venue, which would silently "
                              "hide the others). A symbol is the venue's own name; the database's "
                              "instruments table gives each contract's cross-venue (normalized) name.")

    @app.exception_handler(BadParameter)
    async def bad_parameter(request: Request, exc: BadParameter) -> JSONResponse:
        return _problem(400, str(exc))

    @app.exception_handler(psycopg.errors.QueryCanceled)
    async def too_slow(request: Request, exc: Exception) -> JSONResponse:
        return _problem(503, f"the query exceeded the statement timeout ({settings.statement_timeout_ms} ms); "
                             "ask for a shorter range or fewer rows")

    @app.exception_handler(psycopg.errors.UndefinedTable)
    async def no_schema(request: Request, exc: Exception) -> JSONResponse:
        return _problem(503, "the database has no collector schema (has the collector run against it?)")

    @app.exception_handler(PoolTimeout)
    @app.exception_handler(psycopg.OperationalError)
    async def unavailable(request: Request, exc: Exception) -> JSONResponse:
        log.warning("database unavailable: %s", type(exc).__name__)  # the message may carry the DSN
        return _problem(503, "database unavailable", {"Retry-After": "5"})

    bearer = HTTPBearer(auto_error=False, description="api.token (required when not bound to loopback)")

    def require_token(creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> None:
        expected = settings.token
        if expected is None:
            return
        if creds is None or not hmac.compare_digest(creds.credentials.encode(), expected.encode()):
            raise HTTPException(401, "Authorization: a valid bearer token is required",
                                headers={"WWW-Authenticate": "Bearer"})

    router = APIRouter(prefix=PREFIX, dependencies=[Depends(require_token)] if settings.token else [])
    Limit = Annotated[int, Query(ge=1, le=settings.max_rows, description="rows per page (api.max_rows at most)")]
    timeout_s = settings.statement_timeout_ms / 1000 + 5

    async def rows_of(request: Request, sql_: Any, params: dict[str, Any] | None = None) -> list[tuple[Any, ...]]:
        return await db.fetch(request.app.state.pool, sql_, params, timeout=timeout_s)

    def chosen_format(request: Request, fmt: Format | None) -> Format:
        return encode.negotiate(fmt, request.headers.get("accept"))

    def respond(chosen: Format, body: bytes, cursor: str | None) -> Response:
        headers = {"X-Next-Cursor": cursor} if cursor else None
        return Response(body, media_type=encode.MEDIA_TYPES[chosen], headers=headers)

    async def whole(request: Request, fmt: Format | None, times: TimeFormat, columns: tuple[Column, ...],
                    row_sql: Any, raw_time_sql: Any, venue: query.Venue | None) -> Response:
        """An unpaged endpoint: Arrow fetched as columns (collector.api.columnar), the rest as rows."""
        chosen = chosen_format(request, fmt)
        params = {"venues": query.venues_param(venue)}
        if chosen == "arrow":
            try:
                got = await rows_of(request, columnar.columns_sql(raw_time_sql, columns), params)
                arrays, _ = columnar.decode(got[0], columns)
            except columnar.SeparatorInText:  # rare: fetched again with each text value's length
                got = await rows_of(request, columnar.columns_sql(raw_time_sql, columns, text_lengths=True), params)
                arrays, _ = columnar.decode(got[0], columns, text_lengths=True)
            return respond(chosen, encode.arrow_stream(arrays, columns, None), None)
        rows = await rows_of(request, row_sql, params)
        return respond(chosen, encode.render(chosen, rows, columns, times, None), None)

    async def page(request: Request, series: Series, venue: query.Venue | None, symbol: str, start: str | None,
                   end: str | None, cursor: str | None, limit: int, fmt: Format | None, times: TimeFormat,
                   save_reason: str | None = None) -> Response:
        chosen = chosen_format(request, fmt)
        win = query.resolve_window(start, end, cursor, datetime.now(UTC))
        params = {"venues": query.venues_param(venue), "symbol": symbol, "lo": query.ms_to_datetime(win.cursor.ms),
                  "end": win.end, "save_reason": save_reason}
        # Every format from the same column fetch: PostgreSQL reads the venues' key ranges without sorting
        # or casting per row, and no Python object is made per value until JSON/CSV need them. A big page
        # comes as two parts fetched at once (columnar.page_parts, db.fetch_parts).
        parts = [{**params, **part} for part in columnar.page_parts(win.cursor.skip, limit + 1)]
        with_reason = save_reason is not None
        try:
            got = await db.fetch_parts(request.app.state.pool, columnar.venue_pages_sql(series, with_reason), parts,
                                       timeout=timeout_s)
            arrays, ms = columnar.merge_venues(got, series.columns, symbol, win.cursor.skip, limit + 1)
        except columnar.SeparatorInText:  # rare: fetched again with each text value's length
            got = await db.fetch_parts(request.app.state.pool,
                                       columnar.venue_pages_sql(series, with_reason, text_lengths=True), parts,
                                       timeout=timeout_s)
            arrays, ms = columnar.merge_venues(got, series.columns, symbol, win.cursor.skip, limit + 1, True)
        nxt = query.next_cursor(columnar.last_millisecond(ms[:limit]), win.cursor, limit, len(ms))
        shown = [a.slice(0, limit) for a in arrays]
        cur = nxt.encode() if nxt else None
        return respond(chosen, encode.render_arrays(chosen, shown, series.columns, times, cur,
                                                             columnar.PAGE_GIVEN), cur)

    @router.get("/candles", response_model=_page_model("Candles", query.CANDLE_COLUMNS),
                responses=_responses(True), summary="One symbol's candles of one timeframe")
    async def candles(request: Request, symbol: Symbol, venue: VenueParam = None, timeframe: query.Timeframe = "1m",
                      start: Start = None, end: End = None,
                      include_partial: Annotated[bool, Query(
                          description="also the period in progress (default: complete periods only)")] = False,
                      cursor: CursorParam = None, limit: Limit = settings.default_rows,
                      fmt: FormatParam = None, time_format: TimesParam = "iso") -> Response:
        return await page(request, query.candle_series(timeframe, include_partial), venue, symbol, start, end,
                          cursor, limit, fmt, time_format)

    @router.get("/trades", response_model=_page_model("Trades", query.TRADE_COLUMNS),
                responses=_responses(True), summary="One symbol's kept trades (save_reason says why)")
    async def trades(request: Request, symbol: Symbol, venue: VenueParam = None, start: Start = None, end: End = None,
                     save_reason: query.SaveReason | None = None, cursor: CursorParam = None,
                     limit: Limit = settings.default_rows, fmt: FormatParam = None,
                     time_format: TimesParam = "iso") -> Response:
        return await page(request, query.SERIES["trades"], venue, symbol, start, end, cursor, limit, fmt,
                          time_format, save_reason)

    def series_route(name: str, summary: str) -> None:
        series = query.SERIES[name]

        async def endpoint(request: Request, symbol: Symbol, venue: VenueParam = None, start: Start = None,
                           end: End = None, cursor: CursorParam = None, limit: Limit = settings.default_rows,
                           fmt: FormatParam = None, time_format: TimesParam = "iso") -> Response:
            return await page(request, series, venue, symbol, start, end, cursor, limit, fmt, time_format)

        router.add_api_route(f"/{name}", endpoint, methods=["GET"], name=name, summary=summary,
                             response_model=_page_model(name.title().replace("_", ""), series.columns),
                             responses=_responses(True))

    series_route("funding", "One symbol's mark price, index price and funding rate")
    series_route("liquidations", "One symbol's liquidation orders")
    series_route("open_interest", "One symbol's open interest snapshots")

    @router.get("/symbols", response_model=_page_model("Symbols", query.SYMBOL_COLUMNS),
                responses=_responses(False), summary="The universe: each symbol's latest tier and threshold")
    async def symbols(request: Request, venue: VenueParam = None, fmt: FormatParam = None,
                      time_format: TimesParam = "iso") -> Response:
        return await whole(request, fmt, time_format, query.SYMBOL_COLUMNS, query.symbols_sql(),
                           query.symbols_sql(raw_times=True), venue)

    @router.get("/latest", response_model=_page_model("Latest", query.LATEST_COLUMNS),
                responses=_responses(False), summary="Last funding, open interest and 1m close of every symbol")
    async def latest(request: Request, venue: VenueParam = None, fmt: FormatParam = None,
                     time_format: TimesParam = "iso") -> Response:
        return await whole(request, fmt, time_format, query.LATEST_COLUMNS, query.latest_sql(),
                           query.latest_sql(raw_times=True), venue)

    app.include_router(router)
    _refine_openapi(app.openapi())
    return app


def _refine_openapi(spec: dict[str, Any]) -> None:
    """State the time and cursor grammars in the (cached) OpenAPI document: FastAPI knows them only as
    strings, and clients and the property test need to know exactly what is accepted."""
    exact = {"start": query.TIME_SCHEMA, "end": query.TIME_SCHEMA, "cursor": query.CURSOR_SCHEMA}
    for path in spec["paths"].values():
        for op in path.values():
            for param in op.get("parameters", []):
                if param["name"] in exact:
                    param["schema"] = {**exact[param["name"]], "description": param.get("description", "")}

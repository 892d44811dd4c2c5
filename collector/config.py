"""The collector's configuration: one typed, validated, picklable object built from config/main.yaml.

Validation happens here and only here, so a bad file fails at start-up (or is rejected on SIGHUP) with
one line naming the field and the problem, instead of surfacing later inside a worker. msgspec does
the type checking and gives the path of the offending field; the few rules it cannot express
(durations, cross-field checks) are in `__post_init__`.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal, get_args

import msgspec
import yaml

from collector.feed.endpoints import PRESETS, VENUE_DEFAULTS, VENUES, Endpoints
from collector.symbols import valid_symbol

DataType = Literal[
    "trades", "funding", "candles_1m", "candles_5m", "candles_30m", "candles_4h", "candles_1d",
    "liquidations", "open_interest",
]
ALL_DATA_TYPES: tuple[DataType, ...] = get_args(DataType)

Positive = Annotated[float, msgspec.Meta(gt=0)]
PositiveInt = Annotated[int, msgspec.Meta(gt=0)]
Fraction = Annotated[float, msgspec.Meta(gt=0, le=1)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d|w|y)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400, "y": 365 * 86400}
FOREVER = ("forever", "never", "none", "")


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message is one line naming the field."""


def parse_duration(value: str | int | float | None, field: str) -> timedelta | None:
    """'7d', '12h', '90m', '1y', a number of seconds, or forever/null (None)."""
    if value is None or (isinstance(value, str) and value.strip().lower() in FOREVER):
        return None
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a duration like '7d', got {value!r}")
    if isinstance(value, int | float):
        if value <= 0:
            raise ValueError(f"{field}: duration must be positive, got {value!r}")
        return timedelta(seconds=value)
    m = _DURATION.match(value)
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"{field}: expected a duration like '30s', '5m', '12h', '7d', '1y' or 'forever', got {value!r}")
    return timedelta(seconds=float(m.group(1)) * _UNIT_SECONDS[m.group(2)])


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class DatabaseConfig(_Section):
    """Where rows go. No url and no host means the embedded PostgreSQL in `embedded_dir`."""

    url: str | None = None
    host: str | None = None
    port: Port = 5432
    user: str = "postgres"
    password: str | None = None
    password_env: str | None = None
    password_file: str | None = None
    database: str = "collector"
    mode: Literal["auto", "timescaledb", "postgres"] = "auto"
    embedded_dir: str = "data/postgres"

    def __post_init__(self) -> None:
        given = [n for n in ("password", "password_env", "password_file") if getattr(self, n)]
        if len(given) > 1:
            raise ValueError(f"database: give only one of password, password_env, password_file (got {', '.join(given)})")
        if self.url and self.host:
            raise ValueError("database: give either url or host/port/user/database, not both")

    @property
    def embedded(self) -> bool:
        return not self.url and not self.host

    def resolve_password(self) -> str | None:
        """Read the password at connect time so it never sits in the config object that gets logged."""
        if self.password_env:
            value = os.environ.get(self.password_env)
            if value is None:
                raise ConfigError(f"database.password_env: environment variable {self.password_env} is not set")
            return value
        if self.password_file:
            try:
                return Path(self.password_file).read_text().strip()
            except OSError as e:
                raise ConfigError(f"database.password_file: cannot read {self.password_file}: {e.strerror}") from e
        return self.password

    def __repr__(self) -> str:  # never print a secret
        return f"DatabaseConfig(url={'<set>' if self.url else None}, host={self.host!r}, database={self.database!r})"


class CollectionConfig(_Section):
    data_types: list[DataType] = msgspec.field(default_factory=lambda: list(ALL_DATA_TYPES))
    # Empty: every USDT-M perpetual in TRADING. Otherwise only these (still validated against the venue),
    # each in its venue's own spelling (BTCUSDT on Binance and Bybit, BTC-USDT-SWAP on OKX).
    symbols: list[str] = msgspec.field(default_factory=list)
    # The venues collected, each at most once: any of binance, okx, bybit (collector.feed.endpoints.VENUES).
    exchanges: list[str] = msgspec.field(default_factory=lambda: ["binance"])

    def __post_init__(self) -> None:
        if not self.data_types:
            raise ValueError("collection.data_types: at least one data type is needed")
        bad = [s for s in self.symbols if not valid_symbol(s)]
        if bad:
            raise ValueError(f"collection.symbols: not a symbol name of any venue: {bad[0]!r}")
        if problem := exchanges_problem(self.exchanges):
            raise ValueError(f"collection.exchanges: {problem}")


def exchanges_problem(names: list[str]) -> str | None:
    """Why a `collection.exchanges` list is refused (unknown name, duplicate, empty), or None if it is fine."""
    if not names:
        return f"at least one exchange is needed (choose from {', '.join(VENUES)})"
    seen: set[str] = set()
    for name in names:
        if name not in VENUES:
            return f"unknown exchange {name!r} (choose from {', '.join(VENUES)})"
        if name in seen:
            return f"{name!r} is listed twice"
        seen.add(name)
    # Binance and Bybit together are fine although both name their perpetuals BTCUSDT: stored rows carry
    # the venue in every key, and the supervisor keys its per-symbol state by venue too
    # (collector.runtime.symbol_keys).
    return None


class VenueEndpointsConfig(_Section):
    """One venue's REST base URL and WebSocket base URL (the venue's paths are appended by its feed)."""

    rest_url: str
    ws_url: str

    def endpoints(self) -> Endpoints:
        return Endpoints(self.rest_url, self.ws_url)


def _venue_default(venue: str) -> VenueEndpointsConfig:
    e = VENUE_DEFAULTS[venue]
    return VenueEndpointsConfig(rest_url=e.rest, ws_url=e.ws)


class ExchangeConfig(_Section):
    """Endpoints: a preset (binance, testnet) or explicit URLs (e.g. a local simulator)."""

    preset: Literal["binance", "testnet"] | None = "binance"
    rest_url: str | None = None
    ws_url: str | None = None
    # A stream silent this long has its connection restarted. Binance sends markPrice every 3 s for every
    # symbol, so 60 s of silence on a connection means it is broken, not that the market is quiet.
    silent_timeout_s: Positive = 60.0
    # Share of Binance's 2400/min REST weight this collector may use, leaving room for anything else
    # running from the same IP.
    rest_weight_per_min: PositiveInt = 1200
    # How often a worker reads the unfinished repairs of its symbols from the gaps table (also once at
    # start): picks up what a killed predecessor or a stopped run left, and repairs whose REST failed.
    gap_rescan_s: Positive = 60.0
    universe_refresh_s: Positive = 3600.0
    # WebSocket client: picows (Cython frame parsing, ~7x cheaper per frame) when installed, else the
    # websockets library cryptofeed uses. "websockets" forces cryptofeed's own.
    ws_client: Literal["auto", "picows", "websockets"] = "auto"
    # After a turn of light reads that came soon after the previous one, a worker rests until the next tick of
    # a grid this many ms apart (one grid for every process of the machine, so the workers wake together), and
    # what arrives meanwhile is read in one go: on a VM each wake-up costs more than its frames (picows only;
    # 0: never rest). A row waits at most this much longer to be read; no rest while a REST request is in
    # flight (its answer would wait out the rests); collector.feed.pacing.
    read_rest_ms: Annotated[int, msgspec.Meta(ge=0, le=1000)] = 80
    # OKX and Bybit endpoints (used when collection.exchanges names them): base URLs, e.g. a simulator's
    # http://127.0.0.1:PORT and ws://127.0.0.1:PORT; OKX's /ws/v5/public and /ws/v5/business and Bybit's
    # /v5/public/linear are appended by their feeds (collector.feed.venue_feed).
    okx: VenueEndpointsConfig = msgspec.field(default_factory=lambda: _venue_default("okx"))
    bybit: VenueEndpointsConfig = msgspec.field(default_factory=lambda: _venue_default("bybit"))

    def __post_init__(self) -> None:
        if (self.rest_url is None) != (self.ws_url is None):
            raise ValueError("exchange: give both rest_url and ws_url, or neither (and a preset)")
        if self.rest_url is None and self.preset is None:
            raise ValueError("exchange: set a preset (binance, testnet) or rest_url and ws_url")
        try:
            self.endpoints()
        except ValueError as e:
            raise ValueError(f"exchange: {e}") from None
        for venue in ("okx", "bybit"):
            try:
                getattr(self, venue).endpoints()
            except ValueError as e:
                raise ValueError(f"exchange.{venue}: {e}") from None

    def venue_endpoints(self, venue: str) -> Endpoints:
        """The endpoints of one venue of collection.exchanges (Binance's: the preset or rest_url/ws_url)."""
        if venue == "binance":
            return self.endpoints()
        cfg: VenueEndpointsConfig = getattr(self, venue)
        return cfg.endpoints()

    def endpoints(self) -> Endpoints:
        if self.rest_url is not None and self.ws_url is not None:
            return Endpoints(self.rest_url, self.ws_url)
        assert self.preset is not None
        return PRESETS[self.preset]


class TradeFilterConfig(_Section):
    """The smart trade filter: see collector/pipeline/trade_filter.py for what each rule keeps."""

    keep_all: bool = False
    price_change_pct: Positive = 0.5
    # Seconds between periodic samples of a symbol, per tier (0 = busiest).
    tier_intervals_s: list[Positive] = msgspec.field(default_factory=lambda: [60.0, 120.0, 300.0, 900.0])
    tier_multipliers: list[Positive] = msgspec.field(default_factory=lambda: [2.0, 1.8, 1.5, 1.2])
    tier_cutoffs: list[Fraction] = msgspec.field(default_factory=lambda: [0.02, 0.10, 0.30])
    score_weights: list[Annotated[float, msgspec.Meta(ge=0)]] = msgspec.field(
        default_factory=lambda: [0.4, 0.3, 0.2, 0.1])
    # The size quantile the tier multipliers apply to. The rule as first specified used P90, but on a
    # heavy-tailed market 1.2-2.0 x P90 keeps ~6% of all trades (bench/filter_budget.py: 6.05% on the
    # simulator at the seed's rate) against a budget of 1%; 1.2-2.0 x P99 keeps 0.6% (~450 rows/min).
    threshold_quantile: Annotated[float, msgspec.Meta(gt=0, lt=1)] = 0.99
    stats_window: str = "24h"
    tier_interval: str = "24h"
    # First computation from our own statistics after a start without stored tiers. The bootstrap from
    # ticker/24hr only approximates sizes (its count is of individual fills, not of aggTrades, so its
    # average size is low by the fills-per-aggTrade factor); ten minutes of live trades is enough for
    # every active symbol's quantile.
    tier_warmup: str = "10m"

    @property
    def stats_window_s(self) -> float:
        """filters.trades.stats_window in seconds: the span the per-symbol activity statistics cover."""
        window = parse_duration(self.stats_window, "filters.trades.stats_window")
        if window is None:  # refused by __post_init__; kept for the type checker
            raise ValueError("filters.trades.stats_window: not a duration")
        return window.total_seconds()

    def __post_init__(self) -> None:
        for name, want in (("tier_intervals_s", 4), ("tier_multipliers", 4), ("tier_cutoffs", 3), ("score_weights", 4)):
            if len(getattr(self, name)) != want:
                raise ValueError(f"filters.trades.{name}: expected {want} values, got {len(getattr(self, name))}")
        if self.tier_cutoffs != sorted(self.tier_cutoffs):
            raise ValueError("filters.trades.tier_cutoffs: must be increasing, e.g. [0.02, 0.10, 0.30]")
        if parse_duration(self.stats_window, "filters.trades.stats_window") is None:
            raise ValueError("filters.trades.stats_window: a rolling window needs a duration like '24h', not forever")
        parse_duration(self.tier_interval, "filters.trades.tier_interval")
        parse_duration(self.tier_warmup, "filters.trades.tier_warmup")


class FundingFilterConfig(_Section):
    min_interval_s: Positive = 60.0


class OpenInterestConfig(_Section):
    interval_s: Positive = 300.0


class FiltersConfig(_Section):
    trades: TradeFilterConfig = msgspec.field(default_factory=TradeFilterConfig)
    funding: FundingFilterConfig = msgspec.field(default_factory=FundingFilterConfig)
    open_interest: OpenInterestConfig = msgspec.field(default_factory=OpenInterestConfig)


DEFAULT_RETENTION = {
    "trades": "7d", "funding": "30d", "liquidations": "30d", "open_interest": "30d",
    "candles_1m": "90d", "candles_5m": "180d", "candles_30m": "1y", "candles_4h": "2y", "candles_1d": "forever",
}


class RetentionConfig(_Section):
    trades: str | None = DEFAULT_RETENTION["trades"]
    funding: str | None = DEFAULT_RETENTION["funding"]
    liquidations: str | None = DEFAULT_RETENTION["liquidations"]
    open_interest: str | None = DEFAULT_RETENTION["open_interest"]
    candles_1m: str | None = DEFAULT_RETENTION["candles_1m"]
    candles_5m: str | None = DEFAULT_RETENTION["candles_5m"]
    candles_30m: str | None = DEFAULT_RETENTION["candles_30m"]
    candles_4h: str | None = DEFAULT_RETENTION["candles_4h"]
    candles_1d: str | None = DEFAULT_RETENTION["candles_1d"]

    def __post_init__(self) -> None:
        self.periods()

    def periods(self) -> dict[str, timedelta | None]:
        """Retention per table; None keeps forever."""
        return {name: parse_duration(getattr(self, name), f"retention.{name}") for name in DEFAULT_RETENTION}


class WriterConfig(_Section):
    # A table's rows are loaded once this many are waiting: big enough that COPY's per-statement cost
    # is amortised, small enough to bound memory.
    batch_rows: PositiveInt = 20000
    # A worker sends a table's rows once it has processed what it read, but at most one batch per table per
    # this many ms (collector.pipeline.flush): the longest a row waits in a worker.
    flush_interval_ms: PositiveInt = 50
    # The writer's hold: a table is committed once its oldest waiting batch is this old, counted from when
    # its worker sent it (0: at every writer turn). Batches arriving meanwhile share the COPY, so this bounds
    # COPYs per table per second at low rates; a row waits at most both holds plus one COPY. Short because the
    # workers' batches of one rest's tick arrive within a few ms of each other (collector.feed.pacing).
    commit_wait_ms: Annotated[int, msgspec.Meta(ge=0, le=60_000)] = 20
    spool_dir: str = "data/spool"
    spool_max_mb: PositiveInt = 2048
    # What each worker may hold in batches the writer has not acknowledged (committed or spooled) before it
    # stops reading the exchange: ~minutes of filtered data, tens of seconds of keep_all at full rate.
    # Read when a worker starts (a SIGHUP that changes only this applies to workers started afterwards).
    worker_max_unacked_mb: PositiveInt = 64


class MonitoringConfig(_Section):
    metrics_enabled: bool = True
    health_check_host: str = "127.0.0.1"
    health_check_port: Port = 8080
    stats_interval: Positive = 300.0
    # A child whose heartbeat (its stats slot) has not changed for this long is hung: SIGABRT, SIGKILL,
    # replacement. Workers beat every 0.5 s; the writer after every loop turn, and one turn may hold a
    # statement for up to its 60 s statement_timeout plus a 5 s connect: 120 s leaves room for that. The
    # floor of 10 s matches /health's "not publishing" rule: a shorter timeout would kill children for a
    # slow moment (a spool fsync, a 16 MB replay) that /health does not even report.
    heartbeat_timeout_s: Annotated[float, msgspec.Meta(ge=10)] = 120.0


class LoggingConfig(_Section):
    level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = "INFO"
    filename: str = "logs/cryptofeed_monitor.log"
    max_bytes: PositiveInt = 50 * 1024 * 1024
    backup_count: Annotated[int, msgspec.Meta(ge=0)] = 5


class ApiConfig(_Section):
    """`collector api`, the read-only HTTP API (collector/api). Off loopback it needs a bearer token."""

    host: str = "127.0.0.1"
    port: Port = 8081
    # The bearer token: one of token / token_file; otherwise the environment variable named by token_env
    # when it is set. Read at start, never logged.
    token: str | None = None
    token_file: str | None = None
    token_env: str = "COLLECTOR_API_TOKEN"
    # A SELECT-only role's URL (README "Read API"); default: the collector's own database settings.
    database_url: str | None = None
    max_rows: Annotated[int, msgspec.Meta(ge=1, le=1_000_000)] = 100_000  # rows per request, at most
    default_rows: PositiveInt = 10_000   # rows per request when `limit` is not given
    statement_timeout_ms: PositiveInt = 5_000
    pool_size: Annotated[int, msgspec.Meta(ge=1, le=100)] = 4

    def __post_init__(self) -> None:
        if self.token and self.token_file:
            raise ValueError("api: give only one of token, token_file")
        if self.default_rows > self.max_rows:
            raise ValueError(f"api.default_rows: must not exceed api.max_rows ({self.max_rows})")

    def resolve_token(self) -> str | None:
        """The configured token, read now (a file or the environment), or None when there is none."""
        if self.token_file:
            try:
                value = Path(self.token_file).read_text().strip()
            except OSError as e:
                raise ConfigError(f"api.token_file: cannot read {self.token_file}: {e.strerror}") from e
            if not value:
                raise ConfigError(f"api.token_file: {self.token_file} is empty")
            return value
        return self.token or os.environ.get(self.token_env) or None

    def __repr__(self) -> str:  # never print a secret
        return (f"ApiConfig(host={self.host!r}, port={self.port}, token={'<set>' if self.token else None}, "
                f"database_url={'<set>' if self.database_url else None})")


class Config(_Section):
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    collection: CollectionConfig = msgspec.field(default_factory=CollectionConfig)
    exchange: ExchangeConfig = msgspec.field(default_factory=ExchangeConfig)
    filters: FiltersConfig = msgspec.field(default_factory=FiltersConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    writer: WriterConfig = msgspec.field(default_factory=WriterConfig)
    monitoring: MonitoringConfig = msgspec.field(default_factory=MonitoringConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
    api: ApiConfig = msgspec.field(default_factory=ApiConfig)


def config_from_dict(raw: object, source: str = "<config>") -> Config:
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: expected a mapping of sections at the top level, got {type(raw).__name__}")
    try:
        return msgspec.convert(raw, Config)
    except msgspec.ValidationError as e:
        text = str(e)
        path = ""
        if " - at `$" in text:
            text, _, where = text.rpartition(" - at `$")
            path = where.rstrip("`").lstrip(".")
        if path and not text.startswith(path.split("[")[0].split(".")[0]):
            text = f"{path}: {text}"
        raise ConfigError(f"{source}: {text}") from None


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML file; raises ConfigError with one line naming the field."""
    p = Path(path)
    try:
        text = p.read_text()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read config: {e.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ConfigError(f"{p}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    return config_from_dict(raw, str(p))

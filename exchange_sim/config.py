"""Every tunable of the simulator in one dataclass, shared by the CLI, the Python API and the tests."""

from __future__ import annotations

from dataclasses import dataclass, field

# Perpetuals each venue lists by default: Binance's USDT-M count, OKX's and Bybit's rough USDT-linear counts.
DEFAULT_SYMBOLS = {"binance": 496, "okx": 250, "bybit": 400}


@dataclass
class SimConfig:
    host: str = "127.0.0.1"
    # 0 lets the OS pick a free port; the chosen one is printed on the "ready" line.
    port: int = 0
    # Which exchange's wire protocol is spoken: "binance", "okx" or "bybit" (same market model for all).
    venue: str = "binance"
    # Tradable perpetuals; None = the venue's default (DEFAULT_SYMBOLS), the number a collector must scale to.
    symbols: int | None = None
    # aggTrades per second of *sim* time over the whole market (wall rate = rate * speed).
    rate: float = 1260.0
    seed: int = 7
    # Sim seconds per wall second: 60 lets a 1m kline close every wall second in tests.
    speed: float = 1.0
    # Sim clock origin (ms since epoch). None = the current wall time floored to the minute; a fixed value
    # makes every timestamp reproducible, not just the event sequence.
    start_ms: int | None = None
    # Funding settlements every this many sim ms, aligned to the epoch (every venue settles every 8 h); a
    # test that needs a settlement inside a short run sets one minute.
    funding_period_ms: int = 8 * 3600 * 1000
    # Wall milliseconds between two passes of the event loop; each pass writes everything that became due
    # as one write per connection. 10 ms keeps latency far below Binance's own ~50 ms jitter while
    # amortising syscalls over many frames.
    tick_ms: float = 10.0
    # Binance pushes open-kline updates about every 250 ms.
    kline_push_ms: float = 250.0
    # Intervals whose klines are computed (cheap: higher intervals are folded from closed 1m klines).
    kline_intervals: tuple[str, ...] = (
        "1m", "3m", "5m", "15m", "30m", "1h", "2h", "4h", "6h", "8h", "12h", "1d", "3d", "1w", "1M")
    # Per-symbol aggTrade history kept for REST /fapi/v1/aggTrades backfill.
    trade_history: int = 10_000
    # 1m klines kept per symbol for REST /fapi/v1/klines (Binance allows limit up to 1500).
    kline_history: int = 1500
    # Binance pings every 3 minutes and drops a connection that has not answered within 10 minutes.
    ping_interval_s: float = 180.0
    pong_timeout_s: float = 600.0
    # Binance disconnects every WebSocket after 24 h; measured in sim time so tests can reach it.
    max_conn_age_s: float = 86_400.0
    # Binance: 1024 streams per connection; more is rejected.
    max_streams: int = 1024
    # REST request weight per IP per minute (Binance USDT-M: 2400).
    weight_limit: int = 2400
    # Requests sent while already rate limited before the IP is banned (Binance does not publish the
    # threshold; 3 makes the escalation observable quickly).
    ban_after_429s: int = 3
    # Binance's first IP ban lasts 2 minutes.
    ban_seconds: float = 120.0
    # A subscriber that lets this much output queue up is cut off, as Binance does with slow readers.
    max_buffer_bytes: int = 64 * 1024 * 1024
    truth_file: str | None = None
    # Fault flags set at start-up (all also available at run time).
    drop_prob_per_s: float = 0.0
    malformed_rate: float = 0.0
    replay: str | None = None
    # Replay pacing: 1 = recorded pace, N = N times faster, 0 = as fast as the subscriber reads.
    replay_speed: float = 1.0
    # OKX/Bybit REST: override every endpoint's documented request limit per window (tests make it small).
    venue_rest_limit: int | None = None
    # OKX/Bybit: keep every trade sent in the ground truth (value by value; memory grows with the run).
    truth_trades: bool = False
    extra: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.venue not in DEFAULT_SYMBOLS:
            raise ValueError(f"venue: unknown venue {self.venue!r} (one of {', '.join(DEFAULT_SYMBOLS)})")
        if self.symbols is None:
            self.symbols = DEFAULT_SYMBOLS[self.venue]

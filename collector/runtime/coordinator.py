"""The coordinator: the collector's domain work, run off the arbiter's loop.

Why apart from the arbiter (collector.runtime.arbiter): the arbiter must notice a dead or hung child
within a second whatever the exchange or the database does, and this work waits on both: the universe
refresh (exchangeInfo over HTTP, up to FETCH_TIMEOUT_S), the tier computation and its storage, the copy
of the checkpoint block to the database (each connection up to DB_CONNECT_TIMEOUT_S). So it runs in two
threads of its own:

- the I/O thread: universe refresh of every venue of collection.exchanges and shard assignment (listings
  go to the least loaded worker of their venue, delistings leave theirs; collector.runtime.venue_shards), tiers computed from the workers' statistics, stored with history and sent to
  the workers, and the checkpoint block's periodic copy;
- the relay thread: what must stay prompt while the I/O thread waits, i.e. a 429/418 one worker got
  spread to every worker of the same venue (limits are per IP and venue), and the periodic stats log line.

It never touches a process. What concerns children goes to the arbiter as a message (`post`): send a
control message to worker i, or replace worker i with these symbols. The arbiter reads the assignment,
the tiers and the symbol slots (under the coordinator's lock) when it spawns a worker.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from collector.config import Config, parse_duration
from collector.feed.endpoints import Endpoints
from collector.feed.universe import select_universe
from collector.feed.venue_universe import fetch_venue_universe
from collector.feed.venues.common import ContractSize, VenueSymbol, binance_symbol
from collector.pipeline.tiers import TierAssignment, TierParams
from collector.runtime import checkpoints, symbol_keys
from collector.runtime.logs import mask_secrets
from collector.runtime.shm import StatsBlock
from collector.runtime.tier_inputs import merge_activity
from collector.runtime.venue_shards import by_venue, reassign, reassign_venue, tiers_per_venue

if TYPE_CHECKING:
    from collector.runtime.checkpoint_block import CheckpointBlock

log = logging.getLogger(__name__)

# exchangeInfo and ticker/24hr are a few MB from Binance; a healthy exchange answers in well under a
# second, and 30 s is where a slow answer becomes a failed attempt (the next refresh tries again).
FETCH_TIMEOUT_S = 30.0
# A reachable database answers in milliseconds; an unreachable host must not hold a tier computation or a
# checkpoint copy for the OS's TCP timeout.
DB_CONNECT_TIMEOUT_S = 10
# The relay thread's period: bounds how late a REST pause is relayed. Also the I/O thread's shortest sleep
# between rounds (a round that failed is retried this much later, not in a tight loop); otherwise that thread
# sleeps until its earliest job is due (or a SIGHUP or the stop wakes it).
TICK_S = 1.0
# When a tier computation finds no statistics yet (workers still starting), try again this much later.
TIER_RETRY_S = 60.0


def fetch_json(url: str, timeout: float = FETCH_TIMEOUT_S) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured endpoint
        return json.loads(resp.read())


def fetch_universe(rest_url: str, wanted: Sequence[str] = ()) -> list[str]:
    """USDT-M perpetuals in TRADING, narrowed to `wanted` (collection.symbols) when that is set."""
    info = fetch_json(f"{rest_url}/fapi/v1/exchangeInfo")
    if not isinstance(info, dict):
        raise ValueError("exchangeInfo is not a JSON object")
    universe = select_universe(info)
    if wanted:
        missing = sorted(set(wanted) - set(universe))
        if missing:
            log.warning("configured symbols not trading on the exchange, skipped: %s", ", ".join(missing))
        universe = [s for s in universe if s in set(wanted)]
    return universe


def fetch_venue_symbols(venue: str, rest_url: str, wanted: Sequence[str] = ()) -> list[VenueSymbol]:
    """One venue's perpetuals in trading state, with their cross-venue names and contract sizes, narrowed
    to `wanted` (the venue's own names) when that is set."""
    if venue == "binance":
        out = []
        for name in fetch_universe(rest_url, wanted):
            try:
                out.append(binance_symbol(name))
            except ValueError as e:  # not a ...USDT name: collected, but it has no cross-venue name
                log.warning("binance: %s", e)
                out.append(VenueSymbol("binance", name, "", ContractSize("1")))
        return out
    universe = fetch_venue_universe(venue, rest_url, fetch_json)
    if wanted:
        universe = [s for s in universe if s.name in set(wanted)]
    return universe


def fetch_venue_names(venue: str, rest_url: str, wanted: Sequence[str] = ()) -> list[str]:
    """One venue's perpetuals in trading state (its own names), narrowed to `wanted` when that is set."""
    return [s.name for s in fetch_venue_symbols(venue, rest_url, wanted)]


def tier_params(cfg: Config) -> TierParams:
    tf = cfg.filters.trades
    w = tf.score_weights  # four of them (collector.config checks)
    weights = (w[0], w[1], w[2], w[3])
    return TierParams(weights=weights, cutoffs=tuple(tf.tier_cutoffs), multipliers=tuple(tf.tier_multipliers),
                      quantile=tf.threshold_quantile)


def record_universe(dsn: str | None, symbols: Sequence[VenueSymbol]) -> None:
    """A venue's universe into `instruments` (collector.db.instruments_repo); a failure is logged only:
    the table serves cross-venue queries, never the collection itself."""
    if dsn is None or not symbols:
        return
    import psycopg

    from collector.db import instruments_repo

    try:
        with psycopg.connect(dsn, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
            instruments_repo.upsert_instruments(conn, instruments_repo.from_venue_symbols(symbols),
                                                datetime.now(UTC))
    except Exception as e:  # retried at the next universe refresh
        log.warning("could not record the instruments: %s", mask_secrets(str(e)))


@dataclass(frozen=True)
class Send:
    """Put `message` on worker `index`'s control queue (collector.runtime.worker_control.read_control)."""

    index: int
    message: tuple[str, Any]


@dataclass(frozen=True)
class Replace:
    """Replace worker `index` by a successor collecting `symbols` (successor first, then retire)."""

    index: int
    symbols: list[str]


Command = Send | Replace


class Coordinator:
    """Universe, shards, tiers and the REST-pause relay for one run; `start()`, then `stop()` at shutdown."""

    def __init__(self, cfg: Config, endpoints: Endpoints, dsn: str, stats: StatsBlock,
                 block: CheckpointBlock | None, universe: list[str], shards: list[list[str]],
                 symbol_slots: dict[str, int], tiers: dict[str, TierAssignment], tiers_ms: int | None,
                 post: Callable[[Command], None], log_stats: Callable[[], None] = lambda: None,
                 venues: list[str] | None = None, universes: dict[str, list[str]] | None = None,
                 venue_endpoints: dict[str, Endpoints] | None = None) -> None:
        """`venues[i]`: the venue worker i serves (default: Binance for all); `universes` per venue (default:
        `universe` is Binance's); `venue_endpoints` the other venues' endpoints (default: the configured).

        Shards and `universes` hold each venue's own names (a shard is one venue's); `universe`,
        `symbol_slots` and `tiers` span every venue, so they are keyed by collector.runtime.symbol_keys.key
        (Binance and Bybit share names such as BTCUSDT)."""
        self.cfg, self.endpoints, self.dsn = cfg, endpoints, dsn
        self.stats, self.block, self.post, self.log_stats = stats, block, post, log_stats
        self._lock = threading.Lock()  # guards universe(s), shards, symbol_slots, tiers, tiers_ms
        self.universe, self.shards, self.symbol_slots = universe, shards, symbol_slots
        self.venues = venues if venues is not None else ["binance"] * len(shards)
        self.universes = universes if universes is not None else {"binance": list(universe)}
        self.venue_endpoints = dict(venue_endpoints or {})
        self.tiers, self.tiers_ms = tiers, tiers_ms
        self.rest_paused_until = 0.0
        self.venue_paused_until: dict[str, float] = {}
        self._stop = threading.Event()
        self._refresh_now = threading.Event()  # SIGHUP changed the collection: refresh and replace all
        self._force_replace = False
        self._threads: list[threading.Thread] = []
        self.next_tiers = self.next_universe = self.next_checkpoint_save = self.next_stats_log = 0.0

    # --- what the arbiter reads and tells ----------------------------------------------------------------

    def worker_inputs(self, index: int) -> tuple[list[str], dict[str, TierAssignment], bool, dict[str, int]]:
        """(symbols, their tiers, tiers provisional, their stats slots) for a spawn of worker `index`: all by
        the worker's venue's own names, the only ones a worker knows."""
        venue = self.venues[index]
        with self._lock:
            symbols = list(self.shards[index])
            return (symbols, symbol_keys.of_venue(self.tiers, venue, symbols), self.tiers_ms is None,
                    symbol_keys.of_venue(self.symbol_slots, venue, symbols))

    def worker_venue(self, index: int) -> str:
        """The venue worker `index` serves (fixed for the run: a worker never changes venue)."""
        return self.venues[index]

    def endpoints_of(self, venue: str) -> Endpoints:
        if venue == "binance":
            return self.endpoints
        return self.venue_endpoints.get(venue) or self.cfg.exchange.venue_endpoints(venue)

    def tiers_view(self) -> tuple[dict[str, TierAssignment], int | None]:
        with self._lock:
            return self.tiers, self.tiers_ms

    def reconfigure(self, cfg: Config, endpoints: Endpoints, dsn: str, collection_changed: bool) -> None:
        """SIGHUP: the new configuration; a changed collection refreshes the universe and replaces every worker."""
        self.cfg, self.endpoints, self.dsn = cfg, endpoints, dsn
        if collection_changed:
            self._force_replace = True
            self._refresh_now.set()

    def start(self) -> None:
        """Schedule every job from now (the children have just been spawned) and start both threads."""
        now = time.monotonic()
        self.next_tiers = self._tiers_due(now)
        self.next_universe = now + self.cfg.exchange.universe_refresh_s
        self.next_checkpoint_save = now + checkpoints.CHECKPOINT_SAVE_S
        self.next_stats_log = now + self.cfg.monitoring.stats_interval
        for name, target in (("coordinator-io", self._io_loop), ("coordinator-relay", self._relay_loop)):
            t = threading.Thread(target=target, name=name, daemon=True)  # never holds the supervisor's exit
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 1.0) -> None:
        """Stop both threads; an I/O call in flight is abandoned (daemon thread), not waited for."""
        self._stop.set()
        self._refresh_now.set()
        for t in self._threads:
            t.join(timeout)

    # --- the threads -------------------------------------------------------------------------------------

    def _io_loop(self) -> None:
        failed = False
        while not self._stop.is_set():
            self._refresh_now.wait(TICK_S if failed else max(TICK_S, self.io_due() - time.monotonic()))
            if self._stop.is_set():
                return
            try:
                self.io_round(time.monotonic())
                failed = False
            except Exception:  # a bug here must not end the collector's tiers and universe for good
                log.exception("coordinator: I/O round failed; carrying on")
                failed = True

    def io_due(self) -> float:
        """When the I/O thread next has a job (time.monotonic()): tiers, universe refresh or checkpoint copy.
        Its jobs are minutes to hours apart, so it sleeps until then rather than waking every TICK_S."""
        return min(self.next_tiers, self.next_universe, self.next_checkpoint_save)

    def _relay_loop(self) -> None:
        while not self._stop.wait(TICK_S):
            try:
                self.relay_round(time.monotonic())
            except Exception:
                log.exception("coordinator: relay round failed; carrying on")

    def io_round(self, now: float) -> None:
        """Whatever I/O job is due: tiers, universe refresh (or one SIGHUP asked for), checkpoint copy."""
        if now >= self.next_tiers:
            self.next_tiers = self._tiers_due(now) if self.recompute_tiers() else now + TIER_RETRY_S
        if self._refresh_now.is_set() or now >= self.next_universe:
            force, self._force_replace = self._force_replace, False
            self._refresh_now.clear()
            self.next_universe = now + self.cfg.exchange.universe_refresh_s
            self.refresh_universe(force)
        if now >= self.next_checkpoint_save:
            self.next_checkpoint_save = now + checkpoints.CHECKPOINT_SAVE_S
            self.save_checkpoints()

    def relay_round(self, now: float) -> None:
        self.spread_rest_pause()
        if now >= self.next_stats_log:
            self.next_stats_log = now + self.cfg.monitoring.stats_interval
            self.log_stats()

    # --- the jobs ----------------------------------------------------------------------------------------

    def tier_interval_s(self) -> float:
        period = parse_duration(self.cfg.filters.trades.tier_interval, "filters.trades.tier_interval")
        return period.total_seconds() if period else float("inf")

    def _tiers_due(self, now: float) -> float:
        """One tier interval after the last computation; soon (tier_warmup) while tiers are only estimates."""
        if self.tiers_ms:
            age = (time.time() * 1000 - self.tiers_ms) / 1000
            return now + max(0.0, self.tier_interval_s() - age)
        warmup = parse_duration(self.cfg.filters.trades.tier_warmup, "filters.trades.tier_warmup")
        return now + min(self.tier_interval_s(), warmup.total_seconds() if warmup else 0.0)

    def refresh_universe(self, force_replace: bool = False) -> None:
        """Listings and delistings applied without a full restart: only the affected workers are replaced.

        Each venue the run started with is refreshed on its own (one failing venue keeps its universe and
        never holds another's); the venues themselves are fixed for the run (a changed collection.exchanges
        needs a restart: the workers' split depends on it)."""
        if sorted(self.cfg.collection.exchanges) != sorted(self.universes):
            log.error("collection.exchanges changed to %s: a restart is needed to collect other venues; still "
                      "collecting %s", ",".join(self.cfg.collection.exchanges), ",".join(self.universes))
        for venue in list(self.universes):
            # a forced replacement replaces every worker once: with the first venue whose refresh succeeds
            if self._refresh_venue(venue, force_replace):
                force_replace = False

    def _refresh_venue(self, venue: str, force_replace: bool) -> bool:
        """Apply one venue's current universe; False when it could not be read (the current one stays)."""
        try:
            symbols = fetch_venue_symbols(venue, self.endpoints_of(venue).rest, self.cfg.collection.symbols)
        except Exception as e:  # keep the current universe; try again next time
            log.warning("%s universe refresh failed: %s", venue, e)
            return False
        new = [s.name for s in symbols]
        if not new:
            log.error("%s universe refresh: the exchange lists no symbol in trading; keeping the current universe",
                      venue)
            return False
        record_universe(self.dsn, symbols)
        with self._lock:
            if venue == "binance" and list(self.universes) == ["binance"]:
                shards, added, removed = reassign(self.shards, self.universes["binance"], new)
            else:
                shards, added, removed = reassign_venue(self.shards, self.venues, venue, self.universes[venue], new)
            if not added and not removed and not force_replace:
                return True
            for sym in symbol_keys.keys(venue, added):
                if sym in self.symbol_slots:
                    continue
                if len(self.symbol_slots) >= self.stats.symbol_slots:
                    log.error("no statistics slot left for %s: tiers will not see it until a restart", sym)
                else:
                    self.symbol_slots[sym] = len(self.symbol_slots)
            changed = [i for i, s in enumerate(shards) if force_replace or sorted(s) != sorted(self.shards[i])]
            for i in changed:
                shards[i] = sorted(shards[i])
            self.universes[venue] = new
            self.universe = [symbol_keys.key(v, s) for v, names in self.universes.items() for s in names]
            self.shards = shards
        if added or removed:
            log.info("%s universe changed: %d listed (%s), %d delisted (%s)", venue, len(added), " ".join(added[:10]),
                     len(removed), " ".join(sorted(removed)[:10]))
        for i in changed:
            self.post(Replace(i, shards[i]))
        return True

    def recompute_tiers(self) -> bool:
        """Tiers from every worker's published statistics, stored (with history) and sent to the workers.

        False when no statistics exist yet (the current tiers stay).
        """
        params = tier_params(self.cfg)
        now_ms = int(time.time() * 1000)
        with self._lock:
            slots = dict(self.symbol_slots)
        summaries = merge_activity(self.stats, slots, now_ms, params.quantile)
        active = {s: v for s, v in summaries.items() if v.count > 0}
        if not active:
            log.warning("tiers: no trade statistics published yet; keeping the current tiers")
            return False
        with self._lock:
            universes = {v: list(names) for v, names in self.universes.items()}
        tiers = tiers_per_venue(summaries, universes, params)
        with self._lock:
            self.tiers, self.tiers_ms = tiers, now_ms
            shards = [list(s) for s in self.shards]
            venues = list(self.venues)
        counts = Counter(a.tier for a in tiers.values())
        log.info("tiers recomputed from %d symbols' statistics: %s", len(active),
                 ", ".join(f"tier {t}: {counts[t]}" for t in sorted(counts)))
        self._store_tiers(tiers, now_ms)
        for i, symbols in enumerate(shards):  # a worker knows its venue's own names only
            self.post(Send(i, ("tiers", symbol_keys.of_venue(tiers, venues[i], symbols))))
        return True

    def _store_tiers(self, tiers: dict[str, TierAssignment], now_ms: int) -> None:
        import psycopg

        from collector.db import tiers_repo

        try:
            with psycopg.connect(self.dsn, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
                for venue, part in by_venue(tiers, self._universes()).items():
                    tiers_repo.store_tiers(conn, venue, part, datetime.fromtimestamp(now_ms / 1000, UTC))
        except Exception as e:  # the tiers still apply; storing is retried at the next computation
            log.warning("could not store tiers: %s", mask_secrets(str(e)))

    def _universes(self) -> dict[str, list[str]]:
        with self._lock:
            return {v: list(names) for v, names in self.universes.items()}

    def save_checkpoints(self) -> None:
        """Copy the block to the `checkpoints` table (read only: the workers keep writing the block)."""
        import psycopg

        if self.block is None:
            return
        with self._lock:
            slots = dict(self.symbol_slots)
        found = self.block.read_all(slots)
        try:
            with psycopg.connect(self.dsn, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
                for venue, part in by_venue(found, self._universes()).items():
                    checkpoints.save(conn, part, venue=venue)
        except Exception as e:  # kept in shared memory; saved at the next attempt
            log.warning("could not save checkpoints: %s", mask_secrets(str(e)))

    def spread_rest_pause(self) -> None:
        """A 429/418 is per IP and venue: when one worker is told to back off, every worker of its venue backs
        off; other venues' workers go on (their limits are their own)."""
        with self._lock:
            venues = list(self.venues)
        for venue in dict.fromkeys(venues):
            mine = [i for i, v in enumerate(venues) if v == venue]
            until = 0.0
            for i in mine:
                reading = self.stats.read(i + 1)
                if reading is not None and not reading.stale:
                    until = max(until, reading.values.get("rest_paused_until_ms", 0.0))
            if until > time.time() * 1000 and until > self.venue_paused_until.get(venue, 0.0):
                self.venue_paused_until[venue] = until
                self.rest_paused_until = max(self.rest_paused_until, until)
                log.warning("REST rate limited on %s: every worker pauses REST until %s (those of %s; other "
                            "venues go on)", venue, time.strftime("%H:%M:%S", time.gmtime(until / 1000)), venue)
                for i in mine:
                    self.post(Send(i, ("rest_pause", until)))

"""Bootstrap: everything the supervisor needs before its first child is spawned, and its teardown.

Kept apart from the arbiter (collector.runtime.arbiter) because it is slow, one-off and full of I/O: the
startup checks, the `--simulate` simulator, the embedded PostgreSQL, the schema, the starting universe
and its shards, the tiers a restart resumes (or the ticker/24hr estimate), the checkpoints the last run
saved, and the run directory with the shared-memory blocks and the REST budget file. It runs once, before
the arbiter's loop; what it builds is a `Resources`, closed by the supervisor on exit.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from collector import native
from collector.config import Config, load_config
from collector.feed.endpoints import Endpoints
from collector.feed.rest_budget import create_budget_file
from collector.feed.universe import shard
from collector.pipeline.limits import WeightBudget
from collector.pipeline.tiers import TierAssignment, bootstrap_from_ticker_24hr
from collector.runtime import checkpoints, symbol_keys
from collector.runtime.checkpoint_block import CheckpointBlock
from collector.runtime.coordinator import (
    DB_CONNECT_TIMEOUT_S,
    fetch_json,
    fetch_venue_symbols,
    record_universe,
    tier_params,
)
from collector.runtime.run_dir import make_run_dir, name_semaphores, shared_name
from collector.runtime.shm import StatsBlock
from collector.runtime.startup import StartupError, check_machine, prepare_database
from collector.runtime.venue_shards import shard_venues
from collector.sim_options import options_for

if TYPE_CHECKING:
    from collector.db.embedded import EmbeddedPostgres
    from exchange_sim.runner import SimProcess

log = logging.getLogger(__name__)

# Symbol slots in the stats block per symbol of the starting universe: room for listings.
SYMBOL_SLOT_FACTOR = 2


@dataclass
class Resources:
    """What bootstrap started or created; `close()` undoes it (in any state: a failed start too)."""

    endpoints: Endpoints | None = None
    dsn: str | None = None
    sim: SimProcess | None = None
    embedded_pg: EmbeddedPostgres | None = None
    # every venue's symbols, venue after venue, by symbol key (collector.runtime.symbol_keys: Binance and
    # Bybit share names), as are `tiers` and `symbol_slots`; shards and `universes` hold the venues' own names
    universe: list[str] = field(default_factory=list)
    shards: list[list[str]] = field(default_factory=list)
    # per venue of collection.exchanges: its universe and endpoints; and the venue each shard serves
    universes: dict[str, list[str]] = field(default_factory=dict)
    venue_endpoints: dict[str, Endpoints] = field(default_factory=dict)
    shard_venues: list[str] = field(default_factory=list)
    venue_sims: list[SimProcess] = field(default_factory=list)  # --simulate: the OKX / Bybit simulators
    tiers: dict[str, TierAssignment] = field(default_factory=dict)
    tiers_ms: int | None = None  # when the resumed tiers were computed; None: an estimate (or nothing)
    run_dir: str | None = None
    socket_path: str = ""  # the writer's Unix socket (collector.transport)
    rest_budget_path: str = ""  # the workers' shared REST weight budget (collector.feed.rest_budget)
    stats: StatsBlock | None = None
    symbol_slots: dict[str, int] = field(default_factory=dict)
    checkpoints: CheckpointBlock | None = None

    def close(self) -> None:
        if self.stats is not None:
            self.stats.close()
        if self.checkpoints is not None:
            self.checkpoints.close()
        if self.run_dir:
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.sim is not None:
            self.sim.stop()
        for sim in self.venue_sims:
            sim.stop()
        if self.embedded_pg is not None:
            self.embedded_pg.stop()


def load_and_check(config_path: str, simulate: bool, api: bool = False) -> Config:
    """The configuration and every check that needs no database: ConfigError or StartupError (exit 2).

    With `api` (the supervisor runs the read API) its configuration is checked first: it needs no network.
    """
    cfg = load_config(config_path)
    if api:
        from collector.api.serve import startup_problem

        if problem := startup_problem(cfg):
            raise StartupError(problem)
    check_machine(cfg, simulate)  # port, log and spool directories, exchange
    return cfg


def database_dsn(cfg: Config) -> str:
    """The connection string for a configured (non-embedded) database, password resolved now."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    db = cfg.database
    params: dict[str, Any] = conninfo_to_dict(db.url) if db.url else {
        "host": db.host, "port": db.port, "user": db.user, "dbname": db.database}
    password = db.resolve_password()
    if password is not None:
        params["password"] = password
    params.setdefault("application_name", "collector")
    return make_conninfo(**params)


def bootstrap(res: Resources, cfg: Config, n_workers: int, simulate: bool, sim_options: dict[str, Any]) -> None:
    """Fill `res` (started pieces land in it at once, so `res.close()` can undo a failed start)."""
    # compiled or the Python source, and why (collector.native): a warning when a build would run and does not
    (log.info if native.STATUS.compiled or os.environ.get(native.ENV) == "0" else log.warning)(
        "pipeline: %s", native.STATUS.detail)
    _start_exchange(res, cfg, simulate, sim_options)
    _start_database(res, cfg)
    assert res.dsn is not None and res.endpoints is not None
    prepare_database(res.dsn, cfg.database.mode, cfg.retention.periods())
    _starting_universe(res, cfg, n_workers)
    res.run_dir = make_run_dir()  # and removes those of supervisors that were killed (run_dir says why)
    res.socket_path = os.path.join(res.run_dir, "writer.sock")
    res.rest_budget_path = os.path.join(res.run_dir, "rest-budget")
    limit = WeightBudget.BINANCE_LIMIT_PER_MIN
    create_budget_file(res.rest_budget_path, time.time() * 1000, limit,
                       min(1.0, cfg.exchange.rest_weight_per_min / limit))
    # Shared memory and the children's semaphores are named after the run directory, so that the next start
    # removes them too if this supervisor's whole process group is SIGKILLed (collector.runtime.run_dir).
    name_semaphores(res.run_dir)
    res.stats = StatsBlock.create(len(res.shards) + 1, SYMBOL_SLOT_FACTOR * len(res.universe),
                                  name=shared_name(res.run_dir, "stats"))
    res.symbol_slots = {sym: i for i, sym in enumerate(res.universe)}
    res.checkpoints = CheckpointBlock.create(res.stats.symbol_slots, name=shared_name(res.run_dir, "checkpoints"))
    _load_checkpoints(res)


def _start_exchange(res: Resources, cfg: Config, simulate: bool, sim_options: dict[str, Any]) -> None:
    if simulate:
        from exchange_sim.config import SimConfig  # only with --simulate: the data path never needs it
        from exchange_sim.runner import launch_subprocess

        res.sim = launch_subprocess(SimConfig(**options_for(sim_options, "binance")))
        res.endpoints = Endpoints(res.sim.rest_url, res.sim.ws_url)
        log.info("simulator on %s", res.sim.rest_url)
        for venue in cfg.collection.exchanges:  # one simulator per other venue, with its own size and rate
            if venue != "binance":
                sim = launch_subprocess(SimConfig(**options_for(sim_options, venue)))
                res.venue_sims.append(sim)
                res.venue_endpoints[venue] = Endpoints(sim.rest_url, sim.ws_url)
                log.info("%s simulator on %s", venue, sim.rest_url)
    else:
        res.endpoints = cfg.exchange.endpoints()
    for venue in cfg.collection.exchanges:
        res.venue_endpoints.setdefault(venue, res.endpoints if venue == "binance" else
                                       cfg.exchange.venue_endpoints(venue))


def _start_database(res: Resources, cfg: Config) -> None:
    if not cfg.database.embedded:
        res.dsn = database_dsn(cfg)
        return
    from collector.db.embedded import EmbeddedPostgres, PostgresUnavailable

    res.embedded_pg = EmbeddedPostgres(datadir=Path(cfg.database.embedded_dir), database=cfg.database.database)
    try:
        res.dsn = res.embedded_pg.start()
    except (PostgresUnavailable, OSError) as e:  # e.g. initdb (unprivileged) cannot reach the directory
        raise StartupError(f"database.embedded_dir: cannot start the embedded PostgreSQL in "
                           f"{cfg.database.embedded_dir}: {' '.join(str(e).split())}") from None
    log.info("embedded PostgreSQL at %s", res.dsn)


def _starting_universe(res: Resources, cfg: Config, n_workers: int) -> None:
    """Each venue's universe, the shards (one venue per worker: collector.runtime.venue_shards; Binance's
    balanced by ticker/24hr activity) and the tiers to start with."""
    assert res.endpoints is not None
    for venue in cfg.collection.exchanges:
        symbols = fetch_venue_symbols(venue, res.venue_endpoints[venue].rest, cfg.collection.symbols)
        if not symbols:
            raise RuntimeError(f"{venue} lists no USDT-margined perpetual in trading: nothing to collect there")
        res.universes[venue] = [s.name for s in symbols]
        record_universe(res.dsn, symbols)
    res.universe = [symbol_keys.key(v, s) for v, names in res.universes.items() for s in names]
    universe = res.universes.get("binance", [])
    activity: dict[str, float] = {}
    rows: list[dict[str, Any]] = []
    try:
        if universe:
            fetched = fetch_json(f"{res.endpoints.rest}/fapi/v1/ticker/24hr")
            assert isinstance(fetched, list)
            rows = [r for r in fetched if isinstance(r, dict) and r.get("symbol") in set(universe)]
            activity = {r["symbol"]: float(r.get("quoteVolume") or 0) for r in rows}
    except Exception as e:  # shards then ignore activity; tiers start at the filter's defaults
        log.warning("could not read ticker/24hr: %s", e)
    if not _resume_tiers(res) and rows:
        res.tiers = bootstrap_from_ticker_24hr(rows, tier_params(cfg))
        log.info("tiers bootstrapped from ticker/24hr until statistics cover a tier interval")
    if list(res.universes) == ["binance"]:  # Binance alone: as before, never more workers than symbols
        res.shards = shard(universe, min(n_workers, len(universe)), activity)
        res.shard_venues = ["binance"] * len(res.shards)
    else:
        res.shards, res.shard_venues = shard_venues(res.universes, n_workers, {"binance": activity})
    log.info("universe: %d symbols over %d workers (%s)", len(res.universe), len(res.shards),
             ", ".join(f"{v}: {len(res.universes[v])} symbols, {res.shard_venues.count(v)} workers"
                       for v in res.universes))


def _resume_tiers(res: Resources) -> bool:
    """The last stored tiers, so a restart resumes them instead of bootstrapping again."""
    import psycopg

    from collector.db import tiers_repo

    assert res.dsn is not None
    try:
        with psycopg.connect(res.dsn, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
            stored = {}
            for venue in res.universes:
                stored.update(symbol_keys.keyed(venue, tiers_repo.load_latest_tiers(conn, venue)))
            row = conn.execute("SELECT max(computed_at) FROM symbol_tiers WHERE venue = ANY(%s)",
                               (list(res.universes),)).fetchone()
    except Exception as e:  # first start (no schema yet) or database down: bootstrap instead
        log.info("no stored tiers to resume (%s)", type(e).__name__)
        return False
    if not stored or row is None or row[0] is None:
        return False
    # a NULL quantile or score (never written by this collector) reads as nan: unknown, as in a fresh estimate
    res.tiers = {s: TierAssignment(t.tier, t.threshold_usd, math.nan if t.size_quantile_usd is None else t.size_quantile_usd,
                                   math.nan if t.score is None else t.score) for s, t in stored.items()}
    res.tiers_ms = int(row[0].timestamp() * 1000)
    log.info("resumed the tiers of %d symbols computed at %s", len(res.tiers), row[0].isoformat())
    return True


def _load_checkpoints(res: Resources) -> None:
    """The checkpoints the last run saved, into the block before any worker starts (full restart)."""
    import psycopg

    assert res.dsn is not None and res.checkpoints is not None
    try:
        with psycopg.connect(res.dsn, connect_timeout=DB_CONNECT_TIMEOUT_S) as conn:
            stored = {}
            for venue, names in res.universes.items():
                slots = symbol_keys.of_venue(res.symbol_slots, venue, names)
                stored.update(symbol_keys.keyed(venue, checkpoints.load(conn, slots, venue=venue)))
    except Exception as e:  # first start (no schema yet) or database down: start afresh
        log.info("no stored checkpoints to resume (%s)", type(e).__name__)
        return
    for sym, c in stored.items():
        res.checkpoints.write(res.symbol_slots[sym], c)
    log.info("loaded the checkpoints of %d symbols saved by the last run", len(stored))

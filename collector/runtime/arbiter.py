"""The supervisor: spawns one writer and N workers, watches them, and keeps the market watched.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and wake the main loop; the loop
dispatches to `handle_<name>()`, reaps dead children, restarts them with backoff, kills hung ones (a
stale heartbeat: SIGABRT, then SIGKILL) so that they are restarted the same way, and runs periodic
jobs. Children are started with the `forkserver` context (heavy modules preloaded once, collector.runtime.preload,
so their pages are shared) and configure themselves (logging, event loop).
A child that fails to boot (exit code BOOT_ERROR, collector.runtime.exitcodes) stops the supervisor instead of
being respawned forever.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import shutil
import signal
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from collector.config import Config, ConfigError, load_config, parse_duration
from collector.feed.endpoints import Endpoints
from collector.feed.rest_budget import create_budget_file
from collector.feed.universe import select_universe, shard
from collector.observability.health import ChildInfo, HealthServer, build_snapshot, health, stats_json
from collector.pipeline.limits import WeightBudget
from collector.pipeline.tiers import TierAssignment, TierParams, bootstrap_from_ticker_24hr, compute_tiers
from collector.runtime import checkpoints
from collector.runtime.exitcodes import BOOT_ERROR, EXIT_CONFIG, EXIT_OK, read_boot_error
from collector.runtime.logs import mask_secrets, setup_logging
from collector.runtime.shm import StatsBlock, merge_activity
from collector.runtime.startup import StartupError, check_machine, prepare_database

log = logging.getLogger(__name__)

# Restart backoff for dead children: immediate first, then doubling to a cap, so a crash loop costs
# little CPU but a one-off crash is repaired in about a second.
RESTART_DELAY_INITIAL = 1.0
RESTART_DELAY_CAP = 60.0
# A child that lived this long is considered healthy again: its next crash restarts at the initial delay.
HEALTHY_AFTER_S = 60.0
# Main loop wake-up period when nothing happens: bounds how late periodic jobs run.
LOOP_TIMEOUT_S = 1.0
# How long children get to flush and exit on shutdown before they are killed.
WORKER_STOP_TIMEOUT_S = 40.0
WRITER_STOP_TIMEOUT_S = 120.0
# How long a replaced worker keeps collecting beside its successor at most: the successor's spawn, imports
# and connections take a few seconds on a loaded 2-core box. It is retired earlier once the successor
# reports that it receives every symbol (collector.runtime.checkpoints: it holds its events until the hand-over).
RETIRE_AFTER_S = 15.0
# When a tier computation finds no statistics yet (workers still starting), try again this much later.
TIER_RETRY_S = 60.0
# Symbol slots in the stats block per symbol of the starting universe: room for listings.
SYMBOL_SLOT_FACTOR = 2
# A hung child gets SIGABRT first (Python's faulthandler, enabled in every child, writes each thread's
# stack to the child's stderr, so the hang can be diagnosed), and SIGKILL this long after if it is still
# there: plenty for the dump, and SIGABRT does nothing at all to a stopped (SIGSTOP) process.
ABORT_GRACE_S = 5.0


@dataclass
class Child:
    role: str  # "writer" or "worker"
    index: int
    process: mp.process.BaseProcess | None = None
    started: float = 0.0
    restarts: int = 0
    started_ms: int | None = None
    expected_exit: bool = False  # asked to stop for a restart (config reload): not a crash
    next_delay: float = RESTART_DELAY_INITIAL
    restart_at: float | None = None
    stop: object = None  # an mp.Event the child watches
    control: object = None  # an mp.Queue to a worker
    symbols: list[str] = field(default_factory=list)
    # liveness: the newest heartbeat (updated_ms of the child's stats slot) and when the supervisor saw it
    # change (monotonic), so a wall-clock step can neither kill a healthy child nor hide a hung one
    beat_ms: int = 0
    beat_seen: float = 0.0
    aborted_at: float | None = None  # when SIGABRT was sent to the current process
    killed: bool = False  # SIGKILL sent: the reaper restarts it
    handover: bool = False  # a predecessor still collects: the worker waits for its hand-over


@dataclass
class Retiring:
    """A worker replaced by a successor, still collecting until RETIRE_AFTER_S has passed."""

    process: mp.process.BaseProcess
    stop: object
    since: float
    stop_sent: bool = False
    successor: Child | None = None  # told ("handover") once this process has exited


def fetch_json(url: str, timeout: float = 30.0) -> object:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - configured endpoint
        return json.loads(resp.read())


class Supervisor:
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

    def __init__(self, config_path: str, workers: int, simulate: bool = False, run_for: float | None = None,
                 sim_options: dict | None = None) -> None:
        self.config_path = config_path
        self.n_workers = workers
        self.simulate = simulate
        self.run_for = run_for
        self.sim_options = sim_options or {}
        self.cfg: Config | None = None
        self.children: list[Child] = []
        self.signals: list[int] = []
        self.stopping = False
        self.exit_code = EXIT_OK
        self._wake_r, self._wake_w = os.pipe()
        # forkserver, not spawn: the server imports collector.runtime.preload once and every child is a fork of it,
        # sharing those pages (spawn paid ~40 MB PSS per child for its own imports). Not fork: the
        # supervisor has threads (health server) by the time it restarts a child.
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload(["collector.runtime.preload"])
        self.embedded_pg = None
        self.sim = None
        self.dsn: str | None = None
        self.rest_budget_path: str | None = None  # the workers' shared REST weight budget (collector.feed.rest_budget)
        self.endpoints: Endpoints | None = None
        self.universe: list[str] = []
        self.tiers: dict[str, TierAssignment] = {}
        self.tiers_ms: int | None = None
        self.started_ms = int(time.time() * 1000)
        self.stats = None
        self.health_server = None
        self.retiring: list[Retiring] = []
        self.rest_paused_until = 0.0
        self.checkpoints: checkpoints.CheckpointBlock | None = None
        self.next_checkpoint_save = 0.0

    # --- signals: queue and wake, nothing else --------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)
        try:
            os.write(self._wake_w, b".")
        except OSError:
            pass

    def handle_hup(self) -> None:
        try:
            new = load_config(self.config_path)
        except ConfigError as e:
            log.error("SIGHUP: new configuration rejected, keeping the old one: %s", e)
            return
        old = self.cfg
        assert old is not None
        logging.getLogger().setLevel(new.logging.level)
        self.cfg = new
        feeds_changed = old.exchange != new.exchange or old.collection != new.collection
        writer_changed = old.database != new.database or old.writer != new.writer or old.retention != new.retention
        if feeds_changed:
            if not self.simulate:
                self.endpoints = new.exchange.endpoints()
            log.info("SIGHUP: exchange or collection settings changed: replacing the workers one by one")
            if old.collection != new.collection:
                self.refresh_universe(force_replace=True)
            else:
                for c in self.children:
                    if c.role == "worker":
                        self._replace_worker(c, c.symbols)
        else:  # filter parameters, intervals and log level apply live
            for c in self.children:
                if c.role == "worker" and c.control is not None:
                    c.control.put(("config", new))
        if writer_changed:
            if not new.database.embedded and not old.database.embedded:
                self.dsn = database_dsn(new)
            elif new.database != old.database:
                log.error("SIGHUP: switching between the embedded and an external database needs a restart")
            log.info("SIGHUP: database or writer settings changed: restarting the writer")
            for c in self.children:
                if c.role == "writer" and c.process is not None:
                    c.stop.set()  # type: ignore[attr-defined]  # it drains; the reaper starts its successor
                    c.expected_exit = True
        if old.monitoring != new.monitoring and self.health_server is not None:
            self.health_server.stop()
            try:
                self._start_health()
            except StartupError as e:  # keep collecting; only the endpoints are missing
                log.error("SIGHUP: %s", e)
        log.info("SIGHUP: configuration reloaded from %s", self.config_path)

    def handle_term(self) -> None:
        log.info("stop requested: draining workers, then the writer")
        self.stopping = True

    handle_int = handle_term

    # --- start-up ---------------------------------------------------------------------------------------

    def _prepare(self) -> None:
        cfg = self.cfg
        assert cfg is not None
        if self.simulate:
            from exchange_sim.config import SimConfig  # only with --simulate: the data path never needs it
            from exchange_sim.runner import launch_subprocess

            self.sim = launch_subprocess(SimConfig(**self.sim_options))
            self.endpoints = Endpoints(self.sim.rest_url, self.sim.ws_url)
            log.info("simulator on %s", self.sim.rest_url)
        else:
            self.endpoints = cfg.exchange.endpoints()
        if cfg.database.embedded:
            from collector.db.embedded import EmbeddedPostgres, PostgresUnavailable

            self.embedded_pg = EmbeddedPostgres(datadir=Path(cfg.database.embedded_dir), database=cfg.database.database)
            try:
                self.dsn = self.embedded_pg.start()
            except (PostgresUnavailable, OSError) as e:  # e.g. initdb (unprivileged) cannot reach the directory
                raise StartupError(f"database.embedded_dir: cannot start the embedded PostgreSQL in "
                                   f"{cfg.database.embedded_dir}: {' '.join(str(e).split())}") from None
            log.info("embedded PostgreSQL at %s", self.dsn)
        else:
            self.dsn = database_dsn(cfg)
        prepare_database(self.dsn, cfg.database.mode, cfg.retention.periods())
        universe = self.fetch_universe()
        if not universe:
            raise RuntimeError("the exchange lists no USDT-M perpetual in TRADING: nothing to collect")
        self.universe = universe
        activity: dict[str, float] = {}
        rows: list[dict] = []
        try:
            fetched = fetch_json(f"{self.endpoints.rest}/fapi/v1/ticker/24hr")
            assert isinstance(fetched, list)
            rows = [r for r in fetched if isinstance(r, dict) and r.get("symbol") in set(universe)]
            activity = {r["symbol"]: float(r.get("quoteVolume") or 0) for r in rows}
        except Exception as e:  # shards then ignore activity; tiers start at the filter's defaults
            log.warning("could not read ticker/24hr: %s", e)
        if not self._resume_tiers() and rows:
            self.tiers = bootstrap_from_ticker_24hr(rows, tier_params(cfg))
            log.info("tiers bootstrapped from ticker/24hr until statistics cover a tier interval")
        self.shards = shard(universe, min(self.n_workers, len(universe)), activity)
        log.info("universe: %d symbols over %d workers", len(universe), len(self.shards))

    def fetch_universe(self) -> list[str]:
        """USDT-M perpetuals in TRADING, narrowed to collection.symbols when that is set."""
        assert self.cfg is not None and self.endpoints is not None
        universe = select_universe(fetch_json(f"{self.endpoints.rest}/fapi/v1/exchangeInfo"))  # type: ignore[arg-type]
        wanted = self.cfg.collection.symbols
        if wanted:
            missing = sorted(set(wanted) - set(universe))
            if missing:
                log.warning("configured symbols not trading on the exchange, skipped: %s", ", ".join(missing))
            universe = [s for s in universe if s in set(wanted)]
        return universe

    def _resume_tiers(self) -> bool:
        """The last stored tiers, so a restart resumes them instead of bootstrapping again."""
        import psycopg

        from collector.db import schema as storage

        assert self.dsn is not None
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                stored = storage.load_latest_tiers(conn)
                row = conn.execute("SELECT max(computed_at) FROM symbol_tiers").fetchone()
        except Exception as e:  # first start (no schema yet) or database down: bootstrap instead
            log.info("no stored tiers to resume (%s)", type(e).__name__)
            return False
        if not stored or row is None or row[0] is None:
            return False
        self.tiers = {s: TierAssignment(t.tier, t.threshold_usd, t.p90_usd, t.score) for s, t in stored.items()}
        self.tiers_ms = int(row[0].timestamp() * 1000)
        log.info("resumed the tiers of %d symbols computed at %s", len(self.tiers), row[0].isoformat())
        return True

    def _spawn(self, child: Child) -> None:
        from collector.runtime.worker import WorkerSpec, run_worker
        from collector.writer.service import WriterSpec, run_writer

        cfg = self.cfg
        assert cfg is not None and self.endpoints is not None and self.dsn is not None
        child.stop = self.ctx.Event()
        if child.role == "writer":
            spec = WriterSpec(config=cfg, dsn=self.dsn, socket_path=self.socket_path, stop=child.stop,
                              stats_name=self.stats.name)
            child.process = self.ctx.Process(target=run_writer, args=(spec,), name="writer", daemon=False)
        else:
            child.control = self.ctx.Queue()
            spec = WorkerSpec(index=child.index, total=len(self.shards), symbols=child.symbols, config=cfg,
                              endpoints=self.endpoints, socket_path=self.socket_path, control=child.control,
                              stop=child.stop, tiers={s: self.tiers[s] for s in child.symbols if s in self.tiers},
                              tiers_provisional=self.tiers_ms is None,
                              stats_name=self.stats.name,
                              symbol_slots={s: self.symbol_slots[s] for s in child.symbols},
                              rest_weight_share=1.0 / len(self.shards), rest_budget_path=self.rest_budget_path,
                              dsn=self.dsn,
                              checkpoints_name=self.checkpoints.name if self.checkpoints else None,
                              handover=child.handover)
            child.process = self.ctx.Process(target=run_worker, args=(spec,), name=f"worker-{child.index + 1}")
        child.process.start()
        child.started = time.monotonic()
        child.started_ms = int(time.time() * 1000)
        child.beat_ms, child.beat_seen, child.aborted_at, child.killed = 0, child.started, None, False
        log.info("started %s %d (pid %d)", child.role, child.index + 1, child.process.pid)

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        import setproctitle

        setproctitle.setproctitle("collector: supervisor")
        try:
            self.cfg = load_config(self.config_path)
            check_machine(self.cfg, self.simulate)  # port, log and spool directories, exchange: exit 2 now
        except (ConfigError, StartupError) as e:
            print(f"error: {e}", flush=True)
            return EXIT_CONFIG
        setup_logging(self.cfg.logging, self.cfg.logging.filename, stderr=True)
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)
        try:
            self._prepare()
            self.run_dir = tempfile.mkdtemp(prefix="collector-")  # short path: Unix socket names are <108 bytes
            self.socket_path = os.path.join(self.run_dir, "writer.sock")
            self.rest_budget_path = os.path.join(self.run_dir, "rest-budget")
            create_budget_file(self.rest_budget_path, time.time() * 1000, WeightBudget.BINANCE_LIMIT_PER_MIN,
                               min(1.0, self.cfg.exchange.rest_weight_per_min / WeightBudget.BINANCE_LIMIT_PER_MIN))
            self.stats = StatsBlock.create(len(self.shards) + 1, SYMBOL_SLOT_FACTOR * len(self.universe))
            self.symbol_slots = {sym: i for i, sym in enumerate(self.universe)}
            self.checkpoints = checkpoints.CheckpointBlock.create(self.stats.symbol_slots)
            self._load_checkpoints()
            self._start_health()
            self.children = [Child("writer", 0)] + [
                Child("worker", i, symbols=s) for i, s in enumerate(self.shards)]
            for c in self.children:
                self._spawn(c)
            deadline = time.monotonic() + self.run_for if self.run_for else None
            now = time.monotonic()
            self._schedule_tiers(now)
            self.next_universe = now + self.cfg.exchange.universe_refresh_s
            self.next_stats_log = now + self.cfg.monitoring.stats_interval
            self.next_checkpoint_save = now + checkpoints.CHECKPOINT_SAVE_S
            while not self.stopping:
                self._wait(deadline)
                while self.signals:
                    sig = self.signals.pop(0)
                    getattr(self, f"handle_{signal.Signals(sig).name[3:].lower()}")()
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("--run-for elapsed: stopping")
                    self.stopping = True
                if not self.stopping:
                    self._reap_and_restart()
                    self._murder_hung()
                    self._periodic()
            self._shutdown()
            self._log_final()
        except StartupError as e:  # found once the database or the health port was tried for real
            log.error("error: %s", e)
            self._shutdown()
            return EXIT_CONFIG
        except Exception as e:
            log.exception("supervisor failed: %s", mask_secrets(str(e)))
            self._shutdown()
            return BOOT_ERROR
        finally:
            self._cleanup()
        return self.exit_code

    def _wait(self, deadline: float | None) -> None:
        sentinels = [c.process.sentinel for c in self.children if c.process is not None and c.process.is_alive()]
        timeout = LOOP_TIMEOUT_S if deadline is None else max(0.0, min(LOOP_TIMEOUT_S, deadline - time.monotonic()))
        ready = multiprocessing.connection.wait([self._wake_r, *sentinels], timeout=timeout)
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)

    def _reap_and_restart(self) -> None:
        now = time.monotonic()
        for c in self.children:
            p = c.process
            if p is not None and p.exitcode is not None:
                code = p.exitcode
                p.join(0)
                c.process = None
                lived = now - c.started
                if lived >= HEALTHY_AFTER_S:
                    c.next_delay = RESTART_DELAY_INITIAL
                if code == BOOT_ERROR:  # respawning would fail the same way, for ever (gunicorn halts too)
                    name = "writer" if c.role == "writer" else f"worker-{c.index + 1}"
                    reason = read_boot_error(self.run_dir, name) or f"see {name}.log"
                    log.critical("%s could not boot (exit code %d, BOOT_ERROR): %s. Stopping the collector "
                                 "instead of restarting it", name, code, reason)
                    self.exit_code = BOOT_ERROR
                    self.stopping = True
                    return
                if c.expected_exit:
                    c.expected_exit = False
                    c.restart_at = now
                    log.info("%s %d stopped for a restart (exit code %s)", c.role, c.index + 1, code)
                    continue
                c.restart_at = now + c.next_delay
                log.error("%s %d died (exit code %s, after %.0fs): restarting in %.0fs", c.role, c.index + 1,
                          code, lived, c.next_delay)
                c.next_delay = min(c.next_delay * 2, RESTART_DELAY_CAP)
            if c.process is None and c.restart_at is not None and now >= c.restart_at:
                c.restart_at = None
                c.restarts += 1
                self._spawn(c)

    def _murder_hung(self) -> None:
        """Replace children whose heartbeat is stale (gunicorn's murder_workers): SIGABRT, then SIGKILL.

        The heartbeat is the child's stats slot: a worker publishes it every 0.5 s from its event loop, the
        writer after every turn of its loop, so a slot that stops changing means a loop that stopped
        turning (blocked, deadlocked, stopped), not merely a slow market. A killed child is reaped and
        respawned like any dead one, with backoff; its successor resumes from the shared-memory slots.
        """
        if self.stats is None or self.cfg is None:
            return
        now = time.monotonic()
        timeout = self.cfg.monitoring.heartbeat_timeout_s
        for c in self.children:
            p = c.process
            if p is None or p.pid is None or p.exitcode is not None or c.killed:
                continue
            reading = self.stats.read(0 if c.role == "writer" else c.index + 1)
            if reading is not None and reading.pid == p.pid and reading.updated_ms != c.beat_ms:
                c.beat_ms, c.beat_seen = reading.updated_ms, now
            action = liveness_action(now - c.beat_seen, timeout, None if c.aborted_at is None
                                     else now - c.aborted_at, ABORT_GRACE_S)
            name = "writer" if c.role == "writer" else f"worker {c.index + 1}"
            try:
                if action == "abort":
                    log.error("%s (pid %d) has published no heartbeat for %.0f s (monitoring.heartbeat_timeout_s"
                              " = %.0f): hung; sending SIGABRT, then SIGKILL after %.0f s, then a replacement",
                              name, p.pid, now - c.beat_seen, timeout, ABORT_GRACE_S)
                    c.aborted_at = now
                    os.kill(p.pid, signal.SIGABRT)
                elif action == "kill":
                    log.error("%s (pid %d) is still there %.0f s after SIGABRT: sending SIGKILL", name, p.pid,
                              now - (c.aborted_at or now))
                    c.killed = True
                    os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:  # it died meanwhile: the reaper restarts it
                pass

    def _shutdown(self) -> None:
        for r in self.retiring:
            r.stop.set()  # type: ignore[attr-defined]
        workers = [c for c in self.children if c.role == "worker" and c.process is not None]
        for c in workers:
            c.stop.set()  # type: ignore[attr-defined]
        for r in self.retiring:
            r.process.join(WORKER_STOP_TIMEOUT_S)
            if r.process.is_alive():
                r.process.kill()
        for c in workers:
            _join_or_kill(c, WORKER_STOP_TIMEOUT_S)
        self._save_checkpoints()  # the workers' final, fully acknowledged state
        for c in self.children:
            if c.role == "writer" and c.process is not None:
                c.stop.set()  # type: ignore[attr-defined]
                _join_or_kill(c, WRITER_STOP_TIMEOUT_S)
                if c.process is not None and c.process.exitcode not in (0, None):
                    self.exit_code = self.exit_code or 1

    # --- periodic jobs ------------------------------------------------------------------------------------

    def tier_interval_s(self) -> float:
        assert self.cfg is not None
        period = parse_duration(self.cfg.filters.trades.tier_interval, "filters.trades.tier_interval")
        return period.total_seconds() if period else float("inf")

    def _schedule_tiers(self, now: float) -> None:
        """One tier interval after the last computation; soon (tier_warmup) while tiers are only estimates."""
        assert self.cfg is not None
        if self.tiers_ms:
            age = (time.time() * 1000 - self.tiers_ms) / 1000
            self.next_tiers = now + max(0.0, self.tier_interval_s() - age)
        else:
            warmup = parse_duration(self.cfg.filters.trades.tier_warmup, "filters.trades.tier_warmup")
            self.next_tiers = now + min(self.tier_interval_s(), warmup.total_seconds() if warmup else 0.0)

    def _periodic(self) -> None:
        now = time.monotonic()
        if now >= self.next_tiers:
            if self.recompute_tiers():
                self._schedule_tiers(now)
            else:
                self.next_tiers = now + TIER_RETRY_S
        if now >= self.next_universe:
            assert self.cfg is not None
            self.next_universe = now + self.cfg.exchange.universe_refresh_s
            self.refresh_universe()
        self._retire_predecessors(now)
        self._spread_rest_pause()
        if now >= self.next_checkpoint_save:
            self.next_checkpoint_save = now + checkpoints.CHECKPOINT_SAVE_S
            self._save_checkpoints()
        if now >= self.next_stats_log:
            assert self.cfg is not None
            self.next_stats_log = now + self.cfg.monitoring.stats_interval
            self.log_stats()

    def refresh_universe(self, force_replace: bool = False) -> None:
        """Listings and delistings applied without a full restart: only the affected workers are replaced."""
        try:
            new = self.fetch_universe()
        except Exception as e:  # keep the current universe; try again next time
            log.warning("universe refresh failed: %s", e)
            return
        if not new:
            log.error("universe refresh: the exchange lists no symbol in TRADING; keeping the current universe")
            return
        current = set(self.universe)
        added = [s for s in new if s not in current]
        removed = current - set(new)
        if not added and not removed and not force_replace:
            return
        workers = [c for c in self.children if c.role == "worker"]
        new_symbols = {id(c): [s for s in c.symbols if s not in removed] for c in workers}
        for sym in added:
            if sym not in self.symbol_slots:
                if len(self.symbol_slots) >= self.stats.symbol_slots:  # type: ignore[union-attr]
                    log.error("no statistics slot left for %s: tiers will not see it until a restart", sym)
                else:
                    self.symbol_slots[sym] = len(self.symbol_slots)
            target = min(workers, key=lambda c: (len(new_symbols[id(c)]), c.index))
            new_symbols[id(target)].append(sym)
        if added or removed:
            log.info("universe changed: %d listed (%s), %d delisted (%s)", len(added), " ".join(added[:10]),
                     len(removed), " ".join(sorted(removed)[:10]))
        self.universe = new
        for c in workers:
            if force_replace or sorted(new_symbols[id(c)]) != sorted(c.symbols):
                self._replace_worker(c, sorted(new_symbols[id(c)]))

    def _replace_worker(self, c: Child, symbols: list[str]) -> None:
        """Start the successor before retiring the predecessor, so the market is never unwatched.

        Both collect for a few seconds; their rows coincide on the tables' keys and the writer's
        ON CONFLICT recovery path keeps one copy.
        """
        if c.process is None:  # down: it will be respawned with the new symbols
            c.symbols = symbols
            return
        if c.control is not None:
            c.control.put(("quiet", None))
        if self.checkpoints is not None:
            c.handover = True
        self.retiring.append(Retiring(c.process, c.stop, time.monotonic(), successor=c))
        c.symbols = symbols
        self._spawn(c)

    def _retire_predecessors(self, now: float) -> None:
        for r in list(self.retiring):
            if not r.stop_sent and (now - r.since >= RETIRE_AFTER_S or self._successor_ready(r)):
                r.stop.set()  # type: ignore[attr-defined]
                r.stop_sent = True
            if r.process.exitcode is not None:
                r.process.join(0)
                self.retiring.remove(r)
                s = r.successor
                if s is not None and s.handover:
                    # its final checkpoint is in the block: the successor continues from it
                    s.handover = False
                    if s.control is not None:
                        s.control.put(("handover", None))

    def _successor_ready(self, r: Retiring) -> bool:
        """The successor holds for the hand-over and receives every symbol: the predecessor may stop now."""
        s = r.successor
        if s is None or not s.handover or self.checkpoints is None or s.started_ms is None:
            return False
        return self.checkpoints.ready_ms(s.index + 1) >= s.started_ms

    def _load_checkpoints(self) -> None:
        """The checkpoints the last run saved, into the block before any worker starts (full restart)."""
        import psycopg

        assert self.dsn is not None and self.checkpoints is not None
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                stored = checkpoints.load(conn, self.symbol_slots)
        except Exception as e:  # first start (no schema yet) or database down: start afresh
            log.info("no stored checkpoints to resume (%s)", type(e).__name__)
            return
        for sym, c in stored.items():
            self.checkpoints.write(self.symbol_slots[sym], c)
        log.info("loaded the checkpoints of %d symbols saved by the last run", len(stored))

    def _save_checkpoints(self) -> None:
        """Copy the block to the `checkpoints` table (read only: the workers keep writing the block)."""
        import psycopg

        if self.checkpoints is None or self.dsn is None:
            return
        found = self.checkpoints.read_all(self.symbol_slots)
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                checkpoints.save(conn, found)
        except Exception as e:  # kept in shared memory; saved at the next attempt
            log.warning("could not save checkpoints: %s", mask_secrets(str(e)))

    def _spread_rest_pause(self) -> None:
        """A 429/418 is per IP: when one worker is told to back off, every worker backs off."""
        if self.stats is None:
            return
        until = 0.0
        for c in self.children:
            if c.role != "worker":
                continue
            reading = self.stats.read(c.index + 1)
            if reading is not None and not reading.stale:
                until = max(until, reading.values.get("rest_paused_until_ms", 0.0))
        if until > time.time() * 1000 and until > self.rest_paused_until:
            self.rest_paused_until = until
            log.warning("REST rate limited: every worker pauses REST until %s",
                        time.strftime("%H:%M:%S", time.gmtime(until / 1000)))
            for c in self.children:
                if c.role == "worker" and c.control is not None:
                    c.control.put(("rest_pause", until))

    def recompute_tiers(self) -> bool:
        """Tiers from every worker's published statistics, stored (with history) and sent to the workers.

        False when no statistics exist yet (the current tiers stay).
        """
        assert self.cfg is not None
        params = tier_params(self.cfg)
        now_ms = int(time.time() * 1000)
        summaries = merge_activity(self.stats, self.symbol_slots, now_ms, params.quantile)
        active = {s: v for s, v in summaries.items() if v.count > 0}
        if not active:
            log.warning("tiers: no trade statistics published yet; keeping the current tiers")
            return False
        self.tiers = compute_tiers(summaries, params)
        self.tiers_ms = now_ms
        counts = Counter(a.tier for a in self.tiers.values())
        log.info("tiers recomputed from %d symbols' statistics: %s", len(active),
                 ", ".join(f"tier {t}: {counts[t]}" for t in sorted(counts)))
        self._store_tiers(now_ms)
        for c in self.children:
            if c.role == "worker" and c.control is not None:
                c.control.put(("tiers", {s: self.tiers[s] for s in c.symbols if s in self.tiers}))
        return True

    def _store_tiers(self, now_ms: int) -> None:
        from datetime import UTC, datetime

        import psycopg

        from collector.db import schema as storage

        assert self.dsn is not None
        try:
            with psycopg.connect(self.dsn, connect_timeout=10) as conn:
                storage.store_tiers(conn, self.tiers, datetime.fromtimestamp(now_ms / 1000, UTC))
        except Exception as e:  # the tiers still apply; storing is retried at the next computation
            log.warning("could not store tiers: %s", mask_secrets(str(e)))

    def snapshot(self) -> dict:
        kids = []
        for c in self.children:
            p = c.process  # read once: the main loop may replace it meanwhile
            alive = p is not None and p.is_alive()
            kids.append(ChildInfo(c.role, 0 if c.role == "writer" else c.index + 1, p.pid if p else None, alive,
                                  c.restarts, len(c.symbols), c.started_ms))
        return build_snapshot(self.stats, kids, self.tiers, int(time.time() * 1000),
                              tiers_computed_ms=self.tiers_ms, started_ms=self.started_ms)

    def log_stats(self) -> None:
        snap = stats_json(self.snapshot())
        t = snap.get("totals", {})
        ok, reasons = health(self.snapshot(), int(time.time() * 1000))
        log.info("stats: trades %s funding %s liquidations %s open_interest %s candles %s errors %s | kept %s | %s",
                 t.get("trades_count"), t.get("funding_count"), t.get("liquidations_count"),
                 t.get("open_interest_count"), t.get("candles_count"), t.get("errors"), t.get("kept"),
                 "healthy" if ok else "UNHEALTHY: " + "; ".join(reasons))

    def _log_final(self) -> None:
        """One readable summary of the whole run, from the children's last published counters."""
        t = stats_json(self.snapshot()).get("totals", {})
        received = t.get("received", {})
        kept = t.get("kept", {})
        trades_in = int(received.get("trades", 0))
        log.info("stopped. committed rows: trades %d (of %d received, %.2f%% kept: %s), funding %d, "
                 "liquidations %d, open_interest %d, candles %d; errors %d; rejected %s",
                 t.get("trades_count", 0), trades_in, 100 * t.get("trades_count", 0) / max(trades_in, 1),
                 ", ".join(f"{k} {int(v)}" for k, v in kept.items() if v), t.get("funding_count", 0),
                 t.get("liquidations_count", 0), t.get("open_interest_count", 0), t.get("candles_count", 0),
                 t.get("errors", 0), {k: int(v) for k, v in t.get("rejected", {}).items() if v} or "none")

    def _start_health(self) -> None:
        assert self.cfg is not None
        mon = self.cfg.monitoring
        self.health_server = HealthServer(mon.health_check_host, mon.health_check_port, self.snapshot,
                                          metrics_enabled=mon.metrics_enabled)
        try:
            self.health_server.start()
        except OSError as e:  # taken since check_port_free, or (SIGHUP) a new port that is taken
            self.health_server = None
            raise StartupError(f"monitoring.health_check_port: cannot listen on {mon.health_check_host}:"
                               f"{mon.health_check_port}: {e.strerror or e}") from None
        log.info("health, stats and metrics on http://%s:%d/", mon.health_check_host, self.health_server.port)

    def _cleanup(self) -> None:
        if getattr(self, "health_server", None) is not None:
            self.health_server.stop()
        if getattr(self, "stats", None) is not None:
            self.stats.close()
        if self.checkpoints is not None:
            self.checkpoints.close()
        if getattr(self, "run_dir", None):
            shutil.rmtree(self.run_dir, ignore_errors=True)
        if self.sim is not None:
            self.sim.stop()
        if self.embedded_pg is not None:
            self.embedded_pg.stop()


def liveness_action(silent_s: float, timeout_s: float, aborted_s: float | None, grace_s: float = ABORT_GRACE_S
                    ) -> str | None:
    """What to do with a child silent for `silent_s`: "abort" (SIGABRT), "kill" (SIGKILL) or nothing (None).

    `aborted_s` is how long ago SIGABRT was sent (None: not yet). Silence up to `timeout_s` is fine; past
    it the child is aborted once, and killed once it has outlived the abort by `grace_s`.
    """
    if aborted_s is not None:
        return "kill" if aborted_s >= grace_s else None
    return "abort" if silent_s > timeout_s else None


def tier_params(cfg: Config) -> TierParams:
    tf = cfg.filters.trades
    return TierParams(weights=tuple(tf.score_weights), cutoffs=tuple(tf.tier_cutoffs),  # type: ignore[arg-type]
                      multipliers=tuple(tf.tier_multipliers), quantile=tf.threshold_quantile)


def _join_or_kill(c: Child, timeout: float) -> None:
    p = c.process
    assert p is not None
    p.join(timeout)
    if p.is_alive():
        log.error("%s %d did not stop within %.0fs: killing it", c.role, c.index + 1, timeout)
        p.kill()
        p.join(5)


def database_dsn(cfg: Config) -> str:
    """The connection string for a configured (non-embedded) database, password resolved now."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    db = cfg.database
    params: dict[str, object] = conninfo_to_dict(db.url) if db.url else {
        "host": db.host, "port": db.port, "user": db.user, "dbname": db.database}
    password = db.resolve_password()
    if password is not None:
        params["password"] = password
    params.setdefault("application_name", "collector")
    return make_conninfo(**params)  # type: ignore[arg-type]

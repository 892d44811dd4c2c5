"""The arbiter: spawns one writer and N workers (and the read API with --api), reaps them, restarts them
with back-off, kills hung ones.

Modelled on gunicorn's arbiter: signal handlers only queue the signal and wake the main loop; the loop
dispatches to `handle_<name>()`, reaps and restarts dead children, kills hung ones (a stale heartbeat:
SIGABRT, then SIGKILL) and carries out what the coordinator asks (a control message, a replacement). Nothing
here waits for the network or the database: domain work runs in the coordinator's threads
(collector.runtime.coordinator), start-up in collector.runtime.bootstrap, the endpoints in
collector.runtime.monitoring. Children are forkserver children (heavy modules preloaded once,
collector.runtime.preload, pages shared). A child that fails to boot (BOOT_ERROR) stops the supervisor
instead of being respawned forever.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import multiprocessing.connection
import os
import queue
import signal
import time
from types import FrameType
from typing import Any

from collector.config import Config, ConfigError, load_config
from collector.runtime.bootstrap import Resources, bootstrap, database_dsn, load_and_check
from collector.runtime.children import (
    ABORT_GRACE_S,
    HEALTHY_AFTER_S,
    RESTART_DELAY_CAP,
    RESTART_DELAY_INITIAL,
    Child,
    Retiring,
    api_info,
    child_infos,
    join_or_kill,
    liveness_action,
    loop_period,
    request_stop,
    successor_ready,
)
from collector.runtime.coordinator import Command, Coordinator, Replace, Send
from collector.runtime.exitcodes import BOOT_ERROR, EXIT_CONFIG, EXIT_OK, read_boot_error
from collector.runtime.forkserver import start_forkserver
from collector.runtime.launch import child_process
from collector.runtime.logs import mask_secrets, setup_logging
from collector.runtime.monitoring import Monitor
from collector.runtime.reload import plan_reload
from collector.runtime.startup import StartupError

log = logging.getLogger(__name__)

# How long children get to flush and exit on shutdown before they are killed.
WORKER_STOP_TIMEOUT_S = 40.0
WRITER_STOP_TIMEOUT_S = 120.0
API_STOP_TIMEOUT_S = 10.0  # uvicorn finishes the requests in flight
# How long a replaced worker keeps collecting beside its successor at most: the successor's spawn, imports
# and connections take a few seconds on a loaded 2-core box. It is retired earlier once the successor
# reports that it receives every symbol (collector.runtime.handover: it holds its events until the hand-over).
RETIRE_AFTER_S = 15.0
PRELOAD = "collector.runtime.preload"  # what the forkserver imports before it forks a child


class Supervisor:
    SIGNALS = (signal.SIGHUP, signal.SIGTERM, signal.SIGINT)

    def __init__(self, config_path: str, workers: int, simulate: bool = False, run_for: float | None = None,
                 sim_options: dict[str, Any] | None = None, api: bool = False) -> None:
        self.config_path = config_path
        self.api = api  # also run the read API (collector.api) as a child
        self.n_workers = workers
        self.simulate = simulate
        self.run_for = run_for
        self.sim_options = sim_options or {}
        self.cfg: Config | None = None
        self.res = Resources()
        self.coordinator: Coordinator | None = None
        self.monitor: Monitor | None = None
        self.children: list[Child] = []
        self.retiring: list[Retiring] = []
        self.signals: list[int] = []
        self.inbox: queue.SimpleQueue[Command] = queue.SimpleQueue()  # from the coordinator's threads
        self.stopping = False
        self.exit_code = EXIT_OK
        self._wake_r, self._wake_w = os.pipe()
        # forkserver, not spawn: the server imports collector.runtime.preload once and every child is a fork of it,
        # sharing those pages (spawn paid ~40 MB PSS per child for its own imports). Not fork: the
        # supervisor has threads (health server, coordinator) by the time it restarts a child.
        self.ctx = mp.get_context("forkserver")
        self.ctx.set_forkserver_preload([PRELOAD])

    # --- signals and the coordinator's messages: queue and wake, nothing else ---------------------------

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.signals.append(signum)
        self._wake()

    def post(self, command: Command) -> None:
        """Called from the coordinator's threads: carried out by the main loop."""
        self.inbox.put(command)
        self._wake()

    def _wake(self) -> None:
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
        old, res = self.cfg, self.res
        assert old is not None and res.endpoints is not None and res.dsn is not None
        logging.getLogger().setLevel(new.logging.level)
        self.cfg = new
        plan = plan_reload(old, new)
        if plan.resolve_dsn:
            res.dsn = database_dsn(new)
        elif plan.embedded_switch:
            log.error("SIGHUP: switching between the embedded and an external database needs a restart")
        if plan.feeds and not self.simulate:
            res.endpoints = new.exchange.endpoints()
        if self.coordinator is not None:  # a changed collection: it refreshes the universe, replacing every worker
            self.coordinator.reconfigure(new, res.endpoints, res.dsn, plan.universe)
        if plan.feeds:
            log.info("SIGHUP: exchange or collection settings changed: replacing the workers one by one")
        for c in self.workers():
            if plan.feeds and not plan.universe:
                self._replace_worker(c)
            elif not plan.feeds and c.control is not None:  # filter parameters, intervals apply live
                c.control.put(("config", new))
        if plan.writer:
            log.info("SIGHUP: database or writer settings changed: restarting the writer")
        for c in self.children:  # the writer drains, the API finishes its requests; the reaper starts successors
            if c.process is not None and c.stop is not None and c.process.is_alive() and (
                    (c.role == "writer" and plan.writer) or (c.role == "api" and plan.api)):
                c.expected_exit = True
                if c.role == "writer":
                    c.stop.set()
                else:
                    c.process.terminate()
        if plan.monitoring and self.monitor is not None:
            self.monitor.restart(new.monitoring)
        log.info("SIGHUP: configuration reloaded from %s", self.config_path)

    def handle_term(self) -> None:
        log.info("stop requested: draining workers, then the writer")
        self.stopping = True

    handle_int = handle_term

    def _log_stats(self) -> None:  # the coordinator's relay thread, every monitoring.stats_interval
        if self.monitor is not None:
            self.monitor.log_stats()

    def workers(self) -> list[Child]:
        return [c for c in self.children if c.role == "worker"]

    # --- the loop ---------------------------------------------------------------------------------------

    def run(self) -> int:
        import setproctitle

        setproctitle.setproctitle("collector: supervisor")
        try:
            cfg = self.cfg = load_and_check(self.config_path, self.simulate, self.api)  # exit 2 now, nothing started
        except (ConfigError, StartupError) as e:
            print(f"error: {e}", flush=True)
            return EXIT_CONFIG
        # before any thread: the forkserver as a fork of this process, sharing its modules (module docstring)
        start_forkserver(PRELOAD)
        setup_logging(cfg.logging, cfg.logging.filename, stderr=True)
        for sig in self.SIGNALS:
            signal.signal(sig, self._on_signal)
        res = self.res
        try:
            bootstrap(res, cfg, self.n_workers, self.simulate, self.sim_options)
            assert res.endpoints is not None and res.dsn is not None and res.stats is not None
            coordinator = self.coordinator = Coordinator(
                cfg, res.endpoints, res.dsn, res.stats, res.checkpoints, res.universe, res.shards,
                res.symbol_slots, res.tiers, res.tiers_ms, self.post, self._log_stats,
                venues=res.shard_venues or None, universes=res.universes or None,
                venue_endpoints=res.venue_endpoints)
            api_url = f"http://{cfg.api.host}:{cfg.api.port}"
            self.monitor = Monitor(res.stats, lambda: child_infos(self.children, coordinator.worker_venue),
                                   coordinator.tiers_view, lambda: api_info(self.children, api_url))
            self.monitor.start(cfg.monitoring)
            self.children = [Child("writer", 0)] + [Child("worker", i) for i in range(len(res.shards))]
            self.children += [Child("api", 0)] if self.api else []
            for c in self.children:
                self._spawn(c)
            coordinator.start()
            deadline = time.monotonic() + self.run_for if self.run_for else None
            while not self.stopping:
                self._wait(deadline)
                while self.signals:
                    signum = self.signals.pop(0)
                    getattr(self, f"handle_{signal.Signals(signum).name[3:].lower()}")()
                if deadline is not None and time.monotonic() >= deadline:
                    log.info("--run-for elapsed: stopping")
                    self.stopping = True
                if not self.stopping:
                    self._reap_and_restart()
                    self._murder_hung()
                    self._carry_out()
                    self._retire_predecessors(time.monotonic())
            self._shutdown()
            self.monitor.log_final()
        except StartupError as e:  # found once the database or the health port was tried for real
            log.error("error: %s", e)
            self._shutdown()
            return EXIT_CONFIG
        except Exception as e:
            log.exception("supervisor failed: %s", mask_secrets(str(e)))
            self._shutdown()
            return BOOT_ERROR
        finally:
            if self.monitor is not None:
                self.monitor.stop()
            res.close()
        return self.exit_code

    def _wait(self, deadline: float | None) -> None:
        sentinels = [c.process.sentinel for c in self.children if c.process is not None and c.process.is_alive()]
        assert self.cfg is not None
        period = loop_period(self.children, self.retiring, self.cfg.monitoring.heartbeat_timeout_s)
        timeout = period if deadline is None else max(0.0, min(period, deadline - time.monotonic()))
        ready = multiprocessing.connection.wait([self._wake_r, *sentinels], timeout=timeout)
        if self._wake_r in ready:
            os.read(self._wake_r, 4096)

    def _carry_out(self) -> None:
        """What the coordinator asked: control messages to workers, replacements with new symbols."""
        workers = self.workers()
        while True:
            try:
                cmd = self.inbox.get_nowait()
            except queue.Empty:
                return
            if not 0 <= cmd.index < len(workers):
                continue
            c = workers[cmd.index]
            if isinstance(cmd, Send):
                if c.control is not None:
                    c.control.put(cmd.message)
            elif isinstance(cmd, Replace):
                self._replace_worker(c)

    def _spawn(self, child: Child) -> None:
        cfg, co = self.cfg, self.coordinator
        assert cfg is not None and co is not None
        child.process = child_process(self.ctx, child, self.config_path, cfg, self.res, co)
        child.process.start()
        child.started = time.monotonic()
        child.started_ms = int(time.time() * 1000)
        child.beat_ms, child.beat_seen, child.aborted_at, child.killed = 0, child.started, None, False
        log.info("started %s %d (pid %d)", child.role, child.index + 1, child.process.pid)

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
                    reason = read_boot_error(self.res.run_dir or "", name) or f"see {name}.log"
                    log.critical("%s could not boot (exit code %d, BOOT_ERROR): %s. Stopping the collector "
                                 "instead of restarting it", name, code, reason)
                    self.exit_code = BOOT_ERROR
                    self.stopping = True
                    return
                if c.role == "api" and code == 2:  # its configuration is wrong: restarting cannot help
                    log.error("the read API stopped: its configuration is refused (above); not restarting it")
                    continue
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

        The heartbeat is the child's stats slot: a worker publishes it every 1 s from its event loop, the
        writer after every turn of its loop, so a slot that stops changing means a loop that stopped
        turning (blocked, deadlocked, stopped), not merely a slow market. A killed child is reaped and
        respawned like any dead one, with backoff; its successor resumes from the shared-memory slots.
        """
        if self.res.stats is None or self.cfg is None:
            return
        now = time.monotonic()
        timeout = self.cfg.monitoring.heartbeat_timeout_s
        for c in self.children:
            p = c.process
            if c.role == "api" or p is None or p.pid is None or p.exitcode is not None or c.killed:
                continue  # the API has no stats slot to beat in
            reading = self.res.stats.read(0 if c.role == "writer" else c.index + 1)
            if reading is not None and reading.pid == p.pid and reading.updated_ms != c.beat_ms:
                c.beat_ms, c.beat_seen = reading.updated_ms, now
            action = liveness_action(now - c.beat_seen, timeout, None if c.aborted_at is None
                                     else now - c.aborted_at, ABORT_GRACE_S)
            try:
                if action == "abort":
                    log.error("%s (pid %d) has published no heartbeat for %.0f s (monitoring.heartbeat_timeout_s"
                              " = %.0f): hung; sending SIGABRT, then SIGKILL after %.0f s, then a replacement",
                              c.name, p.pid, now - c.beat_seen, timeout, ABORT_GRACE_S)
                    c.aborted_at = now
                    os.kill(p.pid, signal.SIGABRT)
                elif action == "kill":
                    log.error("%s (pid %d) is still there %.0f s after SIGABRT: sending SIGKILL", c.name, p.pid,
                              now - (c.aborted_at or now))
                    c.killed = True
                    os.kill(p.pid, signal.SIGKILL)
            except ProcessLookupError:  # it died meanwhile: the reaper restarts it
                pass

    def _replace_worker(self, c: Child) -> None:
        """Start the successor (with the coordinator's symbols for it) before retiring the predecessor, so
        the market is never unwatched.

        Both collect for a few seconds; the successor holds what it receives until the predecessor has
        handed over (collector.runtime.handover).
        """
        if c.process is None or c.stop is None:  # down: it will be respawned with the new symbols
            return
        if c.control is not None:
            c.control.put(("quiet", None))
        if self.res.checkpoints is not None:
            c.handover = True
        self.retiring.append(Retiring(c.process, c.stop, time.monotonic(), successor=c, control=c.control))
        self._spawn(c)

    def _retire_predecessors(self, now: float) -> None:
        for r in list(self.retiring):
            if not r.stop_sent and (now - r.since >= RETIRE_AFTER_S or successor_ready(r, self.res.checkpoints)):
                request_stop(r.stop, r.control)
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

    def _shutdown(self) -> None:
        for r in self.retiring:
            request_stop(r.stop, r.control)
        workers = [c for c in self.workers() if c.process is not None]
        for c in workers:
            if c.stop is not None:
                request_stop(c.stop, c.control)
        for r in self.retiring:
            r.process.join(WORKER_STOP_TIMEOUT_S)
            if r.process.is_alive():
                r.process.kill()
        for c in workers:
            join_or_kill(c, WORKER_STOP_TIMEOUT_S)
        if self.coordinator is not None:
            self.coordinator.stop()
            self.coordinator.save_checkpoints()  # the workers' final, fully acknowledged state
        for c in self.children:
            if c.role == "api" and c.process is not None:
                c.process.terminate()
                join_or_kill(c, API_STOP_TIMEOUT_S)
        for c in self.children:
            if c.role == "writer" and c.process is not None and c.stop is not None:
                c.stop.set()
                join_or_kill(c, WRITER_STOP_TIMEOUT_S)
                if c.process is not None and c.process.exitcode not in (0, None):
                    self.exit_code = self.exit_code or 1

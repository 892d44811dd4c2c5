"""Ways to run the simulator from tests and benchmarks: a background thread or a subprocess.

The thread form shares the caller's process (cheap, lets a test call the Python API); the subprocess
form gives the simulator its own interpreter and CPU accounting, which a benchmark needs.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import os
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from .config import SimConfig
from .simulator import Simulator


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop when available: its transports make the batched writes cheaper."""
    try:
        import uvloop
        return uvloop.new_event_loop()
    except ImportError:  # pragma: no cover - uvloop is a project dependency
        return asyncio.new_event_loop()


class SimHandle:
    """A simulator running on its own event loop in a daemon thread; every method is thread-safe."""

    def __init__(self, cfg: SimConfig) -> None:
        self.cfg = cfg
        self.loop = new_event_loop()
        self.sim = Simulator(cfg)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=f"{cfg.venue}-sim", daemon=True)
        self._thread.start()
        if not self._ready.wait(30) or self._error:
            raise RuntimeError(f"simulator failed to start: {self._error!r}")

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self.sim.start())
        except BaseException as e:  # surfaced to the constructor
            self._error = e
            self._ready.set()
            return
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()

    @property
    def port(self) -> int:
        return self.sim.port

    @property
    def rest_url(self) -> str:
        return f"http://{self.cfg.host}:{self.sim.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.sim.port}"

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run fn(*args) on the simulator's loop and return its result."""
        fut: concurrent.futures.Future = concurrent.futures.Future()

        def run() -> None:
            try:
                fut.set_result(fn(*args, **kwargs))
            except BaseException as e:
                fut.set_exception(e)
        self.loop.call_soon_threadsafe(run)
        return fut.result(timeout=60)

    def __getattr__(self, name: str) -> Any:
        # Simulator control methods (pause, drop_all, skip_ids, ...) proxied onto the loop thread.
        attr = getattr(self.sim, name)
        if callable(attr):
            return lambda *a, **k: self.call(attr, *a, **k)
        return attr

    def truth(self, klines: bool = True) -> dict:
        return self.call(self.sim.truth_doc, klines)

    def stop(self) -> None:
        if not self.loop.is_running():
            return
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(timeout=30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)

    def __enter__(self) -> SimHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def run_in_thread(cfg: SimConfig) -> SimHandle:
    return SimHandle(cfg)


def cli_args(cfg: SimConfig) -> list[str]:
    """The command-line equivalent of cfg (the options __main__ understands)."""
    args = ["--host", cfg.host, "--port", str(cfg.port), "--symbols", str(cfg.symbols), "--rate", str(cfg.rate),
            "--seed", str(cfg.seed), "--speed", str(cfg.speed), "--tick-ms", str(cfg.tick_ms),
            "--ping-interval", str(cfg.ping_interval_s), "--pong-timeout", str(cfg.pong_timeout_s),
            "--weight-limit", str(cfg.weight_limit), "--max-conn-age", str(cfg.max_conn_age_s)]
    if cfg.venue != "binance":
        args += ["--venue", cfg.venue]
    if cfg.venue_rest_limit:
        args += ["--venue-rest-limit", str(cfg.venue_rest_limit)]
    if cfg.truth_trades:
        args += ["--truth-trades"]
    if cfg.start_ms is not None:
        args += ["--start-ms", str(cfg.start_ms)]
    if cfg.funding_period_ms != SimConfig.funding_period_ms:
        args += ["--funding-period-ms", str(cfg.funding_period_ms)]
    if cfg.truth_file:
        args += ["--truth-file", cfg.truth_file]
    if cfg.replay:
        args += ["--replay", cfg.replay, "--replay-speed", str(cfg.replay_speed)]
    if cfg.drop_prob_per_s:
        args += ["--drop-prob", str(cfg.drop_prob_per_s)]
    if cfg.malformed_rate:
        args += ["--malformed-rate", str(cfg.malformed_rate)]
    return args


class SimProcess:
    """The simulator as a child process, ready once it printed its "ready" line (never a sleep)."""

    def __init__(self, cfg: SimConfig, python: str = sys.executable, timeout: float = 60.0) -> None:
        self.cfg = cfg
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([python, "-m", "exchange_sim", *cli_args(cfg)], stdout=subprocess.PIPE,
                                     text=True, env=env)
        ready: dict = {}
        reader = threading.Thread(target=self._wait_ready, args=(ready,), daemon=True)
        reader.start()
        reader.join(timeout)
        if "port" not in ready:
            self.proc.kill()
            raise RuntimeError("simulator subprocess did not report ready")
        self.port: int = ready["port"]
        self.pid = self.proc.pid

    def _wait_ready(self, out: dict) -> None:
        for line in self.proc.stdout:
            if line.startswith("ready "):
                fields = dict(kv.split("=", 1) for kv in line.split()[1:])
                out["port"] = int(fields["port"])
                return

    @property
    def rest_url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{self.cfg.host}:{self.port}"

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (the simulator writes its truth file on the way out) and wait."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


def launch_subprocess(cfg: SimConfig, **kwargs: Any) -> SimProcess:
    return SimProcess(dataclasses.replace(cfg), **kwargs)

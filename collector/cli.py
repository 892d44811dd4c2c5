"""The `collector` command: `collector run|check|sim|bench`, also reachable as `python -m collector`.

One parser definition per command, so the entry points cannot drift apart: `supervisor.py` (the documented
way to start the collector) builds its parser with `add_run_arguments` and hands the result to `run`, exactly
as `collector run` does; `collector sim` uses the simulator's own argument definitions. Heavy imports (the
arbiter, psycopg, the simulator) happen inside the command that needs them: multiprocessing imports the main
module (`supervisor.py`, the console script) again in every child process, and the data path must never import
the simulator.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import NoReturn

from collector.config import Config, ConfigError, load_config, parse_duration
from collector.sim_options import EVERY_VENUE, per_venue

# The scripts in the checkout's bench/ folder, by the name `collector bench NAME` takes (tests/test_cli.py
# checks this list against bench/). bench/ is not a package and is not installed with the wheel.
BENCH_SCRIPTS = ("throughput", "peer", "shipped", "writer", "filter-budget", "fresh-start", "ws-client", "api", "api-pair", "soak", "ab", "idle-ab", "latency",
                 "venue-cost", "venues-scale", "wake-cost", "compiled-tree", "numeric-cost")


class OneLineParser(argparse.ArgumentParser):
    """A usage mistake is one line on stderr and exit code 2, like every other error of the command."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (--help for usage)\n")


# --- collector run / supervisor.py

def add_run_arguments(p: argparse.ArgumentParser) -> None:
    """The supervisor's options, shared by `supervisor.py` and `collector run`."""
    p.add_argument("--config", default="config/main.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--workers", type=int, default=8, help="worker processes sharing the symbols (default: 8)")
    p.add_argument("--simulate", action="store_true",
                   help="start the bundled simulator of each venue in collection.exchanges on 127.0.0.1 and collect from them")
    p.add_argument("--run-for", type=float, default=None, metavar="SECONDS", help="stop cleanly after this long")
    p.add_argument("--api", action="store_true",
                   help="also serve the read API (`collector api`, config api:) as a supervised child process")
    p.add_argument("--sim-symbols", type=per_venue(int, 1, "N"), default={}, metavar="N[,VENUE=N...]",
                   help="with --simulate: perpetuals per venue; a bare N is every venue's, venue=N one venue's "
                        "(default: the real markets' sizes, binance 496, okx 250, bybit 400)")
    p.add_argument("--sim-rate", type=per_venue(float, 0, "RATE"), default={EVERY_VENUE: 1260.0},
                   metavar="RATE[,VENUE=RATE...]",
                   help="with --simulate: aggTrades/s (sim time) of each venue's whole market, the same syntax "
                        "(default: 1260 each)")
    p.add_argument("--sim-speed", type=float, default=1.0, help="with --simulate: sim seconds per wall second")
    p.add_argument("--sim-seed", type=int, default=7)
    p.add_argument("--sim-truth-trades", action="store_true",
                   help="with --simulate: each simulator also keeps every trade it sent in /_sim/truth, so a "
                        "keep_all run can be compared trade by trade (bench/venues_scale.py; memory grows with "
                        "the trades sent)")


def run(p: argparse.ArgumentParser, args: argparse.Namespace) -> int:
    """Start the supervisor with options parsed by `add_run_arguments`; returns its exit code."""
    if args.workers < 1:
        p.error("--workers must be at least 1")
    from collector.runtime.arbiter import Supervisor

    # per-venue values stay {venue or '*': value} dicts; the bootstrap resolves each simulator's
    # (collector.sim_options.options_for)
    sim = {"symbols": args.sim_symbols, "rate": args.sim_rate, "speed": args.sim_speed, "seed": args.sim_seed,
           "truth_trades": args.sim_truth_trades or None}
    code: int = Supervisor(args.config, args.workers, simulate=args.simulate, run_for=args.run_for,
                           sim_options=sim, api=args.api).run()
    return code


# --- collector check

def _add_check_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default="config/main.yaml",
                   help="the collector's config: database, retention, funding interval, data types")
    p.add_argument("--dsn", help="database URL (default: database.url / host from the config)")
    p.add_argument("--embedded", action="store_true",
                   help="check the embedded database in database.embedded_dir (started if it is not running)")
    p.add_argument("--since", help="judge the span from this time (ISO 8601, UTC) or duration ago (2h, 7d); "
                                   "default: each symbol's first row within the last day")


def since_time(value: str | None, now: float) -> datetime | None:
    """--since: an ISO 8601 time (UTC unless it says otherwise) or a duration back from now ('2h', '7d')."""
    if value is None:
        return None
    try:
        back = parse_duration(value, "--since")
    except ValueError:
        back = None
    if back is not None:
        return datetime.fromtimestamp(now, UTC) - back
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: expected a time like 2025-03-12T15:00 or a duration like 2h, got {value!r}"
                         ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def check(args: argparse.Namespace) -> int:
    """The data-integrity report: exit code 0 when all is well, 1 when something is wrong, 2 when it
    cannot run."""
    now = time.time()
    try:
        cfg = load_config(args.config)
        since = since_time(args.since, now)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dsn:
        return _report(args.dsn, cfg, now, since)
    if args.embedded:
        from collector.db.embedded import EmbeddedPostgres

        datadir = Path(cfg.database.embedded_dir)
        if not (datadir / "PG_VERSION").exists():  # never create a cluster just to report it empty
            print(f"error: no embedded database in {datadir} (database.embedded_dir of {args.config}); "
                  "has the collector run with this config?", file=sys.stderr)
            return 2
        server = EmbeddedPostgres(datadir=datadir, database=cfg.database.database)
        dsn = server.start()  # attaches to the collector's server when it is running on that directory
        try:
            return _report(dsn, cfg, now, since)
        finally:
            server.stop()  # stops only a server this call started
    if cfg.database.embedded:
        print(f"error: {args.config} configures no database (no database.url or database.host): give --dsn, "
              f"or --embedded to check the embedded database in {cfg.database.embedded_dir}", file=sys.stderr)
        return 2
    from collector.runtime.bootstrap import database_dsn

    return _report(database_dsn(cfg), cfg, now, since)


def _report(dsn: str, cfg: Config, now: float, since: datetime | None) -> int:
    import psycopg

    from collector.db.check import NoCollectorSchema, run_check
    from collector.runtime.logs import mask_secrets

    try:
        report = run_check(dsn, None, now, retention=cfg.retention.periods(), since=since,
                           funding_interval_s=cfg.filters.funding.min_interval_s,
                           data_types=cfg.collection.data_types, venue="binance")
    except NoCollectorSchema as e:
        print(f"error: {e}; has the collector run against it?", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:
        print(f"error: cannot connect to the database: {mask_secrets(str(e).strip())}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


# --- collector bench

def bench_dir() -> Path:
    """bench/ beside the package: present in a source checkout (also installed editable), not in a wheel."""
    return Path(__file__).resolve().parent.parent / "bench"


def bench(name: str, rest: list[str]) -> NoReturn:
    """Replace this process by `python bench/<name>.py REST...`: the script handles Ctrl-C and stops its
    children itself, which it could not do behind a parent that reacts to the same Ctrl-C."""
    script = bench_dir() / f"{name.replace('-', '_')}.py"
    if not script.is_file():
        print(f"error: collector bench runs the scripts of a source checkout; there is no {script} "
              "(clone the repository and run it from there)", file=sys.stderr)
        raise SystemExit(2)
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, str(script), *rest])


# --- the command

def build_parser(prog: str = "collector") -> argparse.ArgumentParser:
    """The `collector` parser with its five subcommands."""
    from exchange_sim.__main__ import add_arguments as add_sim_arguments  # the simulator's only definition

    p = OneLineParser(prog=prog, description="USDT-margined perpetual futures collector (Binance, OKX, Bybit)")
    sub = p.add_subparsers(dest="command", required=True, metavar="{run,check,sim,bench,api}")
    r = sub.add_parser("run", help="collect: the supervisor, as `python supervisor.py`",
                       description="Start the collector (the same as `python supervisor.py`).")
    add_run_arguments(r)
    r.set_defaults(parser=r)  # so that `run` reports a bad value as `collector run: error: ...`
    _add_check_arguments(sub.add_parser("check", help="check the stored data and print a report",
                                        description=check.__doc__))
    add_sim_arguments(sub.add_parser("sim", help="run the Binance simulator alone until Ctrl-C",
                                     description="The bundled Binance USDT-M simulator on loopback "
                                                 "(the same as `python -m exchange_sim`)."))
    b = sub.add_parser("bench", help="run a benchmark script from the checkout's bench/",
                       description="Run bench/<NAME>.py with this interpreter; the arguments after NAME go "
                                   "to the script (`collector bench NAME --help` shows them).")
    b.add_argument("name", choices=BENCH_SCRIPTS, metavar="NAME", help=f"one of: {', '.join(BENCH_SCRIPTS)}")
    b.add_argument("args", nargs=argparse.REMAINDER, help="passed to the script")
    # The read API parses its own options (collector.api.serve); listed here for --help only.
    sub.add_parser("api", help="serve the read-only HTTP API (`collector api --help`; needs the api extra)",
                   add_help=False)
    return p


def main(argv: list[str] | None = None, prog: str = "collector") -> int:
    """Entry point of the `collector` console script and of `python -m collector`."""
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["api"]:  # its options are the API's own; FastAPI is imported only here
        from collector.api import main as api_main

        return api_main(argv[1:])
    p = build_parser(prog)
    args = p.parse_args(argv)
    if args.command == "run":
        return run(args.parser, args)
    if args.command == "check":
        return check(args)
    if args.command == "sim":
        from exchange_sim.__main__ import config_from, serve

        serve(config_from(args))
        return 0
    bench(args.name, args.args)

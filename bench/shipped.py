#!/usr/bin/env python3
"""The shipped configuration, measured from outside the process tree: `supervisor.py --workers 8`, filtered.

What users run (`python supervisor.py --workers 8`) at the real market's rate: 1,260 aggTrades/s over 496
symbols (the simulator adds ~165 markPrice frames/s, one per symbol every 3 s, and ~460 kline updates),
trade filter on. Each *run* is a whole session - fresh simulator, fresh database on one throwaway PostgreSQL
server, the real supervisor started as a subprocess - so the medians over runs include start-up to start-up
variation, and every run yields:

- **cold start**: from `Popen` of the supervisor to the first row committed in `trades` (the bench-only
  `committed_at DEFAULT clock_timestamp()` column, see throughput.py), wall seconds;
- **CPU cores** (loaded): utime+stime from /proc/<pid>/stat of every process in the supervisor's tree
  (supervisor, writer, workers, multiprocessing's helpers), summed, over a steady window after a warm-up,
  divided by the window's wall time; PostgreSQL's own CPU apart ("PG cores"); the simulator (this script's
  child, not the supervisor's) is in neither;
- **wake-ups/s** (per role): the growth of `voluntary_ctxt_switches` in /proc/<pid>/status over the same
  window: how often each process went to sleep and was woken (a socket read, a timer, an acknowledgement);
- **PSS MB**: /proc/<pid>/smaps_rollup `Pss:` of every process of the tree at the end of the window,
  summed (shared pages split between the processes that map them: the real footprint; the shared-memory
  stats block is split among the supervisor and the children that map it, so it is counted once);
- **idle**: the same with the simulator at 0 aggTrades/s (connections open, markPrice still pushed every
  3 s per symbol, klines only updated by trades, so none but the closed ones each minute), after the same
  warm-up;
- **peer**: bench/peer.py's session at the same rate, one window of the same length, in the same invocation:
  `stock` (cryptofeed + its Postgres backends, everything stored) and `filtered` (the same with the
  collector's own storage rules in its callbacks, bench/peer_filter.py: the like-for-like one); their PG cores
  are PostgreSQL's whole process tree, as ours;
- **bytes on disk per table per day**: pg_total_relation_size growth of every table over the loaded window,
  extrapolated linearly to 86,400 s (DISK_METHOD); TimescaleDB is detected and reported (compressed sizes
  are not measured: the collector runs in plain-PostgreSQL mode here).

`--server fast durable` repeats everything on a server with fsync on; every table is preceded by a line
naming the command, the product snapshot and the server.

What the window covers: the workers' per-tick work (batch ageing, stats publication, control messages),
the activity and checkpoint publication (every 2 s), provisional-threshold refreshes (every 1 s while the
warm-up lasts: every session starts from a fresh database, so the window is inside the 10-minute tier
warm-up unless --tier-warmup ends it first, or --stored-tiers starts it on stored tiers), the supervisor's
loop (every 5 s when nothing is under way) and stats log (monitoring.stats_interval), the writer's flushes and
its job polls, and the share of open-interest polls that falls in the window (each symbol every 0.8 x 300 s, a
worker's symbols in 8 bursts per 240 s: a 60 s window holds about a quarter of them). It does NOT cover tier
recomputation (filters.trades.tier_interval, 24 h by default) nor the writer's hourly maintenance: use
bench/soak.py for those.

    python bench/shipped.py                 # 3 runs x (loaded, idle, 2 peers), 30 s warm-up + 120 s window: ~33 min
    python bench/shipped.py --quick         # 1 run, 10 s warm-up + 20 s window, no idle: ~2 min
    python bench/shipped.py --runs 1 --window 60 --no-peer --no-idle --src .   # before/after a change
    python bench/shipped.py --tier-warmup 15 ...   # the window past the provisional tiers (run_session says what differs)
    python bench/shipped.py --stored-tiers ...     # every session starts on the tiers a first run stored (steady state)

**Stored tiers** (`--stored-tiers [SECONDS]`): every session above starts from an empty database, so its window
falls inside the fresh start's tier warm-up, which no collector runs for long: after `filters.trades.tier_warmup`
(10 min) the supervisor stores tiers from live statistics, and every later start resumes stored ones. With this
option the invocation first runs one *preparation* session (the shipped configuration at the loaded rate) until
the supervisor has stored its first tiers from live statistics (SECONDS of statistics, default the shipped
600), then seeds every measured session's fresh database with them (stamped at the session's start, so the next
computation is a tier interval, 24 h, away): each loaded and idle session starts as a restart does, on stored
tiers, with no warm-up (checked in its log). The filtered peer is given the same tiers in place of its ticker
bootstrap and warm-up; the stock peer has no filter. Tiers from 10 minutes of statistics, not a day's: the
collector's own first day runs on exactly these.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: --src can win

import psycopg
import yaml

from bench import common
from bench.peer import VARIANTS, count_rows, exact_verdict, run_peer
from bench.peer_filter import write_tiers
from bench.throughput import (
    BOOT_TIMEOUT_S,
    STOP_TIMEOUT_S,
    logged_kept,
    logged_received,
    open_connections,
    prepare_database,
    resumed_tiers,
    stable,
    workers_received,
    write_config,
)
from collector.db.embedded import free_port
from collector.db.tiers_repo import TierRow, load_latest_tiers, store_tiers
from exchange_sim import SimProcess

WORKERS = 8
RATE = 1260.0
SYMBOLS = 496
# Warm-up: boot of 8 interpreters on 2 shared cores, subscriptions, first flushes and the first provisional
# threshold refreshes; the window then sees the steady state.
WARMUP_S = 30.0
WINDOW_S = 120.0
RUNS = 3
# --stored-tiers without a value: the shipped filters.trades.tier_warmup (10 min), the tiers a real first start stores.
STORED_TIERS_S = 600.0
VENUE = "binance"
# Targets from issue 12 (reported against, never asserted).
TARGET_CORES = 0.045
TARGET_PSS_MB = 200.0
TARGET_IDLE_CORES = 0.01
# How bytes on disk per day are estimated (printed with the numbers).
DISK_METHOD = ("pg_total_relation_size (heap + indexes + TOAST, partitions summed) of every table at the start "
               "and the end of the measured window; the growth / window seconds x 86,400 = bytes per day at "
               "this rate. Plain PostgreSQL, uncompressed. Linear: PostgreSQL grows files by 8 kB pages, so "
               "short windows are coarse; funding (1 row/symbol/minute) and candles_1m (closed minutes) need "
               "a window of several minutes, open_interest (every 300 s) --window 600 or more.")


def _first_commit(dsn: str) -> float | None:
    """Unix time of the first row committed into trades (None while there is none)."""
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT extract(epoch FROM min(committed_at)) FROM trades").fetchone()
    return float(row[0]) if row and row[0] is not None else None


def role(pid: int) -> str:
    """common.label, plus multiprocessing's helpers, whose command lines are longer than proc_name keeps."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fp:
            cmdline = fp.read().decode("utf-8", "replace")
    except OSError:
        return "?"
    for helper in ("forkserver", "resource_tracker"):
        if f"multiprocessing.{helper} import main" in cmdline:
            return f"mp {helper.replace('_', ' ')}"
    if cmdline.startswith("collector: forkserver"):  # forked from the supervisor (collector.runtime.forkserver)
        return "mp forkserver"
    return common.label(common.proc_name(pid))


def _start(src: Path, cfg: Path, tmp: Path, workers: int) -> subprocess.Popen:
    """The real supervisor as a subprocess of its own session (so a killpg takes its whole tree)."""
    return subprocess.Popen([sys.executable, str(src / "supervisor.py"), "--workers", str(workers),
                             "--config", str(cfg)], cwd=tmp, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True,
                            env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(src)))


def _config(tmp: Path, dsn: str, sim: SimProcess, port: int, tier_warmup_s: float | None) -> Path:
    cfg = write_config(tmp, dsn, sim.rest_url, sim.ws_url, False, port)
    if tier_warmup_s is not None:
        doc = yaml.safe_load(cfg.read_text())
        doc["filters"]["trades"]["tier_warmup"] = f"{tier_warmup_s:g}s"
        cfg.write_text(yaml.safe_dump(doc))
    return cfg


def first_live_tiers(admin: str, src: Path, rate: float, workers: int, symbols: int,
                     statistics_s: float) -> dict[str, TierRow]:
    """The tiers a fresh start stores after `statistics_s` of live statistics (its filters.trades.tier_warmup).

    The preparation of --stored-tiers: the shipped configuration at `rate` on its own simulator (the same seed,
    hence the same symbols, as the measured sessions) and database, run until symbol_tiers holds a computation,
    which is read back as a restart reads it (tiers_repo.load_latest_tiers), then stopped and dropped."""
    dsn = common.new_database(admin, "tiers")
    prepare_database(dsn)
    tmp = Path(tempfile.mkdtemp(prefix="bench-shipped-"))
    sup: subprocess.Popen | None = None

    def stored() -> dict[str, TierRow]:
        with psycopg.connect(dsn) as conn:
            return load_latest_tiers(conn, VENUE)

    done = False
    try:
        with common.simulator(rate, symbols) as sim:
            sup = _start(src, _config(tmp, dsn, sim, free_port(), statistics_s), tmp, workers)
            tiers: dict[str, TierRow] = common.wait_for(  # type: ignore[assignment]
                stored, statistics_s + BOOT_TIMEOUT_S, "the first tiers from live statistics", poll=1.0)
            sup.send_signal(signal.SIGTERM)
            sup.wait(STOP_TIMEOUT_S)
            done = True
    finally:
        common.end_supervisor(sup)
        common.drop_database(admin, dsn)
        common.leave_session_dir(tmp, done, "the --stored-tiers preparation")  # also after a signal
    return tiers


def run_session(admin: str, src: Path, rate: float, workers: int, warmup_s: float, window_s: float,
                symbols: int = SYMBOLS, tier_warmup_s: float | None = None,
                stored_tiers: Mapping[str, TierRow] | None = None) -> dict:
    """One whole session: start, warm up, one measured window, PSS at its end, stop. See the module doc.

    `tier_warmup_s`: filters.trades.tier_warmup for the session (None: the shipped 10 minutes); shorter than
    the warm-up, the window measures a collector past its provisional tiers (checked in its log): no
    once-a-second threshold refresh, as with stored tiers. Not the stored tiers' filter, though: tiers from
    seconds of statistics keep more trades than a day's do (~4.4% against ~0.7% at 15 s), so the writer's
    share is above a steady state's.

    `stored_tiers`: stored into the fresh database before the supervisor starts (stamped now), so the session
    starts as a restart on stored tiers does: no warm-up, no provisional thresholds (checked in its log)."""
    dsn = common.new_database(admin, "shipped")
    prepare_database(dsn)
    if stored_tiers:
        with psycopg.connect(dsn) as conn:
            store_tiers(conn, VENUE, stored_tiers, datetime.now(UTC))
    tmp = Path(tempfile.mkdtemp(prefix="bench-shipped-"))
    postmaster = common.postmaster_pid(admin)
    sup: subprocess.Popen | None = None
    sustained = False
    try:
        with common.simulator(rate, symbols) as sim:
            port = free_port()
            cfg = _config(tmp, dsn, sim, port, tier_warmup_s)
            t_popen = time.time()
            sup = _start(src, cfg, tmp, workers)
            common.wait_for(lambda: open_connections(sim.rest_url) >= workers, BOOT_TIMEOUT_S, "workers to connect")
            t_connected = time.time()
            cold = None
            if rate > 0:
                first = common.wait_for(lambda: _first_commit(dsn), BOOT_TIMEOUT_S, "the first committed trade")
                cold = float(first) - t_popen  # type: ignore[arg-type]
            time.sleep(max(0.0, warmup_s - (time.time() - t_connected)))
            if tier_warmup_s is not None and rate > 0:
                log = tmp / "logs" / "supervisor.log"
                if "tiers recomputed from" not in log.read_text(errors="replace"):
                    raise SystemExit(f"--tier-warmup {tier_warmup_s:g}: no tiers from live statistics in the "
                                     f"supervisor's log after the {warmup_s:g} s warm-up; the window would not "
                                     "be past the provisional tiers")
            if stored_tiers and not resumed_tiers(tmp / "logs", len(stored_tiers)):
                raise SystemExit(f"--stored-tiers: the supervisor did not resume the {len(stored_tiers)} "
                                 "stored tiers (no 'resumed the tiers of' line in its log)")
            tree = common.process_tree(sup.pid)
            c0 = {pid: common.cpu_seconds(pid) for pid in tree}
            v0 = {pid: common.wakeups(pid) for pid in tree}
            bytes0 = common.table_bytes(dsn)
            pg0, r0, w0 = common.tree_cpu(postmaster), workers_received(port), time.monotonic()
            time.sleep(window_s)
            dt = time.monotonic() - w0
            pg1, r1 = common.tree_cpu(postmaster), workers_received(port)
            bytes1 = common.table_bytes(dsn)
            procs: dict[int, dict] = {}
            for pid in common.process_tree(sup.pid):
                with contextlib.suppress(OSError):
                    # a process born inside the window (a restart) is charged all its CPU
                    cpu = common.cpu_seconds(pid) - c0.get(pid, 0.0)
                    woke = common.wakeups(pid) - v0.get(pid, 0)
                    procs[pid] = {"name": role(pid), "cpu_cores": cpu / dt, "wakeups_s": woke / dt,
                                  "pss_mb": common.pss_kb(pid) / 1024, "rss_mb": common.rss_kb(pid) / 1024}
            gone = sorted(set(tree) - set(procs))
            # the exact-count check (bench.peer.exact_verdict): pause, drain, stop, then count
            common.http_json(sim.rest_url + "/_sim/pause")
            totals = common.sent_totals_by_stream(sim.rest_url)
            common.wait_for(lambda: stable(lambda: workers_received(port), common.DRAIN_QUIET_S), 60, "workers to drain")
            sup.send_signal(signal.SIGTERM)
            exit_code = sup.wait(STOP_TIMEOUT_S)
            received, kept = logged_received(tmp / "logs"), logged_kept(tmp / "logs")
            verdict = exact_verdict(count_rows(dsn, ("trades",))["trades"], sum(kept.values()),
                                    received.get("trades", 0) if received else -1, totals.get("aggTrade", 0), False, None)
            sustained = verdict["sustained"] and exit_code == 0
    finally:
        common.end_supervisor(sup)
        common.drop_database(admin, dsn)
        common.leave_session_dir(tmp, sustained, "the session")
    return {"rate": rate, "workers": workers, "window_s": round(dt, 1), "warmup_s": warmup_s, "tier_warmup_s": tier_warmup_s,
            "stored_tiers": len(stored_tiers) if stored_tiers else 0,
            "cold_start_s": cold, "received_msgs_s": (r1 - r0) / dt,
            "cpu_cores": sum(p["cpu_cores"] for p in procs.values()), "pg_cores": common.cpu_delta(pg0, pg1) / dt,
            "table_bytes_start": bytes0, "table_bytes_end": bytes1,
            # growth in the window, extrapolated linearly to a day (see DISK_METHOD)
            "bytes_per_day": {t: (bytes1.get(t, 0) - bytes0.get(t, 0)) / dt * 86400 for t in bytes1},
            "pss_mb": sum(p["pss_mb"] for p in procs.values()), "rss_mb": sum(p["rss_mb"] for p in procs.values()),
            "processes": procs, "exited_in_window": gone, "exit_code": exit_code, "exact": verdict,
            "sustained": sustained}


def summarise(runs: list[dict]) -> dict[str, Any]:
    keys = ("cold_start_s", "received_msgs_s", "cpu_cores", "pg_cores", "pss_mb", "rss_mb")
    out: dict[str, Any] = {k: common.median([r[k] for r in runs]) for k in keys}
    out["runs"] = len(runs)
    out["sustained"] = all(r["sustained"] for r in runs)
    tables = sorted({t for r in runs for t in r.get("bytes_per_day", {})})
    out["bytes_per_day"] = {t: common.median([r["bytes_per_day"].get(t) for r in runs]) for t in tables}
    # per role (workers summed), median over runs: where the cores, wake-ups and megabytes go
    measures = ("cpu_cores", "wakeups_s", "pss_mb")
    roles: dict[str, list[dict[str, float]]] = {}
    for r in runs:
        by: dict[str, dict[str, float]] = {}
        for p in r["processes"].values():
            acc = by.setdefault("workers" if p["name"].startswith("worker") else p["name"], dict.fromkeys(measures, 0.0))
            for m in measures:
                acc[m] += p[m]
        for name, acc in by.items():
            roles.setdefault(name, []).append(acc)
    out["by_role"] = {name: {m: common.median([v[m] for v in vals]) for m in measures} for name, vals in roles.items()}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workers", type=int, default=WORKERS)
    p.add_argument("--rate", type=float, default=RATE, help="offered aggTrades/s (loaded runs)")
    p.add_argument("--symbols", type=int, default=SYMBOLS)
    p.add_argument("--runs", type=int, default=RUNS, help="sessions per configuration (medians)")
    p.add_argument("--window", type=float, default=WINDOW_S, help="measured seconds per session")
    p.add_argument("--warmup", type=float, default=WARMUP_S, help="seconds from connected to the window")
    p.add_argument("--server", nargs="+", default=["fast"], choices=list(common.SERVERS),
                   help="PostgreSQL server(s): every configuration runs once per server (default: fast)")
    p.add_argument("--peers", nargs="*", default=list(VARIANTS), choices=list(VARIANTS),
                   help="peer variants (default: stock and filtered; none: --peers with no value)")
    p.add_argument("--no-peer", action="store_true", help="same as --peers with no value")
    p.add_argument("--no-idle", action="store_true")
    p.add_argument("--src", default=None, help="run the product from this directory (default: a snapshot of HEAD)")
    p.add_argument("--quick", action="store_true", help="1 run, 10 s warm-up, 20 s window, no idle run")
    p.add_argument("--tier-warmup", type=float, default=None, metavar="SECONDS",
                   help="filters.trades.tier_warmup of the sessions (default: the shipped 10 min, so the window "
                        "falls inside it); shorter than --warmup measures a collector past its provisional tiers, "
                        "whose tiers from seconds of statistics keep more trades than a day's")
    p.add_argument("--stored-tiers", type=float, nargs="?", const=STORED_TIERS_S, default=None, metavar="SECONDS",
                   help="start every session on the tiers a preparation session stored after SECONDS of live "
                        f"statistics (default {STORED_TIERS_S:g}: the shipped warm-up), as a restart does; the "
                        "filtered peer gets the same tiers (see the module doc)")
    a = p.parse_args()
    common.stop_on_signals()
    if a.quick:
        a.runs, a.window, a.warmup, a.no_idle = 1, 20.0, 10.0, True
    if a.no_peer:
        a.peers = []
    if a.tier_warmup is not None and not 0 < a.tier_warmup < a.warmup:
        p.error(f"--tier-warmup must be > 0 and shorter than --warmup ({a.warmup:g} s), got {a.tier_warmup:g}")
    if a.stored_tiers is not None and a.tier_warmup is not None:
        p.error("--stored-tiers and --tier-warmup exclude each other: sessions on stored tiers have no warm-up")
    if a.stored_tiers is not None and not a.stored_tiers > 0:
        p.error(f"--stored-tiers must be > 0 seconds of statistics, got {a.stored_tiers:g}")
    if a.stored_tiers is not None and not a.rate > 0:
        p.error(f"--stored-tiers needs trades to tier on: its preparation runs at --rate, got {a.rate:g} "
                "(the idle sessions run at 0 on their own)")
    t_start = time.monotonic()
    out: dict[str, dict] = {}
    with common.product_source(a.src) as (src, what), tempfile.TemporaryDirectory(prefix="bench-tiers-") as tiers_dir:
        for server in a.server:
            with common.throwaway_postgres(server) as admin:
                timescale = common.timescaledb_available(admin)
                print(f"product: {what}; server: {common.SERVERS[server]}; {a.runs} run(s), warm-up "
                      f"{a.warmup:.0f} s, window {a.window:.0f} s", flush=True)
                loaded: list[dict] = []
                idle: list[dict] = []
                peers: dict[str, list[dict]] = {v: [] for v in a.peers}
                tiers: dict[str, TierRow] | None = None
                tiers_file = ""
                if a.stored_tiers is not None:
                    t0 = time.monotonic()
                    tiers = first_live_tiers(admin, src, a.rate, a.workers, a.symbols, a.stored_tiers)
                    tiers_file = str(write_tiers(tiers, tiers_dir))
                    counts = sorted(Counter(t.tier for t in tiers.values()).items())
                    print(f"  stored tiers: {len(tiers)} symbols from {a.stored_tiers:g} s of live statistics "
                          f"({', '.join(f'tier {t}: {n}' for t, n in counts)}; preparation "
                          f"{time.monotonic() - t0:.0f} s)", flush=True)
                for i in range(a.runs):
                    loaded.append(run_session(admin, src, a.rate, a.workers, a.warmup, a.window, a.symbols,
                                               a.tier_warmup, tiers))
                    print(f"  run {i + 1} loaded: {_line(loaded[-1])}", flush=True)
                    if not a.no_idle:
                        idle.append(run_session(admin, src, 0.0, a.workers, a.warmup, a.window, a.symbols,
                                                 a.tier_warmup, tiers))
                        print(f"  run {i + 1} idle:   {_line(idle[-1])}", flush=True)
                    for v in a.peers:
                        peers[v].append(run_peer(admin, a.rate, 1, a.window, a.warmup, a.symbols, v,
                                                 tiers_file if v == "filtered" else ""))
                        r = peers[v][-1]
                        print(f"  run {i + 1} peer {v}: {common.fmt(r['cpu_frac'])} cores, PG "
                              f"{common.fmt(r['pg_cpu_frac'])} cores, {common.fmt(r['peak_pss_mb'])} MB PSS (peak), "
                              f"sustained {common.fmt(r['sustained'])}", flush=True)
            summary = {"loaded": summarise(loaded), "idle": summarise(idle) if idle else None,
                       "peers": {v: {"cpu_cores": common.median([r["cpu_frac"] for r in rs]),
                                     "pg_cores": common.median([r["pg_cpu_frac"] for r in rs]),
                                     "pss_mb": common.median([r["peak_pss_mb"] for r in rs]),
                                     "sustained": all(r["sustained"] for r in rs), "runs": len(rs)}
                                 for v, rs in peers.items() if rs},
                       "timescaledb_available": timescale, "stored_tiers_s": a.stored_tiers}
            out[server] = {"summary": summary, "loaded": loaded, "idle": idle, "peers": peers}
        for server, res in out.items():
            print(f"\n{common.conditions(sys.argv, what, server)}")
            report(res["summary"], a)
    name = "shipped-quick" if a.quick else "shipped"
    path = common.write_results(name, {"command": " ".join(sys.argv), "product": what, "servers": out,
                                       "disk_method": DISK_METHOD, "elapsed_s": round(time.monotonic() - t_start)})
    print(f"\nwrote {path} ({time.monotonic() - t_start:.0f} s)")


def _line(r: dict) -> str:
    cold = f", cold start {r['cold_start_s']:.1f} s" if r["cold_start_s"] is not None else ""
    e = r["exact"]
    return (f"{r['cpu_cores']:.4f} cores, {r['pss_mb']:.0f} MB PSS, {r['received_msgs_s']:,.0f} msg/s received"
            f"{cold}, PG {r['pg_cores']:.4f} cores; exact count: trades rows {e['db_trades']}, kept "
            f"{e['kept_trades']}, received {e['received_trades']}, sent {e['sent_trades']}, exit {r['exit_code']}"
            f" -> sustained {common.fmt(r['sustained'])}")


def report(s: dict, a: argparse.Namespace) -> None:
    rows = [{"what": f"collector --workers {a.workers}, {a.rate:,.0f} aggTrades/s", **s["loaded"],
             "target": f"<= {TARGET_CORES} cores, <= {TARGET_PSS_MB:.0f} MB"}]
    if s["idle"]:
        rows.append({"what": f"collector --workers {a.workers}, idle", **s["idle"],
                     "target": f"<= {TARGET_IDLE_CORES} cores"})
    for v, pr in s["peers"].items():
        rows.append({"what": f"peer {v}, {a.rate:,.0f} aggTrades/s", **pr})
    common.print_table(rows, [("what", "configuration"), ("runs", "runs"), ("cpu_cores", "CPU cores"),
                              ("pg_cores", "PG cores"), ("pss_mb", "PSS MB"), ("cold_start_s", "cold start s"),
                              ("received_msgs_s", "recv msg/s"), ("sustained", "sustained"), ("target", "target")],
                       f"medians over runs (window {a.window:.0f} s after {a.warmup:.0f} s warm-up; a peer is one"
                       " session per run" + (f"; every session on tiers stored after {a.stored_tiers:g} s of live "
                                             "statistics" if a.stored_tiers else "") + ")")
    ratios = [{"peer": v, "cpu": pr["cpu_cores"] / s["loaded"]["cpu_cores"] if s["loaded"]["cpu_cores"] else None,
               "cpu_pg": ((pr["cpu_cores"] or 0) + (pr["pg_cores"] or 0))
               / ((s["loaded"]["cpu_cores"] or 0) + (s["loaded"]["pg_cores"] or 0) or float("nan")),
               "pss": pr["pss_mb"] / s["loaded"]["pss_mb"] if s["loaded"]["pss_mb"] else None,
               "sustained": pr["sustained"]} for v, pr in s["peers"].items()]
    if ratios:
        common.print_table(ratios, [("peer", "peer"), ("cpu", "CPU peer/ours"), ("cpu_pg", "incl. PG"),
                                    ("pss", "PSS peer/ours"), ("sustained", "peer sustained")],
                           "ratios, same invocation (> 1: the collector is cheaper)")
    roles = [{"run": "loaded", "role": k, **v} for k, v in s["loaded"]["by_role"].items()]
    if s["idle"]:
        roles += [{"run": "idle", "role": k, **v} for k, v in s["idle"]["by_role"].items()]
    common.print_table(roles, [("run", "run"), ("role", "process"), ("cpu_cores", "CPU cores"),
                               ("wakeups_s", "wake-ups/s"), ("pss_mb", "PSS MB")],
                       "by process role (workers summed), medians; wake-ups = voluntary context switches")
    disk = [{"table": t, "mb_day": b / 1e6 if b is not None else None}
            for t, b in s["loaded"]["bytes_per_day"].items()]
    common.print_table(disk, [("table", "table"), ("mb_day", "MB per day")],
                       f"bytes on disk per table per day at {a.rate:,.0f} aggTrades/s (median over runs)")
    print(f"  method: {DISK_METHOD}")
    print("  TimescaleDB: " + ("available on this server, but compressed sizes are not measured by this script"
                               " (the collector runs in plain-PostgreSQL mode here)" if s["timescaledb_available"]
                               else "not available on this server: compressed sizes not measured"))


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""End-to-end throughput of `python supervisor.py --workers N` on the simulator, side by side with the peer.

One session = a fresh simulator at an offered rate + a fresh database on one throwaway PostgreSQL server +
the real supervisor (writer + N workers, config file pointing at both, logs in a temp dir). After a warm-up,
`--runs` consecutive measurement windows of `--window` seconds are taken (medians reported): starting the
2-core machine's collector once per window would spend most of the budget on start-up.

Per window:
- offered msgs/s: frames the simulator wrote to the collector's connections (its truth; every frame is a
  message: aggTrade, markPrice, kline update, forceOrder);
- received msgs/s: the workers' own counters of frames received (aggTrade, markPrice, kline, forceOrder;
  not the REST open-interest answers), summed over workers from the collector's /stats at each window edge;
- CPU us per message: utime+stime (from /proc) of every collector process (supervisor, writer, workers, the
  multiprocessing resource tracker) / received messages; PostgreSQL's CPU is reported apart;
- event-to-commit latency p50/p99: the commit time of the transaction that inserted each trades row
  (`pg_xact_commit_timestamp(xmin)`; the server runs with track_commit_timestamp) - the trade's event time
  from the exchange (moved onto the wall clock with the sim's clock offset);
- COPY/s: transactions that committed rows into the product's tables in the window; CPU us per stored row:
  the collector's CPU over the rows those transactions stored.
A bench-only `committed_at DEFAULT clock_timestamp()` column on trades (the product's COPY names its columns,
so it never sees it) marks when rows were inserted: the drain and cold-start checks read it.
After the windows the simulator is paused, the collector drains, rows per table are counted by event time
over the measured span, and the supervisor is stopped: the workers' logged totals must cover >= 99.9% of
the aggTrades the simulator sent (no silent loss).
Sustained (bench.peer.exact_verdict, the same rule for the peer): after the pause, the drain and the
supervisor's SIGTERM stop, the workers' logged received trades equal the aggTrades the simulator sent, the
trades table holds exactly as many rows as the workers' logged `kept` counters (keep_all: also exactly every
trade sent; rows left in the writer's spool or in flight are missing and fail it), the supervisor exited 0,
and p99 latency stayed under 1 s. The frames ratio from the first window to the pause is reported beside it.
The peer each mode is compared with: filtered -> the filtered peer (same rules in its callbacks), keep_all ->
the stock peer. --server fast|durable picks fsync off / on; the output says which.

Every session starts from an empty database, so by default its windows fall inside the fresh start's tier
warm-up (filters.trades.tier_warmup, 10 min), when each worker refreshes its provisional thresholds every
second from its symbols' statistics: a cost no collector pays after its first ten minutes. `--stored-tiers
[SECONDS]` measures the state a user runs in for months instead: one preparation session (bench.shipped's:
the shipped `--workers 8` at the real market's 1,260/s) runs until the supervisor stores its first tiers from
SECONDS of live statistics, and every measured session's database is seeded with them, so each starts as a
restart does, on stored tiers, with no warm-up (checked in its log). The filtered peer gets the same tiers;
the stock peer has no filter. The header of the results says which state was measured.

    python bench/throughput.py            # default matrix, < 10 min
    python bench/throughput.py --quick    # N=2, one rate, one window, filtered + peer: ~1.5 min
    python bench/throughput.py --stored-tiers 60 ...   # every session on stored tiers (past the warm-up)
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path

if __package__ in (None, ""):
    sys.path.append(str(Path(__file__).resolve().parents[1]))  # after PYTHONPATH: --src can win

import psycopg
import yaml

from bench import common
from bench.peer import PEER_COLS, count_rows, exact_verdict, run_peer
from bench.peer_filter import write_tiers
from collector.db.embedded import free_port
from collector.db.schema import ensure_schema
from collector.db.tiers_repo import TierRow, store_tiers

# Default matrix: every rate in filtered and keep_all at N=2 (the 2-core machine's natural N), N scaling at
# one mid rate; the peer at the same rates. Sized so the whole run stays under 10 minutes.
DEFAULT_RATES = [1260.0, 5000.0, 20000.0, 50000.0]
DEFAULT_N = 2
SCALING_N = [1, 2, 4, 8]
SCALING_RATE = 10000.0
# Warm-up before the first window: connections subscribed, first flushes done, the trade filter's per-symbol
# state created. Windows: long enough that 10 ms sim ticks and 250 ms flushes average out.
WARMUP_S = 4.0
WINDOW_S = 4.0
# Boot can take a while: N interpreters importing cryptofeed on 2 shared cores.
BOOT_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 60.0
# Tables the collector writes (event-time column "time"); derived candles come from candles_1m roll-ups.
TABLES = ("trades", "funding", "liquidations", "candles_1m", "open_interest")
# Targets from the brief (reported against, never asserted).
TARGET_RATE = 50_000
TARGET_P99_MS = 1000
TARGET_US_PER_MSG = 12.0
TARGET_PEER_RATIO = 3.0
TARGET_PSS_MB = 600
# --stored-tiers without a value: the shipped filters.trades.tier_warmup (10 min), the tiers a real first start stores.
STORED_TIERS_S = 600.0
VENUE = "binance"


def prepare_database(dsn: str) -> None:
    """The product's schema, created now, plus the bench-only committed_at column on trades."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ensure_schema(conn, "postgres")
        conn.execute("ALTER TABLE trades ADD COLUMN committed_at TIMESTAMPTZ DEFAULT clock_timestamp()")


def write_config(tmp: Path, dsn: str, rest: str, ws: str, keep_all: bool, port: int) -> Path:
    cfg = {"database": {"url": dsn, "mode": "postgres"},
           "exchange": {"rest_url": rest, "ws_url": ws},
           "filters": {"trades": {"keep_all": keep_all}},
           "logging": {"filename": str(tmp / "logs" / "supervisor.log")},
           "writer": {"spool_dir": str(tmp / "spool")},
           "monitoring": {"health_check_port": port}}
    path = tmp / "main.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# The frame types the simulator counts as offered messages, as the workers' /stats name them.
FRAME_TYPES = ("trades", "funding", "liquidations", "klines")


def workers_received(port: int) -> int:
    """Frames received by all workers so far (their live counters, published in shared memory)."""
    stats = common.http_json(f"http://127.0.0.1:{port}/stats")
    return int(sum(w["received"].get(t, 0) for w in stats["workers"] for t in FRAME_TYPES))  # type: ignore[index]


def open_connections(rest: str) -> int:
    doc = common.http_json(rest + "/_sim/truth?klines=0")
    return len([c for c in doc["connections"] if not c["closed"]])  # type: ignore[index]


def logged_received(log_dir: Path) -> dict[str, int]:
    """Sum of the workers' final `received {...}` counters (logged when a worker stops)."""
    return _logged(log_dir, r"stopped: received (\{.*?\}) kept")


def logged_kept(log_dir: Path) -> dict[str, int]:
    """Sum of the workers' final `kept {...}` counters: trades the filter kept (live and backfilled), by
    reason; their total is the number of rows the trades table must hold once the writer has drained."""
    return _logged(log_dir, r"stopped: received \{.*?\} kept (\{.*?\}) rejected")


def _logged(log_dir: Path, pattern: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for f in log_dir.glob("worker-*.log"):
        for m in re.finditer(pattern, f.read_text()):
            for k, v in ast.literal_eval(m.group(1)).items():
                out[k] = out.get(k, 0) + v
    return out


def run_ours(admin: str, src: Path, rate: float, workers: int, keep_all: bool, windows: int, window_s: float,
             warmup_s: float, symbols: int = 496, stored_tiers: Mapping[str, TierRow] | None = None) -> dict:
    """One session (module doc). `stored_tiers`: seeded into the fresh database (stamped now) before the
    supervisor starts, which must then log that it resumed them: the session runs past the tier warm-up."""
    dsn = common.new_database(admin, "coll")
    prepare_database(dsn)
    if stored_tiers:
        with psycopg.connect(dsn) as conn:
            store_tiers(conn, VENUE, stored_tiers, datetime.now(UTC))
    tmp = Path(tempfile.mkdtemp(prefix="bench-throughput-"))  # kept when the session fails or is not sustained
    postmaster = common.postmaster_pid(admin)
    sup: subprocess.Popen | None = None
    failure: str | None = None
    try:
        with common.simulator(rate, symbols) as sim:
            offset = common.sim_clock_offset_ms(sim.rest_url)
            port = free_port()
            cfg = write_config(tmp, dsn, sim.rest_url, sim.ws_url, keep_all, port)
            # own session: on failure the whole tree (writer, workers) is killed, not just the supervisor
            sup = subprocess.Popen([sys.executable, str(src / "supervisor.py"), "--workers", str(workers),
                                    "--config", str(cfg)], cwd=tmp, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL, start_new_session=True,
                                   env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(src)))
            sampler = common.TreeSampler(sup.pid).start()
            common.wait_for(lambda: open_connections(sim.rest_url) >= workers, BOOT_TIMEOUT_S, "workers to connect")
            time.sleep(warmup_s)
            if stored_tiers and not resumed_tiers(tmp / "logs", len(stored_tiers)):
                raise SystemExit(f"--stored-tiers: the supervisor did not resume the {len(stored_tiers)} stored "
                                 f"tiers (no 'resumed the tiers of' line in its log); logs in {tmp}")
            sampler.sample()
            first_sent, first_received = common.sent_totals(sim.rest_url).frames, workers_received(port)
            results = [_window(sim.rest_url, sampler, postmaster, window_s, offset, port) for _ in range(windows)]
            common.http_json(sim.rest_url + "/_sim/pause")
            totals = common.sent_totals_by_stream(sim.rest_url)  # final: nothing is sent while paused
            common.wait_for(lambda: stable(lambda: workers_received(port), common.DRAIN_QUIET_S), 60, "workers to drain")
            # exact, unlike a window's ratio: from the first window's start to the pause, everything the
            # exchange sent against everything the workers had received once they drained
            span_ratio = ((workers_received(port) - first_received)
                          / max(common.sent_totals(sim.rest_url).frames - first_sent, 1))
            common.wait_for(lambda: stable(lambda: _last_commit(dsn), 1.0), 60, "the writer to commit")
            span = (results[0]["t0_sim"], results[-1]["t1_sim"])
            rows = common.rows_per_table(dsn, {t: "time" for t in TABLES}, span)
            for r in results:
                r["lat_p50_ms"], r["lat_p99_ms"] = common.latency_ms(dsn, "trades", "time",
                                                                     (r["t0_sim"], r["t1_sim"]), offset)
                copies, stored = common.commits(dsn, TABLES, (r["t0_wall"], r["t0_wall"] + r["dt"]))
                r["copies_s"], r["stored_rows_s"] = copies / r["dt"], stored / r["dt"]
                r["cpu_us_per_row"] = r["cpu_frac"] / r["stored_rows_s"] * 1e6 if stored else None
            sampler.sample()
            sampler.stop()
            sup.send_signal(signal.SIGTERM)
            exit_code = sup.wait(STOP_TIMEOUT_S)
            received, kept = logged_received(tmp / "logs"), logged_kept(tmp / "logs")
            # counted after the stop: what is in the spool or in flight is not in the database
            db_rows = count_rows(dsn, ("trades",))
    except OSError as e:
        # The harness lost the simulator or the workers' stats (an HTTP read timed out, a connection refused, a
        # wait_for ran out): at ~100,000 msgs/s the simulator's own loop saturates and stops answering. Not a
        # traceback that ends the whole invocation: this session is not sustained, the others still run.
        failure = f"{type(e).__name__}: {e}"
    except BaseException:  # interrupted (SIGTERM, Ctrl-C) or a bug: the directory is kept (its logs say why) and named
        common.leave_session_dir(tmp, False, "the session")
        raise
    finally:
        common.end_supervisor(sup)
        common.drop_database(admin, dsn)
    mode = "keep_all" if keep_all else "filtered"
    if failure is not None:
        common.leave_session_dir(tmp, False, f"the session ({failure})")
        measured = ("offered_msgs_s", "received_msgs_s", "recv_ratio", "cpu_us_per_msg", "cpu_frac", "pg_cpu_frac",
                    "lat_p50_ms", "lat_p99_ms", "copies_s", "cpu_us_per_row", "peak_rss_mb", "peak_pss_mb",
                    "rows_per_s", "trades_sent", "trades_received_logged", "exit_code", "span_ratio", "kept_logged")
        return {"who": "ours", "rate": rate, "workers": workers, "mode": mode, **dict.fromkeys(measured),
                "per_process": {}, "windows": [], "exact": None, "sustained": False, "error": failure,
                "logs": str(tmp)}
    span_s = (span[1] - span[0]) / 1000
    per_proc: dict[str, dict] = {}
    for pid, p in sampler.procs.items():
        name = common.label(p.name)
        per_proc[f"{name} ({pid})"] = {
            "cpu_us_per_msg": common.median([r["cpu_by_pid"].get(pid, 0) / r["received_n"] * 1e6
                                             for r in results if r["received_n"]]),
            "wakeups_s": common.median([r["wakeups_s_by_pid"][pid] for r in results if pid in r["wakeups_s_by_pid"]]),
            "peak_rss_mb": round(p.peak_rss_kb / 1024, 1), "peak_pss_mb": round(p.peak_pss_kb / 1024, 1)}
    verdict = exact_verdict(db_rows["trades"], sum(kept.values()), received.get("trades", 0) if received else -1,
                            totals.get("aggTrade", 0), keep_all, common.median([r["lat_p99_ms"] for r in results]))
    for r in results:
        r.pop("cpu_by_pid")
        r.pop("wakeups_s_by_pid")
    sustained = verdict["sustained"] and exit_code == 0
    common.leave_session_dir(tmp, sustained, "the session")
    return {
        "who": "ours", "rate": rate, "workers": workers, "mode": mode,
        "offered_msgs_s": common.median([r["offered"] for r in results]),
        "received_msgs_s": common.median([r["received"] for r in results]),
        "recv_ratio": common.median([r["ratio"] for r in results]),
        "cpu_us_per_msg": common.median([r["cpu_us_per_msg"] for r in results]),
        "cpu_frac": common.median([r["cpu_frac"] for r in results]),
        "pg_cpu_frac": common.median([r["pg_cpu_frac"] for r in results]),
        "lat_p50_ms": common.median([r["lat_p50_ms"] for r in results]),
        "lat_p99_ms": common.median([r["lat_p99_ms"] for r in results]),
        "copies_s": common.median([r["copies_s"] for r in results]),
        "cpu_us_per_row": common.median([r["cpu_us_per_row"] for r in results]),
        "peak_rss_mb": round(sum(p.peak_rss_kb for p in sampler.procs.values()) / 1024, 1),
        "peak_pss_mb": round(sum(p.peak_pss_kb for p in sampler.procs.values()) / 1024, 1),
        "rows_per_s": {t: round(n / span_s, 1) for t, n in rows.items()},
        "trades_sent": totals.get("aggTrade"), "trades_received_logged": received.get("trades"),
        "exit_code": exit_code, "per_process": per_proc, "windows": results,
        "span_ratio": span_ratio, "kept_logged": kept, "exact": verdict,
        "sustained": sustained, "logs": None if sustained else str(tmp),
    }


def resumed_tiers(log_dir: Path, symbols: int) -> bool:
    """Whether the supervisor's log says it started on `symbols` stored tiers (collector.runtime's wording)."""
    return f"resumed the tiers of {symbols} symbols" in (log_dir / "supervisor.log").read_text(errors="replace")


def stable(value: object, period: float) -> bool:
    """True when value() reads the same twice, `period` s apart: a drain/commit has come to rest."""
    a = value()  # type: ignore[operator]
    time.sleep(period)
    return a == value()  # type: ignore[operator]


def _last_commit(dsn: str) -> object:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT max(committed_at), count(*) FROM trades").fetchone()


def _window(rest: str, sampler: common.TreeSampler, postmaster: int, window_s: float, offset: float,
            port: int) -> dict:
    s0, r0, c0, p0 = common.sent_totals(rest), workers_received(port), sampler.cpu_now(), common.tree_cpu(postmaster)
    w0 = _wakeups(c0)
    time.sleep(window_s)
    s1, r1, c1, p1 = common.sent_totals(rest), workers_received(port), sampler.cpu_now(), common.tree_cpu(postmaster)
    w1 = _wakeups(c1)
    dt = s1.wall - s0.wall
    sent = s1.frames - s0.frames
    got = r1 - r0
    ratio = got / sent if sent else None
    cpu_by_pid = {pid: c1[pid] - c0.get(pid, 0.0) for pid in c1}
    cpu = sum(cpu_by_pid.values())
    return {"offered": sent / dt, "received": got / dt, "received_n": got, "ratio": ratio, "dt": dt,
            "cpu_us_per_msg": cpu / got * 1e6 if got else None, "cpu_frac": cpu / dt,
            "pg_cpu_frac": common.cpu_delta(p0, p1) / dt, "cpu_by_pid": cpu_by_pid,
            "wakeups_s_by_pid": {pid: (w1[pid] - w0[pid]) / dt for pid in w1 if pid in w0},
            "t0_sim": s0.wall * 1000 - offset, "t1_sim": s1.wall * 1000 - offset, "t0_wall": s0.wall}


def _wakeups(pids: dict[int, float]) -> dict[int, int]:
    """common.wakeups of each process still there."""
    out = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            out[pid] = common.wakeups(pid)
    return out


COLS = [("mode", "mode"), ("workers", "N"), ("rate", "aggTrades/s"), ("offered_msgs_s", "offered msg/s"),
        ("received_msgs_s", "recv msg/s"), ("recv_ratio", "recv/off"), ("cpu_us_per_msg", "CPU us/msg"),
        ("cpu_frac", "CPU cores"), ("pg_cpu_frac", "PG cores"), ("lat_p50_ms", "p50 ms"), ("lat_p99_ms", "p99 ms"),
        ("copies_s", "COPY/s"), ("cpu_us_per_row", "CPU us/row"), ("peak_rss_mb", "RSS MB"), ("peak_pss_mb", "PSS MB"), ("sustained", "sustained")]


def best_rate(rows: list[dict]) -> float | None:
    ok = [r["rate"] for r in rows if r["sustained"]]
    return max(ok) if ok else None


# The peer each collector mode is compared with: filtered against the peer running the same rules in its
# callbacks, keep_all against stock cryptofeed (which stores everything, as keep_all does).
PEER_FOR_MODE = {"filtered": "filtered", "keep_all": "stock"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rates", type=float, nargs="+", default=DEFAULT_RATES, help="offered aggTrades/s")
    p.add_argument("--workers", type=int, default=DEFAULT_N, help="N for the rate ladder")
    p.add_argument("--scaling", type=int, nargs="*", default=SCALING_N, help="N values run at --scaling-rate")
    p.add_argument("--scaling-rate", type=float, default=SCALING_RATE)
    p.add_argument("--modes", nargs="+", default=["filtered", "keep_all"], choices=["filtered", "keep_all"])
    p.add_argument("--no-peer", action="store_true", help="skip the cryptofeed peer")
    p.add_argument("--server", nargs="+", default=["fast"], choices=list(common.SERVERS),
                   help="PostgreSQL server(s): the whole matrix runs once per server (default: fast)")
    p.add_argument("--runs", type=int, default=3, help="measurement windows per session (medians)")
    p.add_argument("--window", type=float, default=WINDOW_S)
    p.add_argument("--warmup", type=float, default=WARMUP_S)
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--src", default=None, help="run the product from this directory (default: a snapshot of HEAD)")
    p.add_argument("--quick", action="store_true", help="smoke: N=2, 10,000 aggTrades/s, filtered + peer, 1 window")
    p.add_argument("--stored-tiers", type=float, nargs="?", const=STORED_TIERS_S, default=None, metavar="SECONDS",
                   help="start every session on the tiers a preparation session stored after SECONDS of live "
                        f"statistics (default {STORED_TIERS_S:g}: the shipped warm-up), as a restart does; the "
                        "filtered peer gets the same tiers (see the module doc)")
    a = p.parse_args()
    common.stop_on_signals()
    if a.quick:
        a.rates, a.scaling, a.modes, a.runs = [10000.0], [], ["filtered"], 1
    if a.stored_tiers is not None and not a.stored_tiers > 0:
        p.error(f"--stored-tiers must be > 0 seconds of statistics, got {a.stored_tiers:g}")
    t_start = time.monotonic()
    ours: list[dict] = []
    peers: list[dict] = []
    with common.product_source(a.src) as (src, what), tempfile.TemporaryDirectory(prefix="bench-tiers-") as tiers_dir:
        for server in a.server:
            with common.throwaway_postgres(server) as admin:
                print(f"product: {what}; server: {common.SERVERS[server]}; "
                      + (f"every session on tiers stored after {a.stored_tiers:g} s of live statistics"
                         if a.stored_tiers else "every session inside the fresh start's tier warm-up"), flush=True)
                tiers, tiers_file = None, ""
                if a.stored_tiers is not None:
                    tiers = prepare_tiers(admin, src, a.symbols, a.stored_tiers)
                    tiers_file = str(write_tiers(tiers, tiers_dir))
                for mode in a.modes:
                    for rate in a.rates:
                        ours.append(run_ours(admin, src, rate, a.workers, mode == "keep_all", a.runs, a.window,
                                             a.warmup, a.symbols, tiers) | {"server": server})
                        common.print_table(ours[-1:], COLS)
                for n in a.scaling:
                    if n == a.workers and "filtered" in a.modes and a.scaling_rate in a.rates:
                        continue  # already measured in the ladder
                    ours.append(run_ours(admin, src, a.scaling_rate, n, False, a.runs, a.window, a.warmup,
                                         a.symbols, tiers) | {"server": server})
                    common.print_table(ours[-1:], COLS)
                if not a.no_peer:
                    for variant in sorted({PEER_FOR_MODE[m] for m in a.modes}):
                        for rate in a.rates:
                            peers.append(run_peer(admin, rate, a.runs, a.window, a.warmup, a.symbols, variant,
                                                  tiers_file if variant == "filtered" else "")
                                         | {"server": server})
                            common.print_table(peers[-1:], PEER_COLS)
        for server in a.server:
            print(f"\n{common.conditions(sys.argv, what, server)}")
            report([r for r in ours if r["server"] == server], [r for r in peers if r["server"] == server], a)
        name = "throughput-quick" if a.quick else "throughput"
        path = common.write_results(name, {"command": " ".join(sys.argv), "product": what, "ours": ours,
                                           "peer": peers, "stored_tiers_s": a.stored_tiers,
                                           "elapsed_s": round(time.monotonic() - t_start)})
    print(f"\nwrote {path} ({time.monotonic() - t_start:.0f} s)")


def prepare_tiers(admin: str, src: Path, symbols: int, statistics_s: float) -> dict[str, TierRow]:
    """--stored-tiers' preparation: the tiers the shipped configuration (bench.shipped: `--workers 8` at the real
    market's rate) stores after `statistics_s` of live statistics, as its first start does. One preparation
    serves every rate: the simulator scales every symbol's trade rate alike (the same seed), so its activity
    ranking and trade sizes, hence the tiers, are those of any rate."""
    from bench import shipped  # here, not at the top: bench.shipped imports this module

    t0 = time.monotonic()
    tiers = shipped.first_live_tiers(admin, src, shipped.RATE, shipped.WORKERS, symbols, statistics_s)
    counts = sorted(Counter(t.tier for t in tiers.values()).items())
    print(f"  stored tiers: {len(tiers)} symbols from {statistics_s:g} s of live statistics at "
          f"{shipped.RATE:,.0f} aggTrades/s, --workers {shipped.WORKERS} ({', '.join(f'tier {t}: {n}' for t, n in counts)};"
          f" preparation {time.monotonic() - t0:.0f} s)", flush=True)
    return tiers


def report(ours: list[dict], peers: list[dict], a: argparse.Namespace) -> None:
    state = (f"every session on tiers stored after {a.stored_tiers:g} s of live statistics" if a.stored_tiers
             else "every session inside the fresh start's tier warm-up")
    common.print_table(ours, COLS, f"collector (supervisor + writer + workers), medians over {a.runs} window(s)"
                       f" of {a.window:.0f} s after {a.warmup:.0f} s warm-up; {state}")
    for r in ours:
        e = r["exact"]
        if e is None:
            print(f"  {r['mode']} N={r['workers']} rate {r['rate']:,.0f}: session failed ({r['error']}); "
                  f"logs in {r['logs']}")
            continue
        print(f"  {r['mode']} N={r['workers']} rate {r['rate']:,.0f}: rows/s {r['rows_per_s']}; exact count "
              f"{e['checks']} (trades rows {e['db_trades']}, kept {e['kept_trades']}, received "
              f"{e['received_trades']}, sent {e['sent_trades']}); exit {r['exit_code']}")
    procs = [{"run": f"{r['mode']} N={r['workers']} {r['rate']:,.0f}", "proc": k, **v}
             for r in ours for k, v in r["per_process"].items()]
    common.print_table(procs, [("run", "session"), ("proc", "process"), ("cpu_us_per_msg", "CPU us/msg"),
                               ("wakeups_s", "wake-ups/s"), ("peak_rss_mb", "peak RSS MB"),
                               ("peak_pss_mb", "peak PSS MB")], "per process (wake-ups: voluntary context switches)")
    if peers:
        common.print_table(peers, PEER_COLS, "peer (cryptofeed + its Postgres backends), medians over windows")
        for r in peers:
            e = r["exact"]
            print(f"  peer {r['variant']} rate {r['rate']:,.0f}: exact count {e['checks']} (trades rows "
                  f"{e['db_trades']}, kept {e['kept_trades']}, received {e['received_trades']}, sent "
                  f"{e['sent_trades']}); dropped by its backends {r['dropped']}")
        ratios = []
        for rate in a.rates:
            row: dict = {"rate": rate}
            for mode in a.modes:
                mine = next((r for r in ours if r["rate"] == rate and r["mode"] == mode
                             and r["workers"] == a.workers), None)
                theirs = next((r for r in peers if r["rate"] == rate and r["variant"] == PEER_FOR_MODE[mode]), None)
                if mine and theirs and mine["cpu_us_per_msg"] and theirs["cpu_us_per_msg"]:
                    row[mode] = theirs["cpu_us_per_msg"] / mine["cpu_us_per_msg"]
                    # with PostgreSQL's CPU: what the whole machine spends per message on each side
                    both_ours = (mine["cpu_frac"] + (mine["pg_cpu_frac"] or 0)) / max(mine["received_msgs_s"], 1)
                    both_theirs = (theirs["cpu_frac"] + (theirs["pg_cpu_frac"] or 0)) / max(theirs["received_msgs_s"], 1)
                    row[f"{mode}_pg"] = both_theirs / both_ours
                    row[f"{mode}_ok"] = "both" if mine["sustained"] and theirs["sustained"] else "NOT both"
            ratios.append(row)
        cols = [("rate", "aggTrades/s")]
        for mode in a.modes:
            cols += [(mode, f"{mode} vs {PEER_FOR_MODE[mode]} peer"), (f"{mode}_pg", "incl. PG"),
                     (f"{mode}_ok", "sustained")]
        common.print_table(ratios, cols, f"CPU per message, peer / ours (N={a.workers}); a ratio where either side"
                           " was not sustained compares unequal work")
    for mode in a.modes:
        mine = best_rate([r for r in ours if r["mode"] == mode and r["workers"] == a.workers])
        theirs = best_rate([r for r in peers if r["variant"] == PEER_FOR_MODE[mode]]) if peers else None
        ratio = f"{mine / theirs:.2f}" if mine and theirs else "-"
        print(f"  highest sustained rate ({mode}, N={a.workers}): ours {mine}, peer {PEER_FOR_MODE[mode]} {theirs},"
              f" ours/peer {ratio}")
    print(f"  targets: >= {TARGET_RATE:,} msgs/s with p99 < {TARGET_P99_MS} ms; <= {TARGET_US_PER_MSG} us/msg "
          f"filtered; >= {TARGET_PEER_RATIO}x less CPU/msg than the peer; PSS (N=8) <= {TARGET_PSS_MB} MB")


if __name__ == "__main__":
    main()

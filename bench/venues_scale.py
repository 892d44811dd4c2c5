#!/usr/bin/env python3
"""Issue 14's scale target: all three venues at their real sizes on 8 workers, the database against each
simulator's ground truth, per venue and per table.

One session: a throwaway PostgreSQL, `supervisor.py --workers 8 --simulate` with collection.exchanges
[binance, okx, bybit] (the supervisor starts one simulator per venue: binance 496, okx 250, bybit 400
perpetuals unless --symbols says otherwise), for --duration wall seconds at --speed sim seconds per wall
second (10 closes a 1m candle every 6 s). Then every simulator is paused, the writer drains, each
simulator's /_sim/truth is read and the supervisor stopped; the tables are compared with the truth:

- trades (keep_all, so every trade is comparable): Binance's stored aggTrade ids per symbol are one unbroken
  run ending at the last id the simulator sent (ids before a symbol's subscription are not the collector's to
  have); OKX's and Bybit's, whose ids are not one run, equal every trade the simulator sent from the
  symbol's first stored one on (the simulators keep them: `--sim-truth-trades`; OKX rows with their first fill);
- candles_1m: every 1m kline the simulator closed from a symbol's first stored minute on, stored once, with
  the same close and volume (base units: OKX's `volCcy`);
- liquidations: every one the simulator generated from the symbol's first stored trade on (before it the
  worker may not have subscribed yet; the market generates liquidations whether anyone listens or not), as
  (symbol, time) with multiplicity;
- funding: one row in every minute (calendar buckets) from the symbol's first stored minute to the pause:
  every venue pushes the mark price every 1-3 s (Binance markPrice, OKX mark-price merged with the last
  funding-rate, Bybit tickers deltas merged into its snapshot); OKX and Bybit rows also carry the funding rate
  of the venue's last funding push at or before the row's time (the truth records every push);
- open_interest: OKX/Bybit push it (OKX open-interest every 3 s, Bybit inside tickers): one row in every
  window of `filters.open_interest.interval_s` (sim time), whose value (base units) is the one last pushed
  (Bybit's deltas carry open interest only when it changed); Binance is polled over REST every
  0.8 x interval *wall* seconds, the first poll of each symbol spread over the first period, so its check
  is polls stored per symbol against whole periods in the run.

A table of symbols with rows / symbols listed and stored / expected per venue and table; exit 1 if any
differs. `--src` as the other scripts (default: a snapshot of HEAD).
"""

from __future__ import annotations

import argparse
import bisect
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import common
import psycopg
import yaml

from collector.db.embedded import free_port
from collector.feed.venues.bybit import trade_id_of

VENUES = ("binance", "okx", "bybit")
BOOT_TIMEOUT_S = 240
STOP_TIMEOUT_S = 120


def db_rows(dsn: str, sql: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def stable(read: Any, quiet_s: float) -> bool:
    a = read()
    time.sleep(quiet_s)
    return bool(read() == a)


# --- the comparisons (pure: truth documents and database rows in, result rows out) ---------------------------

def check_trades(venue: str, truth: dict, stored: dict[str, list[tuple[int, int | None]]]) -> dict[str, Any]:
    """stored: symbol -> [(trade_id, first_trade_id)]. Binance: a symbol is right when its aggTrade ids are one
    run ending at the simulator's last id. OKX and Bybit ids are not one run (an OKX row is a push of `count`
    fills, tradeId the last; a Bybit id comes from the fill's UUID), so they are compared with every trade the
    simulator sent (`--sim-truth-trades`): from the symbol's first stored trade on, each sent once (OKX: with
    its first fill id, tradeId - count + 1), and nothing else."""
    sent_symbols = {s for s, v in truth["symbols"].items() if (v["aggTrade"] if venue == "binance" else v["trades"])}
    if venue == "binance":
        last = {s: v["agg_ids"]["last"] for s, v in truth["symbols"].items()}
        bad = [s for s, rows in stored.items()
               if not (len(rows) == max(r[0] for r in rows) - min(r[0] for r in rows) + 1
                       and max(r[0] for r in rows) == last.get(s))]
    else:
        sent: dict[str, list[tuple[int, int | None]]] = {}
        for r in truth["trades"]:
            if venue == "okx":
                tid = int(r["tradeId"])
                sent.setdefault(r["instId"], []).append((tid, tid - int(r["count"]) + 1))
            else:
                sent.setdefault(r["s"], []).append((trade_id_of(r["i"]), None))
        bad = []
        for s, rows in stored.items():
            have = [(t, f if venue == "okx" else None) for t, f in rows]
            order = {t: i for i, (t, _) in enumerate(sent.get(s, []))}
            start = min((order[t] for t, _ in have if t in order), default=None)
            if start is None or sorted(have) != sorted(sent[s][start:]):
                bad.append(s)
    return {"table": "trades", "symbols": len(stored), "expected_symbols": len(sent_symbols),
            "stored": sum(len(r) for r in stored.values()), "expected": None, "wrong_symbols": sorted(bad)}


def _kline_key(venue: str, k: dict) -> tuple[str, int, Decimal, Decimal]:
    """(symbol, open time ms, close, base volume) of a closed 1m kline as the venue's truth records it."""
    if venue == "binance":
        return k["s"], int(k["t"]), Decimal(k["c"]), Decimal(k["v"])
    if venue == "okx":
        c = k["candle"]  # [ts, o, h, l, c, vol (contracts), volCcy (base), volCcyQuote, confirm]
        return k["instId"], int(c[0]), Decimal(c[4]), Decimal(c[6])
    return k["symbol"], int(k["start"]), Decimal(k["close"]), Decimal(k["volume"])


def check_candles(venue: str, truth: dict, stored: list[tuple[str, int, Decimal, Decimal]]) -> dict[str, Any]:
    closed = [_kline_key(venue, k) for k in truth["klines"] if venue != "binance" or k["i"] == "1m"]
    first: dict[str, int] = {}
    for sym, t, _, _ in stored:
        first[sym] = min(t, first.get(sym, t))
    want = Counter(k for k in closed if k[0] in first and k[1] >= first[k[0]])
    have = Counter(stored)
    return {"table": "candles_1m", "symbols": len(first), "expected_symbols": len({k[0] for k in closed}),
            "stored": sum(have.values()), "expected": sum(want.values()),
            "wrong_symbols": sorted({k[0] for k in (want - have) + (have - want)})}


def _liq_key(venue: str, liq: dict) -> tuple[str, int]:
    if venue == "binance":
        return liq["s"], int(liq["T"])
    if venue == "okx":
        return liq["instId"], int(liq["ts"])
    return liq["s"], int(liq["T"])


def check_liquidations(venue: str, truth: dict, stored: list[tuple[str, int]],
                       since: dict[str, int]) -> dict[str, Any]:
    """since: each symbol's first stored trade time (ms); a symbol with none is not judged."""
    def judged(k: tuple[str, int]) -> bool:
        return k[0] in since and k[1] >= since[k[0]]
    want = Counter(k for k in (_liq_key(venue, x) for x in truth["liquidations"]) if judged(k))
    have = Counter(k for k in stored if judged(k))
    return {"table": "liquidations", "symbols": len({s for s, _ in have}),
            "expected_symbols": len({s for s, _ in want}), "stored": sum(have.values()),
            "expected": sum(want.values()), "wrong_symbols": sorted({s for s, _ in (want - have) + (have - want)})}


def _last_pushed(pushed: dict[str, list[tuple[int, Decimal]]], sym: str, t: int,
                 before: bool = False) -> Decimal | None:
    """The value of the venue's last push for `sym` at or before t (strictly before with `before`); pushes are
    sorted by time (check_funding, check_open_interest)."""
    times = [ts for ts, _ in pushed.get(sym, ())]
    i = (bisect.bisect_left if before else bisect.bisect_right)(times, t)
    return pushed[sym][i - 1][1] if i else None


def _windows(stored: list[tuple[str, int, Decimal | None]], until_ms: int, size_ms: int, table: str, listed: int,
             pushed: dict[str, list[tuple[int, Decimal]]] | None = None) -> dict[str, Any]:
    """One row per (symbol, window) from the symbol's first stored window to the last whole window before the
    pause; with `pushed`, each row's value equal to the last pushed value at or before its time."""
    have = Counter((s, t // size_ms) for s, t, _ in stored)
    first: dict[str, int] = {}
    for s, w in have:
        first[s] = min(w, first.get(s, w))
    end = until_ms // size_ms  # the window of the pause: partly pushed, not judged
    want: set[tuple[str, int]] = set()
    for s, w0 in first.items():
        want.update((s, w) for w in range(w0, end))
    judged = Counter({k: n for k, n in have.items() if k[1] < end})
    wrong = {s for s, _ in set(want) ^ set(judged)} | {s for (s, _), n in judged.items() if n > 1}
    values, examples = 0, []
    if pushed is not None:
        for s, t, v in stored:
            # the truth keeps the last VALUE_HISTORY pushes per symbol: older rows cannot be judged
            if t // size_ms < end and pushed.get(s) and t >= pushed[s][0][0]:
                values += 1
                # the value of the last push before the row, or of one in the same millisecond (OKX sends
                # mark-price and funding-rate with one timestamp: which was first is not in the truth);
                # NULL only while nothing was pushed before (OKX's first funding-rate comes up to a minute
                # after the first mark price)
                if v not in (_last_pushed(pushed, s, t), _last_pushed(pushed, s, t, before=True)):
                    wrong.add(s)
                    if len(examples) < 5:
                        examples.append([s, t, str(v), str(_last_pushed(pushed, s, t)),
                                         [[ts, str(x)] for ts, x in pushed.get(s, [])[:4]]])
    return {"table": table, "symbols": len(first), "expected_symbols": listed,
            "stored": sum(judged.values()), "expected": len(want), "values_checked": values,
            "wrong_symbols": sorted(wrong), "examples": examples}


def check_funding(venue: str, truth: dict, stored: list[tuple[str, int, Decimal | None]],
                  until_ms: int) -> dict[str, Any]:
    # sorted by time, stably: the Bybit simulator can send a delta stamped before the snapshot a subscription
    # just got (seen once in a 1,146-symbol run)
    pushed = None if venue == "binance" else {s: sorted(((int(r["ts"]), Decimal(r["fundingRate"])) for r in recs),
                                                        key=lambda p: p[0]) for s, recs in truth["funding"].items()}
    return _windows(stored, until_ms, 60_000, "funding", len(truth["symbols"]), pushed)


def check_open_interest(venue: str, truth: dict, stored: list[tuple[str, int, Decimal | None]], until_ms: int,
                        interval_s: float, polls_due: int) -> dict[str, Any]:
    listed = len(truth["symbols"])
    if venue != "binance":
        field = "oiCcy" if venue == "okx" else "openInterest"  # base units
        pushed = {s: sorted(((int(r["ts"]), Decimal(r[field])) for r in recs), key=lambda p: p[0])
                  for s, recs in truth["open_interest"].items()}
        return _windows(stored, until_ms, int(interval_s * 1000), "open_interest", listed, pushed)
    per = Counter(s for s, _, _ in stored)
    return {"table": "open_interest", "symbols": len(per), "expected_symbols": listed, "stored": len(stored),
            "expected": None, "wrong_symbols": sorted(s for s, n in per.items() if n < polls_due),
            "note": f">= {polls_due} REST polls each"}


# --- the session ---------------------------------------------------------------------------------------------

def write_config(tmp: Path, dsn: str, port: int, oi_interval_s: float) -> Path:
    cfg = {"database": {"url": dsn, "mode": "postgres"},
           "collection": {"exchanges": list(VENUES)},
           "filters": {"trades": {"keep_all": True}, "open_interest": {"interval_s": oi_interval_s}},
           "logging": {"filename": str(tmp / "logs" / "supervisor.log")},
           "writer": {"spool_dir": str(tmp / "spool")},
           "monitoring": {"health_check_port": port}}
    path = tmp / "main.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def simulator_urls(log: Path) -> dict[str, str]:
    """Each venue's simulator REST URL, from the supervisor's log ("okx simulator on http://...")."""
    text = log.read_text() if log.exists() else ""
    return {m.group(1) or "binance": m.group(2)
            for m in re.finditer(r"(?:(okx|bybit) )?simulator on (http://[0-9.:]+)", text)}


def compare(dsn: str, truths: dict[str, dict], oi_interval_s: float, polls_due: int) -> list[dict[str, Any]]:
    out = []
    for venue, truth in truths.items():
        until = int(truth["sim_ms"])
        v = f"venue = '{venue}'"
        trades: dict[str, list[tuple[int, int | None]]] = {}
        for s, tid, first in db_rows(dsn, f"SELECT symbol, trade_id, first_trade_id FROM trades WHERE {v}"):  # noqa: S608
            trades.setdefault(s, []).append((tid, first))
        ms = "(extract(epoch FROM time) * 1000)::bigint"
        candles = [(s, t, c, vol) for s, t, c, vol in db_rows(
            dsn, f"SELECT symbol, {ms}, close, volume FROM candles_1m WHERE {v}")]  # noqa: S608
        liqs = [(s, t) for s, t in db_rows(dsn, f"SELECT symbol, {ms} FROM liquidations WHERE {v}")]  # noqa: S608
        since = dict(db_rows(dsn, f"SELECT symbol, min({ms}) FROM trades WHERE {v} GROUP BY 1"))  # noqa: S608
        funding = db_rows(dsn, f"SELECT symbol, {ms}, funding_rate FROM funding WHERE {v}")  # noqa: S608
        oi = db_rows(dsn, f"SELECT symbol, {ms}, open_interest FROM open_interest WHERE {v}")  # noqa: S608
        for row in (check_trades(venue, truth, trades), check_candles(venue, truth, candles),
                    check_liquidations(venue, truth, liqs, since), check_funding(venue, truth, funding, until),
                    check_open_interest(venue, truth, oi, until, oi_interval_s, polls_due)):
            out.append({"venue": venue, **row})
    return out


def session(args: argparse.Namespace, src: Path, admin: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    dsn = common.new_database(admin, "scale")
    tmp = Path(tempfile.mkdtemp(prefix="bench-venues-scale-"))  # kept on failure: the logs say why
    log = tmp / "logs" / "supervisor.log"
    port = free_port()
    cfg = write_config(tmp, dsn, port, args.oi_interval)
    cmd = [sys.executable, str(src / "supervisor.py"), "--workers", str(args.workers), "--simulate",
           "--config", str(cfg), "--sim-speed", str(args.speed), "--sim-rate", args.rate, "--sim-truth-trades"]
    cmd += ["--sim-symbols", args.symbols] if args.symbols else []
    sup = subprocess.Popen(cmd, cwd=tmp, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                           start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(src)))
    info: dict[str, Any] = {"log_dir": str(tmp / "logs")}
    try:
        common.wait_for(lambda: len(simulator_urls(log)) == len(VENUES), BOOT_TIMEOUT_S, "three simulators")
        urls = simulator_urls(log)

        def connected() -> bool:
            try:
                stats = common.http_json(f"http://127.0.0.1:{port}/stats")
            except OSError:  # the health server starts after the simulators
                return False
            return sum(1 for w in stats["workers"] if w["received"].get("trades", 0)) >= args.workers  # type: ignore[index]
        common.wait_for(connected, BOOT_TIMEOUT_S, "every worker receiving trades")
        t0 = time.monotonic()
        load0 = os.getloadavg()
        time.sleep(args.duration)
        info.update(wall_s=round(time.monotonic() - t0, 1), load_before=load0, load_after=os.getloadavg())
        for url in urls.values():
            common.http_json(url + "/_sim/pause")
        last = "SELECT (SELECT count(*) FROM trades) + (SELECT count(*) FROM candles_1m) + (SELECT count(*) FROM funding)"
        common.wait_for(lambda: stable(lambda: db_rows(dsn, last), 3.0), 120, "the writer to drain")
        truths = {v: common.http_json(urls[v] + "/_sim/truth") for v in VENUES}
        info["symbols"] = {v: len(t["symbols"]) for v, t in truths.items()}  # type: ignore[index]
        info["closed_conns"] = {v: sum(1 for c in t["connections"] if c["closed"])  # type: ignore[index]
                                for v, t in truths.items()}
        sup.send_signal(signal.SIGTERM)
        info["exit_code"] = sup.wait(STOP_TIMEOUT_S)
        polls_due = int(info["wall_s"] // (0.8 * args.oi_interval))
        rows = compare(dsn, truths, args.oi_interval, polls_due)  # type: ignore[arg-type]
        common.leave_session_dir(tmp, info["exit_code"] == 0, "the session")
        return rows, info
    except BaseException:  # interrupted or failed: the directory is kept (its logs say why) and named
        common.leave_session_dir(tmp, False, "the session")
        raise
    finally:
        common.end_supervisor(sup)
        common.drop_database(admin, dsn)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=float, default=240, help="wall seconds collected (default %(default)s)")
    p.add_argument("--speed", type=float, default=10, help="sim seconds per wall second (default %(default)s)")
    p.add_argument("--rate", default="60", help="aggTrades/s of sim time per venue, --sim-rate syntax (default %(default)s)")
    p.add_argument("--symbols", default="", help="--sim-symbols value (default: the real sizes 496/250/400)")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--oi-interval", type=float, default=300, help="filters.open_interest.interval_s")
    p.add_argument("--server", default="fast", choices=sorted(common.SERVERS))
    p.add_argument("--src", default=None, help="product tree (default: a snapshot of HEAD)")
    args = p.parse_args()
    common.stop_on_signals()
    with common.product_source(args.src) as (src, product), common.throwaway_postgres(args.server) as admin:
        rows, info = session(args, src, admin)
    print(common.conditions(sys.argv, product, common.SERVERS[args.server]))
    print(f"wall {info['wall_s']} s at speed {args.speed}; symbols {info['symbols']}; load average "
          f"{info['load_before'][0]:.1f} -> {info['load_after'][0]:.1f}; supervisor exit {info['exit_code']}; "
          f"connections closed by the simulators {info['closed_conns']}")
    table = [{**r, "ok": "yes" if not r["wrong_symbols"] and r["symbols"] == r["expected_symbols"] else "NO",
              "wrong": ", ".join(r["wrong_symbols"][:4]) + (" ..." if len(r["wrong_symbols"]) > 4 else "")}
             for r in rows]
    common.print_table(table, [("venue", "venue"), ("table", "table"), ("symbols", "symbols with rows"),
                               ("expected_symbols", "symbols expected"), ("stored", "stored"),
                               ("expected", "expected"), ("values_checked", "values checked"), ("ok", "equal"), ("wrong", "symbols that differ")])
    out = common.write_results("venues-scale", {"info": info, "rows": rows, "args": vars(args), "product": product})
    print(f"results: {out}")
    for r in rows:
        if r.get("examples"):
            print(f"{r['venue']} {r['table']}: stored vs last pushed, e.g. {r['examples'][:2]}")
    return 0 if all(r["ok"] == "yes" for r in table) and info["exit_code"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The rig for the OKX and Bybit fault scenarios (tests/faults/test_venue_*.py): `supervisor.py` with
collection.exchanges [okx, bybit] against one simulator per venue, and the verdict against each simulator's
ground truth, value by value.

Why its own rig: test_gaps.Collector and conftest.WriterFaultRig drive Binance's simulator and compare with
Binance's truth (aggTrade ids, backfills). The venues' truth documents differ (OKX instId/tradeId/count,
Bybit s/i) and so do their ids (collector.pipeline.router.TRADE_ID_RULES): an OKX push covers its `count`
fills, tradeId the last, and a gap in fill ids is repaired one row per fill over REST; Bybit's trades have no
ordered id, so nothing finds a missed one. The verdict here: a row is stored exactly once and equal to what
the venue sent (a repaired OKX push: its REST fills joined, equal to the push), or it lies in a
gap row not filled yet (OKX trades, candles) or in the outage the scenario caused (Bybit trades,
liquidations and funding, which no gap row covers).
"""

from __future__ import annotations

import os
import re
import signal
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil
import psycopg
from helpers import SupervisorProcess, http_get, wait_for, write_config

from collector.db.embedded import free_port
from collector.feed.venue_universe import fetch_venue_universe
from collector.feed.venues.bybit import trade_id_of
from collector.pipeline.funding_rates import RATE_STALE_MS
from exchange_sim import SimConfig, launch_subprocess

VENUES = ("okx", "bybit")
# Few symbols at speed 20 (a sim minute every 3 wall seconds): 1m candles close often, and every scenario
# stays well under 90 s of wall time on a shared machine.
VENUE_SYMBOLS = 4
VENUE_SPEED = 20
VENUE_RATE = 30  # trades per sim second across a venue's market
# The successor flushes a batch at most this many sim ms after an event: rows of events this close to the
# kill may or may not have been committed by the victim (20 sim s = 1 wall second at speed 20).
FLUSH_SLACK_MS = 20_000


def _gap_overlaps(gaps: list[tuple[str, int, int]], have: set[tuple[str, int]], step: int = 1) -> list[str]:
    """A gap row may start with rows the killed worker had committed but the writer not yet acknowledged (the
    successor resumes from the acknowledged checkpoint, collector.runtime.checkpoints): stored rows inside a
    gap row must be such a prefix, every one of them before every row of it that is missing."""
    out = []
    for sym, lo, hi in gaps:
        inside = range(lo, hi + 1, step)
        stored = [i for i in inside if (sym, i) in have]
        missing = [i for i in inside if (sym, i) not in have]
        if stored and missing and max(stored) > min(missing):
            out.append(f"gap row {sym} {lo}..{hi}: stored {stored[:5]}.. after missing {missing[:5]}..")
    return out




class VenueRig:
    """One simulator per venue + `supervisor.py` (a child) + the test's database, torn down together."""

    def __init__(self, tmp_path: Path, db_url: str, workers: int = 2, seed: int = 21,
                 funding_period_ms: int = SimConfig.funding_period_ms, **config: dict) -> None:
        self.db_url, self.tmp_path, self.workers = db_url, tmp_path, workers
        self.logs = tmp_path / "logs"
        self.sims: dict[str, Any] = {}
        self.sup: SupervisorProcess | None = None
        self._stopped: tuple[int, str] | None = None
        self.health_url = f"http://127.0.0.1:{free_port()}"
        try:
            for i, venue in enumerate(VENUES):
                self.sims[venue] = launch_subprocess(SimConfig(
                    venue=venue, port=0, symbols=VENUE_SYMBOLS, rate=VENUE_RATE, speed=VENUE_SPEED, seed=seed + i,
                    truth_trades=True, funding_period_ms=funding_period_ms))
            sections: dict[str, dict] = {
                "database": {"url": db_url},
                "collection": {"exchanges": list(VENUES)},
                "exchange": {v: {"rest_url": s.rest_url, "ws_url": s.ws_url} for v, s in self.sims.items()},
                "logging": {"filename": str(self.logs / "supervisor.log")},
                "writer": {"spool_dir": str(tmp_path / "spool")},
                "monitoring": {"health_check_port": int(self.health_url.rsplit(":", 1)[1]), "stats_interval": 5},
                "filters": {"trades": {"keep_all": True}, "open_interest": {"interval_s": 60}},
            }
            for name, values in config.items():
                sections[name] = {**sections.get(name, {}), **values}
            self.config_path = write_config(tmp_path / "main.yaml", **sections)
            for venue in VENUES:
                self.control(venue, "pause")  # nothing is sent before the workers listen: the truth is all ours
            self.sup = SupervisorProcess("--workers", str(workers), "--config", str(self.config_path), cwd=tmp_path)
            for venue in VENUES:
                wait_for(lambda v=venue: self.subscribed(v), 60, f"the {venue} worker to subscribe")
            wait_for(lambda: self.query("SELECT to_regclass('gaps')")[0][0], 60, "the writer to create the schema")
            for venue in VENUES:
                self.control(venue, "resume")
        except BaseException:  # the caller never gets the object to stop: stop what was started here
            self.stop()
            raise

    # --- looking ------------------------------------------------------------------------------------------------

    def control(self, venue: str, cmd: str, **query: object) -> Any:
        q = "&".join(f"{k}={v}" for k, v in query.items())
        status, _, body = http_get(f"{self.sims[venue].rest_url}/_sim/{cmd}" + (f"?{q}" if q else ""))
        assert status == 200, body
        return body

    def truth(self, venue: str, klines: bool = False) -> dict:
        return self.control(venue, "truth", klines=int(klines))

    def live(self, venue: str) -> list[dict]:
        """The venue simulator's open connections that have subscribed to something."""
        return [c for c in self.truth(venue)["connections"] if not c["closed"] and c["streams"]]

    def subscribed(self, venue: str) -> bool:
        """Every socket of the venue's workers open and subscribed (OKX: public + business, Bybit: linear), the
        liquidation streams included: a worker subscribes in several messages, and every liquidation the
        simulator makes counts in its truth whether or not anyone listens (under load the rest of a
        subscription came after the market resumed, and the first liquidations reached nobody)."""
        live = self.live(venue)
        if len(live) != (2 if venue == "okx" else 1) * self.workers_of(venue):
            return False
        streams = [set(c["names"]) for c in self.control(venue, "conns", names=1) if not c["closed"] and c["streams"]]
        if venue == "okx":  # one subscription for every swap, on each worker's public socket
            return sum("liquidation-orders:SWAP" in s for s in streams) == self.workers_of(venue)
        every = set().union(*streams)
        return all(f"allLiquidation.{sym}" in every for sym, v in self.truth(venue)["symbols"].items() if v["trading"])

    def workers_of(self, venue: str) -> int:
        """How many workers the supervisor gave `venue` (its log: "okx: 4 symbols, 2 workers, bybit: ...")."""
        log = self.logs / "supervisor.log"
        found = re.search(rf"\b{venue}: \d+ symbols, (\d+) workers", log.read_text()) if log.exists() else None
        return int(found.group(1)) if found else 1 if self.workers == len(VENUES) else -1

    def query(self, sql: str, *params: object) -> list[tuple]:
        with psycopg.connect(self.db_url) as conn:
            return conn.execute(sql, params or None).fetchall()

    def count(self, table: str, venue: str) -> int:
        return self.query(f"SELECT count(*) FROM {table} WHERE venue = %s", venue)[0][0]  # noqa: S608

    def stats(self) -> dict:
        status, _, body = http_get(self.health_url + "/stats", timeout=5)
        assert status == 200, body
        return body  # type: ignore[return-value]

    def worker_stats(self, index: int) -> dict:
        """/stats' section of worker `index` (1-based), found by its current pid."""
        pid = self.worker_pids()[index]
        return next(w for w in self.stats()["workers"] if w["pid"] == pid)

    def health(self) -> tuple[int, Any]:
        status, _, body = http_get(self.health_url + "/health", timeout=5)
        return status, body

    def worker_log(self, index: int) -> str:
        path = self.logs / f"worker-{index}.log"
        return path.read_text() if path.exists() else ""

    def worker_of(self, venue: str) -> int:
        """The 1-based index of the worker collecting `venue` (its feed logs its sockets' ids, e.g. okx.ws.v5.public)."""
        return wait_for(lambda: next((i for i in range(1, self.workers + 1)
                                      if f"{venue}.ws.v5." in self.worker_log(i) or f"{venue}.v5." in self.worker_log(i)),
                                     None), 30, f"the {venue} worker's log")

    def worker_pids(self) -> dict[int, int]:
        """Worker index (1-based) -> pid, from the process titles (collector: worker 1/2 (...))."""
        assert self.sup is not None
        out = {}
        for p in psutil.Process(self.sup.proc.pid).children(recursive=True):
            try:
                title = " ".join(p.cmdline()).strip()
            except psutil.Error:  # exited (or a zombie not reaped yet)
                continue
            if title.startswith("collector: worker "):
                out[int(title.split()[2].split("/")[0])] = p.pid
        return out

    def kill_worker(self, index: int) -> int:
        """SIGKILL worker `index` and wait for the arbiter to start its successor; returns the victim's pid."""
        victim = self.worker_pids()[index]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: self.worker_pids().get(index, victim) != victim, 60, f"worker {index} restarted")
        return victim

    def stop(self) -> tuple[int, str]:
        """SIGTERM the collector (exit code, output), then stop the simulators; idempotent."""
        if self._stopped is None:
            try:
                self._stopped = self.sup.stop() if self.sup is not None else (-1, "")
            finally:
                for sim in self.sims.values():
                    sim.stop()
        return self._stopped

    # --- the verdict ----------------------------------------------------------------------------------------------

    def settle(self, venue: str, outage: tuple[int, int] | None = None) -> dict:
        """Pause the venue's market and wait until every trade and closed candle it sent is stored, in a gap
        row not filled yet, or (Bybit trades) in `outage` (sim ms); returns the (final) truth, candles included."""
        self.control(venue, "pause")
        t = self.truth(venue, klines=True)
        try:
            wait_for(lambda: not self.trade_problems(venue, t, True, outage) and not self.candle_problems(venue, t),
                     60, f"every {venue} trade and closed candle sent to be stored (or in a gap row)")
        except AssertionError:  # say which rows
            problems = self.trade_problems(venue, t, True, outage) + self.candle_problems(venue, t)
            raise AssertionError(f"{venue}: {len(problems)} problems, e.g. {problems[:8]}; gap rows "
                                 f"{self.gaps(venue, 'trades')[:8]} {self.gaps(venue, 'candles_1m')[:8]}") from None
        return t

    def gaps(self, venue: str, kind: str) -> list[tuple[str, int, int]]:
        return self.query("SELECT symbol, from_id, to_id FROM gaps WHERE venue = %s AND kind = %s", venue, kind)

    def gap_rows(self, venue: str, kind: str) -> list[tuple[str, int, int, str]]:
        return self.query("SELECT symbol, from_id, to_id, state FROM gaps WHERE venue = %s AND kind = %s", venue, kind)

    def trade_problems(self, venue: str, t: dict, complete: bool = False,
                       outage: tuple[int, int] | None = None) -> list[str]:
        """Every trade the venue sent from a symbol's first stored one on: stored once and equal, or (OKX) its
        fills inside a gap row not filled yet, or (Bybit, whose missed trades nothing can find) inside
        `outage` (sim ms); no row the venue did not send."""
        stored = self.query("SELECT symbol, trade_id, first_trade_id, last_trade_id, price, amount, side, "
                            "(extract(epoch FROM time) * 1000)::bigint FROM trades WHERE venue = %s", venue)
        problems = [f"duplicate {k}" for k, n in Counter((r[0], r[1]) for r in stored).items() if n > 1]
        if venue == "okx":
            return problems + self._okx_trade_problems(t, stored, complete)
        sent = {(r["s"], trade_id_of(r["i"])): r for r in t["trades"]}
        first: dict[str, int] = {}
        for sym, tid, _f, _l, price, amount, side, ms in stored:
            first[sym] = min(ms, first.get(sym, ms))
            r = sent.get((sym, tid))
            want = None if r is None else (Decimal(r["p"]), Decimal(r["v"]), r["S"].lower(), int(r["T"]))
            if want != (price, amount, side, ms):
                problems.append(f"{sym} {tid}: stored {(price, amount, side, ms)} sent {want}")
        if complete:
            lo, hi = outage if outage is not None else (0, -1)
            have = {(r[0], r[1]) for r in stored}
            problems += [f"missing outside the outage: {k}" for k, r in sent.items()
                         if k[0] in first and int(r["T"]) >= first[k[0]] and k not in have
                         and not lo <= int(r["T"]) <= hi]
            problems += [f"no trade stored for {s}" for s in {s for s, _ in sent} - set(first)]
        return problems

    def _okx_trade_problems(self, t: dict, stored: list[tuple], complete: bool) -> list[str]:
        """OKX: a row is a push, fills first_trade_id..trade_id: one the stream sent, equal to it (repaired or
        not: the repair joins a push's fills back into it), or one it never sent, inside a gap row and equal to
        the venue's REST fills it joins; every fill id covered once."""
        ct = self.contract_sizes("okx")
        pushes = {(r["instId"], int(r["tradeId"])): r for r in t["trades"]}
        push_of = {(sym, f): last for (sym, last), r in pushes.items()
                   for f in range(last - int(r["count"]) + 1, last + 1)}
        gaps = self.gap_rows("okx", "trades")
        problems: list[str] = []
        covered: Counter[tuple[str, int]] = Counter()
        unsent = [(sym, i) for sym, tid, f, last, *_ in stored if (sym, tid) not in push_of
                  for i in range(f, last + 1)]
        history = self._okx_fills(unsent) if unsent else {}
        for sym, tid, f, last, price, amount, side, ms in stored:
            push = pushes.get((sym, push_of.get((sym, tid), -1)))
            if push is None:  # a push the stream never sent (nobody was subscribed): the venue's REST fills
                fills = [history.get((sym, i)) for i in range(f, last + 1)]
                want = None if None in fills or tid != last else (
                    Decimal(fills[0]["px"]), sum(Decimal(x["sz"]) for x in fills) * ct[sym], fills[0]["side"],
                    int(fills[0]["ts"]))
                if want != (price, amount, side, ms) or any((x["px"], x["side"], x["ts"]) !=
                                                            (fills[0]["px"], fills[0]["side"], fills[0]["ts"])
                                                            for x in fills if x is not None):
                    problems.append(f"{sym} {f}..{tid}: stored {(price, amount, side, ms)}, the venue's fills {want}")
                elif not any(g[0] == sym and g[1] <= f and tid <= g[2] for g in gaps):
                    problems.append(f"{sym} {f}..{tid}: a repaired row outside every gap row")
                covered.update((sym, i) for i in range(f, last + 1))
                continue
            whole = (f, last) == (tid - int(push["count"]) + 1, tid)
            if not whole or (price, amount, side, ms) != (Decimal(push["px"]), Decimal(push["sz"]) * ct[sym],
                                                          push["side"], int(push["ts"])):
                problems.append(f"{sym} {f}..{tid}: stored {(price, amount, side, ms)} sent {push}")
            covered.update((sym, i) for i in range(f, last + 1))
        problems += [f"fill {k} stored twice" for k, n in covered.items() if n > 1]
        if complete:
            first: dict[str, int] = {}
            for sym, i in covered:
                first[sym] = min(i, first.get(sym, i))
            for sym, i in push_of:
                if sym in first and i >= first[sym] and not covered[(sym, i)] and \
                        not any(g[0] == sym and g[1] <= i <= g[2] and g[3] != "filled" for g in gaps):
                    problems.append(f"fill missing without an open gap row: {sym} {i}")
            problems += [f"no trade stored for {s}" for s in {s for s, _ in pushes} - set(first)]
        return problems

    def candle_problems(self, venue: str, t: dict) -> list[str]:
        """Each closed 1m candle from a symbol's first stored one on: stored once and equal (repaired ones too),
        or inside a candle gap row not filled yet (from_id..to_id are open times in ms), never both."""
        closed = {}
        for k in t["klines"]:
            if venue == "okx":
                c = k["candle"]  # [ts, o, h, l, c, vol (contracts), volCcy (base), volCcyQuote, confirm]
                closed[(k["instId"], int(c[0]))] = tuple(Decimal(x) for x in (c[1], c[2], c[3], c[4], c[6], c[7]))
            else:
                closed[(k["symbol"], int(k["start"]))] = tuple(
                    Decimal(k[f]) for f in ("open", "high", "low", "close", "volume", "turnover"))
        rows = self.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, open, high, low, close, volume, "
                          "quote_volume FROM candles_1m WHERE venue = %s", venue)
        gaps = [(sym, lo, hi) for sym, lo, hi, state in self.gap_rows(venue, "candles_1m") if state != "filled"]
        problems = [f"duplicate candle {k}" for k, n in Counter((r[0], r[1]) for r in rows).items() if n > 1]
        first: dict[str, int] = {}
        for sym, ms, *values in rows:
            first[sym] = min(ms, first.get(sym, ms))
            if closed.get((sym, ms)) != tuple(values):
                problems.append(f"candle {sym} {ms}: stored {tuple(values)} sent {closed.get((sym, ms))}")
        have = {(r[0], r[1]) for r in rows}
        for sym, ms in closed:
            if sym in first and ms >= first[sym] and (sym, ms) not in have and \
                    not any(g[0] == sym and g[1] <= ms <= g[2] for g in gaps):
                problems.append(f"candle missing without a gap row: {sym} {ms}")
        problems += [f"no candle stored for {s}" for s in {s for s, _ in closed} - set(first)]
        return problems + _gap_overlaps(gaps, have, step=60_000)

    def assert_liquidations(self, venue: str, t: dict, outage: tuple[int, int] | None = None,
                            holes: bool = False) -> None:
        """Every liquidation sent is stored exactly once and equal, except inside `outage` (sim ms: none of these
        venues resends one) or, with `holes`, inside a `liquidations` gap row of its symbol (the times its stream
        was not received, collector.pipeline.liquidation_holes), where a stored one is still equal and once.

        `t` is settle()'s truth, whose wait covers trades and candles only; the writer commits each table in
        its own transaction, one after another (collector.writer.service.flush), so a liquidation sent just
        before the pause can still be in flight when every trade is stored: waited for here, with a deadline
        (the market is paused, so one still missing then was lost)."""
        ct = self.contract_sizes(venue)
        want = Counter()
        for x in t["liquidations"]:
            if venue == "okx":
                key = (x["instId"], int(x["ts"]), x["side"], Decimal(x["bkPx"]), Decimal(x["sz"]) * ct[x["instId"]])
            else:  # Bybit's S is the liquidated position's side: Buy = a long closed by a sell order
                key = (x["s"], int(x["T"]), "sell" if x["S"] == "Buy" else "buy", Decimal(x["p"]), Decimal(x["v"]))
            want[key] += 1
        assert want, "no liquidation was sent: the scenario proves nothing about them"
        lo, hi = outage if outage is not None else (0, -1)
        gap_rows = self.gaps(venue, "liquidations") if holes else []

        def stored() -> Counter:
            return Counter(self.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, side, price, "
                                      "quantity FROM liquidations WHERE venue = %s", venue))

        def missing() -> list[tuple]:
            return [k for k in want - stored() if not lo <= k[1] <= hi
                    and not any(g[0] == k[0] and g[1] <= k[1] <= g[2] for g in gap_rows)]

        try:
            wait_for(lambda: not missing(), 30, f"every {venue} liquidation sent outside the outage to be stored")
        except AssertionError:  # say which
            raise AssertionError(f"sent outside the outage {outage} and every liquidations gap row {gap_rows} but still "
                                 f"not stored after 30 s of a paused market: {missing()}") from None
        extra = stored() - want
        assert not extra, f"stored but not sent (or stored twice): {extra}"

    def assert_funding(self, venue: str, t: dict, outage: tuple[int, int] | None = None,
                       unseen: tuple[int, int] | None = None) -> None:
        """At most one funding row per symbol and minute; a row's rate and next funding time are the ones the
        venue published last before the row's time (`unseen`: sim ms in which what it published never reached
        a worker, e.g. a stall or the moments between a kill and the end of the victim's socket), whichever
        worker stored the row: a successor (kill -9, a SIGHUP hand-over) resumes the rate its predecessor was
        sent (collector.pipeline.funding_rates). No rate (OKX only) only before the venue published any (OKX
        sends it apart from the mark price, every 30-90 s), or when the last one is more than RATE_STALE_MS
        past its settlement (a past period's; the simulator pushes at every settlement, so only a rate
        whose successor push went unseen); every minute from a symbol's first row to the pause has its row,
        except minutes inside `outage` (sim ms)."""
        u_lo, u_hi = unseen if unseen is not None else (0, -1)
        # a record inside `unseen` that was queued on a socket opened after its start (the successor's, a
        # reconnected one) did reach a worker: a tick due before that socket opened can run after it
        # subscribed (a late tick under load); the OKX simulator says where each push went ("to")
        later = {c["id"] for c in t["connections"] if c["opened_sim"] > u_lo}
        rows = self.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, funding_rate, "
                          "(extract(epoch FROM next_funding_time) * 1000)::bigint FROM funding WHERE venue = %s", venue)
        assert rows, f"no {venue} funding stored"
        per_minute = Counter((s, ms // 60_000) for s, ms, _, _ in rows)
        assert max(per_minute.values()) == 1, [k for k, n in per_minute.items() if n > 1]
        published = t["funding"]
        for sym, ms, rate, nxt in rows:
            # OKX: the row is the minute's first event, the mark-price push the simulator sends before the
            # funding-rate push of the same second; Bybit: one tickers frame carries both
            known = [r for r in published[sym]
                     if int(r["ts"]) < ms + (venue == "bybit")
                     and not (u_lo <= int(r["ts"]) <= u_hi and later.isdisjoint(r.get("to", ())))]
            if venue == "okx" and known and ms > int(known[-1]["fundingTime"]) + RATE_STALE_MS:
                known = []  # a past period's rate: carried by no row, restored or merged
            if rate is None:  # OKX: the mark price before the first funding-rate push of the run
                assert venue == "okx" and nxt is None, (sym, ms, "a row without a rate")
                assert not known, (sym, ms, "no rate though one was sent", [r["ts"] for r in published[sym]])
                continue
            assert known, (sym, ms, rate, "a rate though none sent was current")
            r = known[-1]
            want_next = int(r["fundingTime"] if venue == "okx" else r["nextFundingTime"])
            assert (rate, nxt) == (Decimal(r["fundingRate"]), want_next), (sym, ms, rate, nxt, r)
        lo, hi = outage if outage is not None else (0, -1)
        last_minute = t["sim_ms"] // 60_000 - 1  # the minute of the pause may have no event yet
        for sym in {s for s, _ in per_minute}:
            first = min(m for s, m in per_minute if s == sym)
            holes = [m for m in range(first, last_minute) if (sym, m) not in per_minute
                     and not (lo // 60_000 <= m <= hi // 60_000)]
            assert not holes, (sym, "minutes without a funding row outside the outage", holes)

    def _okx_fills(self, keys: list[tuple[str, int]]) -> dict[tuple[str, int], dict]:
        """These fills as the OKX simulator's REST history serves them (history-trades by tradeId cursors)."""
        out: dict[tuple[str, int], dict] = {}
        for sym in {s for s, _ in keys}:
            ids = sorted(i for s, i in keys if s == sym)
            top = ids[-1] + 1
            while top > ids[0]:
                self.control("okx", "reset_weights")
                status, _, body = http_get(f"{self.sims['okx'].rest_url}/api/v5/market/history-trades?instId={sym}"
                                           f"&type=1&after={top}&before={max(ids[0] - 1, top - 101)}&limit=100")
                assert status == 200 and body["code"] == "0", body
                if not body["data"]:
                    break
                out.update(((sym, int(r["tradeId"])), r) for r in body["data"])
                top = min(int(r["tradeId"]) for r in body["data"])
        return out

    def contract_sizes(self, venue: str) -> dict[str, Decimal]:
        """Base units per contract (OKX ctVal; 1 on Bybit, whose sizes are in base units)."""
        if not hasattr(self, "_ct"):
            self._ct: dict[str, dict[str, Decimal]] = {}
        if venue not in self._ct:
            universe = fetch_venue_universe(venue, self.sims[venue].rest_url, lambda url: http_get(url)[2])
            self._ct[venue] = {s.name: Decimal(s.contract.value) for s in universe}
        return self._ct[venue]

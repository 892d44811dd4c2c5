"""Fault scenario per venue on REST: the venue refuses its instruments endpoint (OKX HTTP 429 code 50011,
Bybit retCode 10006 "Too many visits!" with HTTP 200, Bybit HTTP 403 "access too frequent": its IP ban).

A worker of OKX or Bybit needs its instruments (contract sizes) before it can decode a frame, so the
refusal is met by a restarted worker (kill -9, the arbiter starts a successor that loads them). Only that
worker pauses its REST (for OKX's 2 s window, until Bybit's limit resets, or Bybit's 10-minute ban); the
venue's answer reaches the worker's log and the pause reaches /health and /stats; the other venue's
worker is never paused and keeps collecting; after a 429 / 10006 the successor loads, subscribes, and
the rows are the truth's (the restart's trades and candles in stored gap rows).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from helpers import wait_for
from venue_rig import FLUSH_SLACK_MS, VENUES, VenueRig

pytestmark = pytest.mark.faults

# (venue, status the simulator's fault injects, what the venue answers and the worker logs, pause it causes)
CASES = {
    "okx-429": ("okx", 429, "HTTP 429 from", '"code":"50011","msg":"Too Many Requests"'),
    "bybit-10006": ("bybit", 429, "retCode 10006 from", "Too many visits!"),
    "bybit-403": ("bybit", 403, "HTTP 403 from", "access too frequent"),
}
# Bybit lifts an IP ban after 10 minutes (collector.feed.venue_universe.BYBIT_BAN_MS): the worker waits it out.
BYBIT_BAN_S = 600


@pytest.mark.timeout(150)
@pytest.mark.parametrize("case", list(CASES))
def test_venue_rest_refusal_pauses_only_that_venue(case: str, db_url: str, tmp_path: Path) -> None:
    venue, status, refusal, words = CASES[case]
    other = next(v for v in VENUES if v != venue)
    rig = VenueRig(tmp_path, db_url)
    try:
        index, other_index = rig.worker_of(venue), rig.worker_of(other)
        # two closed candles of every symbol: a checkpoint covering the first has been published by then (a kill
        # before a symbol's first one leaves the successor nothing to detect what it lost against)
        wait_for(lambda: rig.count("candles_1m", venue) >= 8 and rig.count("trades", other) > 0, 60,
                 "candles and trades stored")
        answered = lambda: rig.truth(venue)["rest_status"]  # noqa: E731
        before = answered()
        rig.control(venue, "fault/rest", status=status, count=1)
        kill_ms = rig.truth(venue)["sim_ms"]
        rig.kill_worker(index)
        # the successor asks for the instruments, is refused, says why, and pauses its venue's REST
        wait_for(lambda: "instruments not loaded" in rig.worker_log(index), 60, "the refusal logged")
        line = next(x for x in rig.worker_log(index).splitlines() if "instruments not loaded" in x)
        assert refusal in line and words in line, line
        refused = "403" if status == 403 else "429" if venue == "okx" else "200"  # Bybit's 10006 is an HTTP 200
        assert {k: n - before.get(k, 0) for k, n in answered().items() if n != before.get(k, 0)} == {refused: 1}
        if status == 403:  # the 10-minute ban: /stats and /health say until when; nothing is asked meanwhile
            until = wait_for(lambda: rig.worker_stats(index)["rest_paused_until"], 30, "the pause in /stats")
            wait_for(lambda: f"worker {index}: REST paused by the exchange's rate limit" in str(rig.health()[1]),
                     30, "the pause in /health")
            reason = next(r for r in rig.health()[1]["reasons"] if f"worker {index}: REST paused" in r)
            assert BYBIT_BAN_S - 30 <= float(reason.split(" for ")[1].split()[0]) <= BYBIT_BAN_S, reason
            assert until is not None
        # the other venue is never paused and keeps collecting meanwhile
        assert rig.worker_stats(other_index)["rest_paused_until"] is None
        stored = rig.count("trades", other)
        wait_for(lambda: rig.count("trades", other) > stored + 50, 30, f"{other} trades while {venue} is paused")
        if status == 403:
            retried_by = time.monotonic() + 12  # past the worker's retry interval (LOAD_RETRY_S, 10 s)
            wait_for(lambda: time.monotonic() > retried_by, 15, "the worker's next instruments attempt being due")
            assert sum(answered().values()) == sum(before.values()) + 1  # the ban is honoured: no second request
            assert not rig.subscribed(venue)
        else:  # the refusal lifts: the successor loads, subscribes, and collects again
            wait_for(lambda: rig.subscribed(venue), 60, f"the successor to subscribe on {venue}")
            resubscribed_ms = max(c["opened_sim"] for c in rig.live(venue))
            wait_for(lambda: rig.truth(venue)["sim_ms"] > resubscribed_ms + 60_000, 30, "a sim minute more")
            assert rig.worker_stats(other_index)["rest_paused_until"] is None
            # Bybit's trades sent while no worker was subscribed are lost: nothing can find them by id
            outage = (kill_ms - FLUSH_SLACK_MS, resubscribed_ms + FLUSH_SLACK_MS)
            t = rig.settle(venue, outage)
            assert rig.trade_problems(venue, t, True, outage) == []
            assert rig.candle_problems(venue, t) == []
        code, out = rig.stop()
        assert code == 0, out[-3000:]
    finally:
        rig.stop()

"""HTTP control endpoints under /_sim/: faults, listings, pause/resume and the ground truth.

Not rate limited and not counted in the truth's REST statistics: they are the test harness, not Binance.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import orjson

if TYPE_CHECKING:
    from .simulator import Simulator


def _ok(obj) -> tuple:
    return 200, orjson.dumps(obj), {}


def _opt_int(q: dict, key: str) -> int | None:
    return int(q[key]) if q.get(key) not in (None, "", "all") else None


def dispatch(sim: Simulator, method: str, path: str, q: dict) -> tuple:
    try:
        return _dispatch(sim, path[len("/_sim/"):], q)
    except (KeyError, ValueError) as e:
        return 400, orjson.dumps({"error": f"{type(e).__name__}: {e}"}), {}


def _dispatch(sim: Simulator, cmd: str, q: dict) -> tuple:
    if cmd == "truth":
        return _ok(sim.truth_doc(klines=q.get("klines", "1") != "0"))
    if cmd == "truth/write":
        sim.write_truth(q.get("path") or sim.cfg.truth_file)
        return _ok({"written": q.get("path") or sim.cfg.truth_file})
    if cmd == "pause":
        return _ok({"sim_ms": sim.pause()})
    if cmd == "resume":
        sim.resume()
        return _ok({"sim_ms": sim.sim_now()})
    if cmd == "conns":  # ?names=1: each connection's stream names too (what it subscribed, not only how many)
        names = q.get("names") == "1"
        return _ok([{**c.record(), "names": list(c.streams)} if names else c.record() for c in sim.ws_conns()])
    if cmd == "fault/drop":
        if q.get("prob"):
            sim.set_drop_probability(float(q["prob"]))
            return _ok({"prob": float(q["prob"])})
        if q.get("after"):
            sim.drop_after(float(q["after"]))
            return _ok({"after": float(q["after"])})
        return _ok({"dropped": sim.drop_all()})
    if cmd == "fault/stall":
        stalled = sim.stall(_opt_int(q, "conn"), q.get("on", "1") != "0")
        return _ok({"stalled": stalled, "sim_ms": sim.sim_now()})  # no event after this time was sent on them
    if cmd == "fault/inject":
        return _ok({"injected": sim.inject(q.get("kind", "malformed"), _opt_int(q, "conn"))})
    if cmd == "fault/malformed_rate":
        sim.set_malformed_rate(float(q.get("rate", 0)), q.get("kind", "malformed"))
        return _ok({"rate": float(q.get("rate", 0))})
    if cmd == "fault/skip":
        sim.skip_ids(q["symbol"], int(q.get("count", 10)))
        return _ok({"symbol": q["symbol"]})
    if cmd == "fault/rest":
        sim.set_rest_fault(int(q.get("status", 0)), int(q.get("count", 0)), float(q.get("fraction", 0)),
                           float(q.get("delay", 0)), int(q.get("retry_after", 30)))
        return _ok({"status": int(q.get("status", 0))})
    if cmd == "reset_weights":
        sim.limiter.reset()
        if sim.venue_rest is not None:
            sim.venue_rest.reset()
        return _ok({})
    if cmd == "activity":
        return _ok({"symbol": q["symbol"], "rate": sim.set_activity(q["symbol"], float(q["factor"]))})
    if cmd == "list":
        sim.list_symbol(q["symbol"], float(q.get("price", 1.0)))
        return _ok({"listed": q["symbol"]})
    if cmd == "delist":
        sim.delist_symbol(q["symbol"])
        return _ok({"delisted": q["symbol"]})
    return 404, orjson.dumps({"error": f"unknown control {cmd}"}), {}

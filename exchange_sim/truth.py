"""Ground truth: what the simulator actually published, in a form a test can compare a database with.

Counters live on the symbol states and connections (cheap to bump on the hot path); this module only
assembles them into one JSON document on request.
"""

from __future__ import annotations

import time
from typing import Any

from .frames import kline_dict, liquidation_dict


class Truth:
    def __init__(self) -> None:
        self.klines: list[tuple] = []          # (state, interval, kline row) for every closed kline
        self.liquidations: list[tuple] = []    # (state, liq tuple)
        self.listings: list[dict] = []
        self.faults: list[dict] = []
        self.closed_conns: list[dict] = []
        self.rest_status: dict[int, int] = {}
        self.injected: dict[str, int] = {"malformed": 0, "unknown_symbol": 0}

    def fault(self, kind: str, sim_ms: int, **details: Any) -> None:
        self.faults.append({"kind": kind, "sim_ms": sim_ms, "wall": time.time(), **details})

    def snapshot(self, states: list, live_conns: list, sim_ms: int, klines: bool = True) -> dict:
        symbols = {}
        for st in states:
            symbols[st.name] = {
                "trading": st.trading,
                "aggTrade": st.n_trade,
                "markPrice": st.n_mark,
                "markPrice@1s": st.n_mark1s,
                "forceOrder": st.n_liq,
                "kline_closed": dict(st.n_kline),
                "agg_ids": {"first": st.first_a, "last": st.last_a,
                            "skipped": [list(r) for r in st.skipped]},
            }
        doc = {
            "sim_ms": sim_ms,
            "symbols": symbols,
            "liquidations": [liquidation_dict(st, liq) for st, liq in self.liquidations],
            "listings": self.listings,
            "faults": self.faults,
            "rest_status": {str(k): v for k, v in self.rest_status.items()},
            "injected": self.injected,
            "connections": [c.record() for c in live_conns] + self.closed_conns,
        }
        if klines:
            doc["klines"] = [kline_dict(st, iv, k) for st, iv, k in self.klines]
        return doc

"""Fault scenario: a full restart (SIGTERM, then a new supervisor on the same database) of a collector of
both venues, the markets paused meanwhile. The new run's OKX workers resume the funding rate the last run
was sent from the `checkpoints` table (schema version 7), so their first funding rows carry it, as an
uninterrupted run's would: OKX pushes the rate only every 30-90 s (the simulator: at each minute boundary,
after that second's mark price, so every minute's row comes before that minute's push and a run that did
not carry the rate stores the new run's first row of every symbol with a NULL rate). The time between the
runs is one `liquidations` gap row per symbol of both venues, from the last run's checkpoint (its live_ms,
schema version 8)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import SupervisorProcess, wait_for
from venue_rig import VENUE_SYMBOLS, VENUES, VenueRig

pytestmark = pytest.mark.faults


@pytest.mark.timeout(180)
def test_a_full_restart_resumes_the_okx_funding_rate(db_url: str, tmp_path: Path) -> None:
    rig = VenueRig(tmp_path, db_url)
    try:
        wait_for(lambda: rig.query("SELECT count(DISTINCT symbol) FROM funding WHERE venue = 'okx' "
                                   "AND funding_rate IS NOT NULL")[0][0] == VENUE_SYMBOLS, 60,
                 "an OKX funding row with a rate for every symbol")
        for venue in VENUES:
            rig.control(venue, "pause")
        stop_ms = rig.truth("okx")["sim_ms"]
        assert rig.sup is not None
        code, out = rig.sup.stop()  # the workers drain, the supervisor saves their checkpoints
        assert code == 0, out[-3000:]
        rig.sup = SupervisorProcess("--workers", str(rig.workers), "--config", str(rig.config_path), cwd=tmp_path)
        for venue in VENUES:
            wait_for(lambda v=venue: rig.subscribed(v), 60, f"the new {venue} worker to subscribe")
        for venue in VENUES:
            rig.control(venue, "resume")
        wait_for(lambda: rig.truth("okx")["sim_ms"] > stop_ms + 180_000, 30, "three sim minutes more")
        t = rig.settle("okx")
        # every row carries the rate the venue sent last before it, the new run's first ones included
        rig.assert_funding("okx", t)
        # those first ones exist: per symbol a row after the stop and before the venue's next push
        rows = rig.query("SELECT symbol, (extract(epoch FROM time) * 1000)::bigint, funding_rate FROM funding "
                         "WHERE venue = 'okx' AND time > to_timestamp(%s / 1000.0)", stop_ms)
        for sym, pushes in t["funding"].items():
            next_push = min(int(r["ts"]) for r in pushes if int(r["ts"]) > stop_ms)
            before = [(ms, rate) for s, ms, rate in rows if s == sym and ms <= next_push]
            assert before and all(rate is not None for _, rate in before), (sym, stop_ms, next_push, before)
        # nobody received liquidations between the stop and the new run's first events: one row per symbol,
        # from the last run's final checkpoint; every liquidation sent is stored or inside it
        for venue in VENUES:
            t = rig.settle(venue)
            holes = rig.gap_rows(venue, "liquidations")
            assert sorted(h[0] for h in holes) == sorted(rig.contract_sizes(venue)), holes
            rig.assert_liquidations(venue, t, holes=True)
        code, out = rig.stop()
        assert code == 0, out[-3000:]
        assert f"loaded the checkpoints of {len(VENUES) * VENUE_SYMBOLS} symbols saved by the last run" in (
            rig.logs / "supervisor.log").read_text()
    finally:
        rig.stop()

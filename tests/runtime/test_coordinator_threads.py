"""The coordinator's I/O thread (collector.runtime.coordinator): it sleeps until its next job is due instead of
waking every second, a SIGHUP's refresh still wakes it at once, and a round that fails is retried a tick later,
not in a tight loop."""

from __future__ import annotations

import logging
import threading
import time

import pytest
from helpers import settled_wakeups, thread_wakeups, wait_for

from collector.config import config_from_dict
from collector.feed.endpoints import Endpoints
from collector.runtime import coordinator as coordinator_module
from collector.runtime.coordinator import Coordinator
from collector.runtime.shm import StatsBlock

# nothing listens there: a universe refresh fails at once ("connection refused"), and is logged as such
NOWHERE = Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1")


def _coordinator(stats: StatsBlock | None, tiers_ms: int | None) -> Coordinator:
    cfg = config_from_dict({"filters": {"trades": {"tier_warmup": "1s"}}})
    return Coordinator(cfg, NOWHERE, "", stats, None, ["AUSDT"], [["AUSDT"]], {"AUSDT": 0}, {}, tiers_ms,  # type: ignore[arg-type]
                       lambda _: None)


def _io_thread(co: Coordinator) -> threading.Thread:
    return next(t for t in co._threads if t.name == "coordinator-io")


def test_the_io_thread_sleeps_until_its_next_job_and_a_sighup_wakes_it(caplog: pytest.LogCaptureFixture) -> None:
    with StatsBlock.create(2, 4) as stats:
        _sleeps_until_due(_coordinator(stats, int(time.time() * 1000)), caplog)


def _sleeps_until_due(co: Coordinator, caplog: pytest.LogCaptureFixture) -> None:
    """`co` with its tiers just computed (the next computation is hours away) and no checkpoint block."""
    caplog.set_level(logging.WARNING)
    co.start()
    try:
        io = _io_thread(co)
        assert co.io_due() - time.monotonic() > 30  # the checkpoint copy, a minute away, is the first job
        before = settled_wakeups(io)
        time.sleep(2.5)  # the window observed, not a synchronisation: a 1 s tick woke it twice in it
        assert thread_wakeups(io) - before == 0
        co.reconfigure(co.cfg, NOWHERE, "", collection_changed=True)  # what SIGHUP does to the collection
        wait_for(lambda: "binance universe refresh failed" in caplog.text, 10, "the refresh SIGHUP asked for")
    finally:
        co.stop()
    assert not _io_thread(co).is_alive()


def test_a_failing_round_is_retried_a_tick_later(caplog: pytest.LogCaptureFixture,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(coordinator_module, "TICK_S", 0.2)
    # no statistics block: the tier computation, due after the 1 s warm-up (no tiers yet), raises every time
    co = _coordinator(None, None)
    caplog.set_level(logging.ERROR)
    co.start()
    try:
        wait_for(lambda: caplog.text.count("I/O round failed") >= 2, 10, "the failed round to be retried")
        time.sleep(1.0)  # the window observed: at a 0.2 s tick, about 5 more attempts; a tight loop makes thousands
    finally:
        co.stop()
    assert caplog.text.count("I/O round failed") <= 2 + 7

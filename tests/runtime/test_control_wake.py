"""A worker wakes as soon as the supervisor writes to its control queue (collector.runtime.worker_control.
ControlWatch), and the supervisor's stop request writes to it (collector.runtime.children.request_stop).

Why it matters: the housekeeping sleeps up to collector.runtime.worker.MAX_SLEEP_S between rounds; without
the wake-up a stop request, a hand-over or new tiers would wait that long, and the drain of a stopping worker
would start that much later. Real multiprocessing queues and events (the supervisor's kind), a real event
loop watching the queue's pipe.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import queue

from collector.config import Config
from collector.feed.endpoints import Endpoints
from collector.pipeline.router import Pipeline
from collector.runtime.children import request_stop
from collector.runtime.worker_control import ControlWatch, build_trade_filter, control_fd, read_control
from collector.runtime.worker_spec import WorkerSpec

CTX = multiprocessing.get_context("spawn")
DEADLINE_S = 30.0  # a deadline for what must happen, not a wait: the tests pass as soon as it happens


def test_a_control_message_wakes_the_loop_once_per_arming() -> None:
    control = CTX.Queue()

    async def main() -> None:
        loop = asyncio.get_running_loop()
        wake = asyncio.Event()
        watch = ControlWatch(loop, control, wake)
        fd = control_fd(control)
        assert fd is not None
        for _ in range(2):
            wake.clear()
            watch.arm()
            control.put(("tiers", {}))
            await asyncio.wait_for(wake.wait(), DEADLINE_S)  # no timer of ours sets it: only the readable pipe
            assert not loop.remove_reader(fd)  # fired once, then stopped watching the still readable pipe
            assert control.get(timeout=DEADLINE_S) == ("tiers", {})  # what the housekeeping's round reads
        watch.arm()
        watch.close()
        assert not loop.remove_reader(fd)  # closed: nothing left registered on the pipe

    asyncio.run(main())
    control.close()
    control.join_thread()


def test_a_queue_without_a_pipe_is_not_watched() -> None:
    assert control_fd(queue.Queue()) is None
    assert control_fd(CTX.Queue()) is not None

    async def main() -> None:
        watch = ControlWatch(asyncio.get_running_loop(), queue.Queue(), asyncio.Event())
        watch.arm()
        assert not watch.armed
        watch.close()

    asyncio.run(main())


def test_a_stop_request_sets_the_event_and_writes_the_wake_up_message() -> None:
    stop, control = CTX.Event(), CTX.Queue()
    request_stop(stop, control)
    assert stop.is_set()
    assert control.get(timeout=DEADLINE_S) == ("stop", None)
    control.close()
    control.join_thread()


def test_the_stop_message_is_read_as_a_wake_up_only() -> None:
    spec = WorkerSpec(index=0, total=1, symbols=["BTCUSDT"], config=Config(),
                      endpoints=Endpoints("http://127.0.0.1:1", "ws://127.0.0.1:1"), socket_path="/nonexistent",
                      control=queue.Queue(), stop=CTX.Event(), tiers={})
    tf = build_trade_filter(spec.config, {})
    pipeline = Pipeline(spec.symbols, ["trades"], tf, lambda batch: None, venue="binance")
    spec.control.put(("stop", None))
    assert read_control(spec, pipeline, tf, None) is False  # not a hand-over
    assert spec.control.empty()  # read, so the pipe it came through no longer wakes the loop

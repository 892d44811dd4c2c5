"""A worker's rest between light reads: what arrives meanwhile waits in the kernel and is read in one go.

Why: at the real market's rate a worker of `--workers 8` reads its WebSocket ~75 times a second, a few frames
each, and on a virtual machine a wake-up can cost more than the frames it brings (bench/README.md, "A light
worker rests between reads": on an AMD EPYC guest the same frames cost the 8 workers 39% less when each slept
50 ms after a read). Pausing only the socket bought less there (25%), and nothing on an Intel machine, where
the sleep bought ~15%: resting the whole process serves every source of wake-ups (sockets, timers, the
writer's acknowledgements) in one turn of the event loop.

So at the end of a turn of the event loop that read frames, the worker sends what it has kept (`before_rest`:
no row waits the rest out in the worker) and sleeps until the next tick of a grid `rest_s` apart, but only
when the turn was light (fewer frames than `busy_rate` frames a second would bring in a rest: a busy worker is
never slowed), came less than `rest_s` after the previous turn ended (reads that come seldom, like an idle
worker's mark prices every 3 s, cost nothing to take at once, and their rows are not delayed), and no REST
request of the worker is in flight (`requests`, counted by collector.feed.rest_client: see below). A row then
waits at most `rest_s` longer between the exchange and its read; `exchange.read_rest_ms` sets it (0: never
rest), and issue 12's event-to-commit bound (150 ms) is what it is weighed against.

Why a grid rather than `rest_s` from the turn's end: the ticks are multiples of `rest_s` on CLOCK_MONOTONIC
(`time.monotonic()`), one clock for every process of the machine, so the workers of one collector rest and
wake together, their batches reach the writer together, and the machine is quiet in between. Measured on the
AMD guest (bench/README.md, "The workers rest on one grid"): the same 40 ms rest cost 23% less CPU per message
on the grid than from each turn's end, at the same event-to-commit p99. The shipped rest is 80 ms, with the
writer's hold cut to 20 ms (`writer.commit_wait_ms`: one tick's batches reach it within a few ms): a third less
than 40 ms from each turn's end, at about the same p99 (same section).

Why no rest while a REST request is in flight: a rest holds every step of every coroutine of the worker, not
only the stream. A REST answer takes a few turns of the loop to reach the code that awaits it, and each turn
that also read frames would rest: at an 80 ms rest a 429 reached the open-interest poller ~0.4 s late (another
budgeted request went out first) and repairs slowed past the fault tests' bounds on a loaded machine. The
requests are few (open-interest bursts, a backfill's pages), so the turns they leave un-rested cost little.

The decision (`ReadPacer.rest_for`) is pure and tested directly; `ReadPacer.read` and the sleep are the edge,
called by the picows connection (collector.feed.websocket) once per socket read. One pacer per process
(`PACER`): the rest holds the whole event loop, so every connection of the worker shares it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

# A worker reading this many frames a second or more is busy: no rest after a turn that read at least this rate
# times the rest (512 frames at the shipped 80 ms, 256 at 40). Above it its reads fill up without help, and a
# turn's frames (~320 bytes each: ~160 KB at 80 ms) fit the receive buffer
# (collector.feed.websocket.READ_BUFFER_INIT_SIZE). A rate, not a count of frames, so that a longer rest does
# not make busy the worker it would help most: a count of 256 at 80 ms stopped the rests of one keep_all
# worker at 5,000 aggTrades/s (~6,200 frames a second), which cost it 7.5% more (bench/README.md, "The
# workers rest on one grid").
BUSY_RATE = 6400.0


class ReadPacer:
    """When a worker rests after a turn of reads, and how long (see the module doc)."""

    __slots__ = ("rest_s", "busy_rate", "before_rest", "requests", "frames", "turn_end", "scheduled", "rests",
                 "rested_s")

    def __init__(self, rest_s: float = 0.0, busy_rate: float = BUSY_RATE) -> None:
        self.rest_s = rest_s
        self.busy_rate = busy_rate
        # Called just before a rest: the worker sends what it holds, so no row waits in it while it rests.
        self.before_rest: Callable[[], None] | None = None
        self.requests = 0  # REST requests in flight (collector.feed.rest_client): no rest while any is
        self.frames = 0  # frames read in the current turn
        self.turn_end = float("-inf")  # time.monotonic() when the previous turn ended (after its rest)
        self.scheduled = False  # the end of the current turn is scheduled (call_soon)
        self.rests = 0  # how many times the worker rested, and for how long in all (observability, tests)
        self.rested_s = 0.0

    def rest_for(self, frames: int, now: float) -> float:
        """Seconds to rest after a turn that read `frames` and ends at `now` (monotonic): to the next multiple
        of `rest_s` (at most `rest_s`) when the turn was light, began within `rest_s` of the previous turn's
        end and no REST request is in flight, else 0."""
        rest_s = self.rest_s
        if (rest_s <= 0.0 or frames >= self.busy_rate * rest_s or now - self.turn_end >= rest_s
                or self.requests):
            return 0.0
        return rest_s - now % rest_s

    def read(self, frames: int) -> None:
        """A socket read delivered `frames` frames (on the event loop): the turn's end is scheduled once, after
        the callbacks already queued (the flush timers of the rows just read among them)."""
        self.frames += frames
        if not self.scheduled and self.rest_s > 0.0:
            self.scheduled = True
            asyncio.get_running_loop().call_soon(self._end_turn)

    def _end_turn(self) -> None:
        self.scheduled = False
        frames, self.frames = self.frames, 0
        now = time.monotonic()
        rest = self.rest_for(frames, now)
        if rest > 0.0:
            if self.before_rest is not None:
                self.before_rest()
            time.sleep(rest)  # deliberately blocking: every wake-up source of the process waits, see the module doc
            self.rests += 1
            self.rested_s += rest
            now = time.monotonic()
        self.turn_end = now


PACER = ReadPacer()  # the process's pacer: rest_s 0 (never rests) until the worker configures it

#!/usr/bin/env python3
"""What a worker's rest costs the read after it: the same frames' CPU per message after a long and a short sleep.

Why: a keep_all worker at 5,000 aggTrades/s costs ~12 µs of CPU per message in its process (`bench/ab.py HEAD
HEAD --keep-all --rate 5000 --workers 1`), while the same decode + pipeline path costs ~5 µs in
`bench/venue_cost.py --keep-all`, a tight loop over recorded frames. The worker rests between its reads
(collector.feed.pacing: at that rate ~15 rests a second, ~430 frames a read, from /proc's voluntary context
switches and the frames received) and is idle ~90% of the time. This script times the tight loop's own
frames the worker's way: in reads of --batch frames, every other read after a sleep of --rest-ms (the
worker's rest) and the others after one of --short-ms (the same system call, no long idle), alternating
within one pass so that both kinds of read share whatever state the machine is in, and, in a pass of its own,
every read straight after the previous one (the tight loop); CPU time (time.process_time) of the reads alone. Beside the product's paths a pure-Python control loop (~the same CPU
a read, next to no memory) separates what a rest costs code with a working set from what it costs any code.

    python bench/venue_cost.py --keep-all --rate 5000 --messages 50000 --runs 1 --record /tmp/frames
    python bench/wake_cost.py --frames /tmp/frames

Binance's path (FastBinanceFutures.handle_batch into a fresh Pipeline, batches discarded, as venue_cost) with
keep_all and with the default filter (~1% kept). No simulator: the recording names its symbols, and the feed
class never connects.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import common
from venue_cost import DATA_TYPES, _Conn, _pipeline

import collector
from collector.feed.cryptofeed_feed import bind_feed_class
from collector.feed.endpoints import Endpoints
from collector.feed.source import FastBinanceFutures, subscription_channels

KINDS = ("keep_all", "filtered", "control")
# Iterations of the control loop per frame: about keep_all's CPU per frame on the machine measured.
CONTROL_ITERATIONS = 40

Handler = Callable[[Sequence[str], object, float], None]


def _control(frames: Sequence[str], _conn: object, _receipt: float) -> None:
    s = 0
    for i in range(len(frames) * CONTROL_ITERATIONS):
        s += i * i % 7


def _handler(kind: str, names: list[str]) -> Handler:
    if kind == "control":
        return _control
    cls = bind_feed_class(Endpoints("http://127.0.0.1:9", "ws://127.0.0.1:9"), FastBinanceFutures)
    return cls(exchange_symbols=names, channels=subscription_channels(DATA_TYPES),
               sink=_pipeline(names, "binance", kind == "keep_all")).handle_batch


def one_pass(kind: str, names: list[str], reads: list[list[str]], receipt: float, short_s: float,
             rest_s: float) -> tuple[float, float]:
    """CPU µs per frame of the reads after a short sleep and of those after a rest, in one pass through a
    fresh pipeline (its first read, untimed, builds every symbol's state)."""
    handle = _handler(kind, names)
    conn = _Conn()
    handle(reads[0], conn, receipt)
    gc.collect()
    cpu = [0.0, 0.0]
    frames = [0, 0]
    clock = time.process_time
    for i, r in enumerate(reads[1:]):
        after_rest = i % 2
        sleep_s = rest_s if after_rest else short_s
        if sleep_s:
            time.sleep(sleep_s)
        c0 = clock()
        handle(r, conn, receipt)
        cpu[after_rest] += clock() - c0
        frames[after_rest] += len(r)
    return cpu[0] / frames[0] * 1e6, cpu[1] / frames[1] * 1e6


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=Path, required=True, metavar="DIR",
                   help="DIR/frames.json recorded by bench/venue_cost.py --record DIR")
    p.add_argument("--rest-ms", type=float, default=80.0, help="the long sleep (default %(default)s: the shipped "
                                                               "exchange.read_rest_ms)")
    p.add_argument("--short-ms", type=float, default=0.5, help="the short sleep (default %(default)s)")
    p.add_argument("--batch", type=int, default=430, help="frames per read (default %(default)s)")
    p.add_argument("--messages", type=int, default=40_000, help="frames per pass, from the recording's start")
    p.add_argument("--runs", type=int, default=3, help="passes per kind (default %(default)s)")
    args = p.parse_args()
    if args.batch < 1 or args.messages < 3 * args.batch or args.rest_ms < 0 or args.short_ms < 0:
        raise SystemExit("--batch >= 1, --messages >= 3 x --batch, and sleeps >= 0 are required")
    if not (args.frames / "frames.json").is_file():
        raise SystemExit(f"{args.frames / 'frames.json'}: no such file; record one with bench/venue_cost.py --record DIR")
    common.stop_on_signals()
    recording = json.loads((args.frames / "frames.json").read_text())
    frames = recording["frames"]["binance"][:args.messages]
    names, receipt = recording["names"]["binance"], recording["receipt"]
    reads = [frames[i:i + args.batch] for i in range(0, len(frames), args.batch)]
    for kind in KINDS:  # warm-up: imports, caches, the allocator
        one_pass(kind, names, reads[:3], receipt, 0.0, 0.0)
    us: dict[str, list[tuple[float, float]]] = {k: [] for k in KINDS}
    tight: dict[str, list[float]] = {k: [] for k in KINDS}
    load0 = os.getloadavg()
    for _ in range(args.runs):
        for kind in KINDS:
            tight[kind].append(sum(one_pass(kind, names, reads, receipt, 0.0, 0.0)) / 2)
            us[kind].append(one_pass(kind, names, reads, receipt, args.short_ms / 1000, args.rest_ms / 1000))
    load1 = os.getloadavg()
    print(common.conditions(sys.argv, f"collector from {os.path.dirname(os.path.dirname(collector.__file__))}",
                            "no database"))
    print(f"{len(frames):,} Binance frames of {args.frames} ({recording['model']}), reads of {args.batch}, every "
          f"other one after {args.rest_ms:g} ms, the others after {args.short_ms:g} ms; {args.runs} passes per kind; "
          f"load average {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} -> {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    rows = []
    for kind, pairs in us.items():
        short = statistics.median(s for s, _ in pairs)
        rest = statistics.median(r for _, r in pairs)
        extra = [r / s - 1 for s, r in pairs]
        rows.append({"kind": kind, "tight": statistics.median(tight[kind]), "short": short, "rest": rest, "per_read": (rest - short) * args.batch,
                     "extra": f"{100 * statistics.median(extra):+.0f}% ({100 * min(extra):+.0f}..{100 * max(extra):+.0f})"})
    common.print_table(rows, [("kind", "path"), ("tight", "us/msg, reads back to back"), ("short", f"us/msg after {args.short_ms:g} ms"),
                              ("rest", f"after {args.rest_ms:g} ms"), ("per_read", "extra us per read"),
                              ("extra", "extra, median (min..max) of passes")])
    common.write_results("wake-cost", {"args": {k: str(x) if isinstance(x, Path) else x for k, x in vars(args).items()},
                                       "us_per_msg_short_rest": us, "us_per_msg_tight": tight, "load": [load0, load1]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

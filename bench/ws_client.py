"""CPU per frame of the WebSocket connection layer alone: websockets (WSConnection) vs picows (wsfast).

Why: the per-frame cost of the connection layer (frame parsing, message delivery, cryptofeed's handler loop)
was ~43% of a worker's CPU; this isolates it. The simulator runs as a subprocess at `--rate` aggTrades/s
(496 symbols, aggTrade streams only, so every frame is one aggTrade), and each client variant runs in its own
child process on uvloop (as a worker does) with two connections of 248 streams driven by the collector's
SupervisedConnection and a null handler. After `--warmup` s the child reads its own utime+stime from
/proc/self/stat and its connections' `received` counters, again after `--seconds`, and reports
CPU µs per frame = CPU seconds / frames received. Medians over `--runs` runs (fresh child each run).

Variants:
- `websockets`: collector.feed.cryptofeed_adapter.WSConnection (cryptofeed's WSAsyncConn) + cryptofeed's per-message loop;
- `picows-read`: collector.feed.websocket.PicowsConnection through the same per-message `read()` loop;
- `picows`: PicowsConnection through SupervisedConnection's batched `read_batches()` path (the default);
- `picows-asyncio-transport`: the same with the event loop's own transport instead of aiofastnet's
  (`use_aiofastnet=False`), to check which one picows should use (not run unless asked: --variants);
- `picows-batch`: PicowsConnection with a null *batch* handler, as the feeds run it: each read handed to the
  handler from picows' read callback (`deliver_batches()`);
- `picows-batch-queued`: the same handler through the queued `read_batches()` path (each read queued, the
  reading task woken, two generators resumed), i.e. the hand-off before `deliver_batches()` existed.
The variants' runs alternate (run 1 of each variant, then run 2 of each, ...), so that a shared machine's
load falls on all of them alike.

Usage: .venv/bin/python bench/ws_client.py [--rates 20000 50000] [--runs 3] [--seconds 8] [--warmup 3]
       [--variants picows-batch picows-batch-queued]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLK_TCK = os.sysconf("SC_CLK_TCK")
VARIANTS = ("websockets", "picows-read", "picows", "picows-asyncio-transport", "picows-batch", "picows-batch-queued")
# Binance allows 1024 streams per connection; the collector splits 496 symbols over two connections per
# worker, so the benchmark does the same (and the simulator's own bench uses the same split).
CONNECTIONS = 2


def cpu_seconds(pid: int | str = "self") -> float:
    """utime + stime from /proc (what the kernel charged the process, all threads)."""
    with open(f"/proc/{pid}/stat") as fp:
        f = fp.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


# --- child: one client variant ------------------------------------------------------------------------------


def connection_class(variant: str) -> type:
    from collector.feed.cryptofeed_adapter import WSConnection
    from collector.feed.websocket import PicowsConnection

    if variant == "websockets":
        return WSConnection
    if variant in ("picows", "picows-asyncio-transport", "picows-batch"):
        return PicowsConnection
    if variant == "picows-batch-queued":
        class Queued(PicowsConnection):
            deliver_batches = None  # SupervisedConnection then takes the queued read_batches() path

        return Queued

    class PerMessage(PicowsConnection):
        read_batches = None  # SupervisedConnection then takes cryptofeed's per-message read() loop

    return PerMessage


async def child(variant: str, ws: str, symbols: int, warmup: float, seconds: float) -> dict:
    from cryptofeed.exchanges import BinanceFutures

    from collector.feed.cryptofeed_adapter import SupervisedConnection
    from exchange_sim.universe import build_universe

    names = [s.name.lower() for s in build_universe(symbols, 0) if s.tradable]
    streams = [f"{n}@aggTrade" for n in names]
    per = -(-len(streams) // CONNECTIONS)
    options = dict(BinanceFutures.websocket_endpoints[0].options or {})
    cls = connection_class(variant)
    if variant == "picows-asyncio-transport":
        options["use_aiofastnet"] = False
    conns = [cls(f"{ws}/market/stream?streams=" + "/".join(streams[i:i + per]), "BENCH", **options)
             for i in range(0, len(streams), per)]

    async def subscribe(conn: object) -> None:
        return None

    async def handler(msg: object, conn: object, ts: float) -> None:
        return None

    def batch_handler(messages: object, conn: object, ts: float) -> None:
        return None

    stop = asyncio.Event()
    batch = batch_handler if variant.startswith("picows-batch") else None
    handlers = [SupervisedConnection(c, subscribe, handler, timeout=30, timeout_interval=5, stop=stop,
                                     batch_handler=batch) for c in conns]
    tasks = [asyncio.create_task(h.run()) for h in handlers]
    await asyncio.sleep(warmup)

    def received() -> int:
        return sum(c.stats.received for c in conns)

    r0, c0, t0 = received(), cpu_seconds(), time.monotonic()
    await asyncio.sleep(seconds)
    r1, c1, t1 = received(), cpu_seconds(), time.monotonic()
    reconnects = sum(c.stats.reconnects for c in conns)
    stop.set()
    for h in handlers:
        await h.request_stop()
    await asyncio.gather(*tasks, return_exceptions=True)
    frames = r1 - r0
    return {"variant": variant, "frames": frames, "frames_per_s": round(frames / (t1 - t0)),
            "cpu_frac": round((c1 - c0) / (t1 - t0), 3),
            "us_per_frame": round((c1 - c0) / frames * 1e6, 3) if frames else None, "reconnects": reconnects}


# --- parent: simulator + children ----------------------------------------------------------------------------


def run_child(variant: str, ws: str, symbols: int, warmup: float, seconds: float) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", variant, "--ws", ws, "--symbols", str(symbols),
                          "--warmup", str(warmup), "--seconds", str(seconds)],
                         capture_output=True, text=True, check=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rates", type=float, nargs="+", default=[20000, 50000])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS[:3]), choices=VARIANTS)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--symbols", type=int, default=496)
    p.add_argument("--child", choices=VARIANTS)
    p.add_argument("--ws")
    a = p.parse_args()
    if a.child:
        import uvloop

        print(json.dumps(uvloop.run(child(a.child, a.ws, a.symbols, a.warmup, a.seconds))), flush=True)
        return

    from bench import common
    from exchange_sim.config import SimConfig
    from exchange_sim.runner import launch_subprocess

    common.stop_on_signals()
    summary = []
    for rate in a.rates:
        sim = launch_subprocess(SimConfig(port=0, symbols=a.symbols, rate=rate, speed=1.0, seed=7,
                                          kline_intervals=("1m",)))
        try:
            by_variant: dict[str, list[dict]] = {v: [] for v in a.variants}
            for _ in range(a.runs):
                for variant in a.variants:
                    r = run_child(variant, sim.ws_url, a.symbols, a.warmup, a.seconds)
                    by_variant[variant].append(r)
                    print(json.dumps({"rate": rate, **r, "load": os.getloadavg()[0]}), file=sys.stderr, flush=True)
            for variant, runs in by_variant.items():
                summary.append({
                    "rate": rate, "variant": variant,
                    # a run that received no frame has no µs/frame (seen at 20,000/s, load ~15; cause not found)
                    "median_us_per_frame": statistics.median([r["us_per_frame"] for r in runs
                                                              if r["us_per_frame"] is not None] or [float("nan")]),
                    "median_frames_per_s": statistics.median(r["frames_per_s"] for r in runs),
                    "median_cpu_frac": statistics.median(r["cpu_frac"] for r in runs),
                    "runs_us_per_frame": [r["us_per_frame"] for r in runs],
                    "reconnects": sum(r["reconnects"] for r in runs),
                })
        finally:
            sim.stop()
    print(f"{'rate':>7} {'variant':<12} {'µs/frame':>9} {'frames/s':>9} {'cpu':>6}  runs")
    for s in summary:
        print(f"{s['rate']:>7.0f} {s['variant']:<12} {s['median_us_per_frame']:>9.3f} "
              f"{s['median_frames_per_s']:>9.0f} {s['median_cpu_frac']:>6.3f}  {s['runs_us_per_frame']}")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()

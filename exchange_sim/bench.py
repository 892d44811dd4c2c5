"""Measure the simulator's own CPU cost per frame with a real subscriber.

Runs the simulator as a subprocess (so its CPU time is its own), subscribes one raw WebSocket reader to
every symbol's aggTrade stream, lets it run, then divides the simulator's CPU seconds by the frames it
wrote. Usage: python -m exchange_sim.bench --rate 20000 --seconds 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import time
import urllib.request

from .config import SimConfig
from .runner import launch_subprocess
from .universe import build_universe


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fp:
        fields = fp.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def reader(host: str, port: int, path: str, stop: asyncio.Event, counter: list[int]) -> None:
    r, w = await asyncio.open_connection(host, port, limit=1 << 22)
    key = base64.b64encode(os.urandom(16)).decode()
    w.write((f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
    await r.readuntil(b"\r\n\r\n")
    while not stop.is_set():
        data = await r.read(1 << 20)
        if not data:
            break
        counter[0] += len(data)
    w.close()


def truth_frames(rest: str) -> int:
    with urllib.request.urlopen(rest + "/_sim/truth?klines=0") as resp:
        doc = json.load(resp)
    return sum(c["frames"] for c in doc["connections"])


async def run(rate: float, seconds: float, symbols: int, warmup: float) -> dict:
    cfg = SimConfig(port=0, symbols=symbols, rate=rate, speed=1.0, seed=7, kline_intervals=("1m",))
    proc = launch_subprocess(cfg)
    try:
        names = [s.name.lower() for s in build_universe(symbols, 0) if s.tradable]
        streams = [f"{n}@aggTrade" for n in names]
        stop = asyncio.Event()
        got = [0]
        tasks = [asyncio.create_task(reader("127.0.0.1", proc.port, "/market/stream?streams=" + "/".join(chunk),
                                            stop, got)) for chunk in (streams[:248], streams[248:])]
        await asyncio.sleep(warmup)
        f0, c0, t0 = truth_frames(proc.rest_url), cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(seconds)
        f1, c1, t1 = truth_frames(proc.rest_url), cpu_seconds(proc.pid), time.monotonic()
        stop.set()
        for t in tasks:
            t.cancel()
        frames = f1 - f0
        cpu = c1 - c0
        return {"target_rate": rate, "frames_per_s": round(frames / (t1 - t0)), "sim_cpu_frac": round(cpu / (t1 - t0), 3),
                "us_per_frame": round(cpu / frames * 1e6, 2) if frames else None, "bytes_read": got[0]}
    finally:
        proc.stop()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rate", type=float, nargs="+", default=[20000, 50000])
    p.add_argument("--seconds", type=float, default=10)
    p.add_argument("--warmup", type=float, default=3)
    p.add_argument("--symbols", type=int, default=496)
    a = p.parse_args()
    for rate in a.rate:
        print(json.dumps(asyncio.run(run(rate, a.seconds, a.symbols, a.warmup))), flush=True)


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""CPU per message of the decode + pipeline path, Binance vs OKX vs Bybit, like for like (issue 14's
"cost per message no worse than Binance's path, within 20%").

Recording: one simulator per venue with the same market model (same seed, symbol count, trade rate and
speed), each subscribed over a real socket to every data type of every symbol exactly as the collector
subscribes (Binance: the combined streams cryptofeed's BinanceFutures opens, `<s>@aggTrade`, `@markPrice`,
`@forceOrder`, `@kline_1m`; OKX / Bybit: collector.feed.venue_feed.subscriptions), until each has
--messages data frames; answers to subscriptions are dropped, every venue keeps exactly --messages frames.

Measuring: per run and venue a fresh Pipeline (default filter, every data type, batches discarded) behind the
venue's own lean path as a worker has it: Binance `FastBinanceFutures.handle_batch` (msgspec wire structs),
OKX / Bybit the venue decoder behind VenueFeed's open-interest gate (`GatedSink`); frames handed over in
reads of --batch frames, as a socket read delivers them. CPU time (time.process_time) of the whole pass;
us/msg = CPU / frames. Venues alternate within each run (load drifts on a shared machine); the table shows
medians over --runs and each venue's ratio to Binance from the same invocation. --profile VENUE prints the
cProfile of one pass. --keep-all measures the pipelines keeping every trade (the encode and batch path that
keep_all pays per trade, issue 12); the default filter keeps ~1%.

Comparing two trees: the simulators run on the wall clock, so each recording has its own frame mix (which
frames of which channel fall into the 30,000, where the minutes' candles close); that alone moved OKX's
ratio by more than a change did. `--record DIR` keeps the recording (frames, receipt time, market model) and
`--frames DIR` replays exactly those frames (its sha256 is printed): run base and head on the same DIR. Within
an invocation each round times every venue once, the order rotating from round to round, after a full
garbage collection outside the timed pass; the ratio is taken per round (OKX's pass against Binance's pass
of the same round, seconds apart, under the same load) and reported as the median and inter-quartile range of
those per-round ratios, beside the ratio of the medians. Every pass hands the decoders the receipt time of the
recording, so replaying hours later times the same checks (no event becomes an `absurd_timestamp`).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import hashlib
import json
import os
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import common
import websockets

import collector
from collector.feed.cryptofeed_feed import bind_feed_class
from collector.feed.endpoints import Endpoints
from collector.feed.source import FastBinanceFutures, subscription_channels
from collector.feed.venue_feed import GatedSink, OpenInterestGate, subscriptions
from collector.feed.venue_universe import fetch_venue_universe
from collector.feed.venues import bybit, okx
from collector.pipeline.router import Pipeline
from collector.pipeline.trade_filter import FilterParams, TradeFilter
from exchange_sim import SimConfig, launch_subprocess

VENUES = ("binance", "okx", "bybit")
DATA_TYPES = ["trades", "funding", "liquidations", "open_interest", "candles_1m"]
TARGET_RATIO = 1.2


# Binance takes at most 1,024 streams on one connection (the simulator answers more with HTTP 400, as Binance
# does): 4 per symbol, so 200 symbols a connection, the recording of --symbols 496 on three.
BINANCE_SYMBOLS_PER_CONNECTION = 200


def _is_data(venue: str, frame: str) -> bool:
    """A market-data frame, not an answer to a subscribe or a ping."""
    if venue == "binance":
        return frame.startswith('{"stream"')
    if venue == "okx":
        return frame.startswith('{"arg"') and '"data"' in frame
    return frame.startswith('{"topic"')


async def _record(venue: str, sim: Any, names: list[str], n: int) -> list[str]:
    if venue == "binance":  # combined streams, at most BINANCE_SYMBOLS_PER_CONNECTION symbols' worth per connection
        step = BINANCE_SYMBOLS_PER_CONNECTION
        plan = {"/stream?streams=" + "/".join(f"{s.lower()}@{c}" for s in names[i:i + step]
                                              for c in ("aggTrade", "markPrice", "forceOrder", "kline_1m")): []
                for i in range(0, len(names), step)}
    else:
        plan = subscriptions(venue, names, DATA_TYPES)
    frames: list[str] = []
    conns = [await websockets.connect(sim.ws_url + path, compression=None, max_size=None) for path in plan]
    try:
        for ws, texts in zip(conns, plan.values(), strict=True):
            for t in texts:
                await ws.send(t)

        async def read(ws: Any) -> None:
            async for m in ws:
                text = m if isinstance(m, str) else m.decode()
                if _is_data(venue, text):
                    frames.append(text)
                if len(frames) >= n:
                    return
        await asyncio.wait([asyncio.create_task(read(ws)) for ws in conns], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for ws in conns:
            await ws.close()
    return frames[:n]


class _Conn:
    uuid = "bench"


def _pipeline(names: list[str], venue: str, keep_all: bool) -> Pipeline:
    return Pipeline(names, DATA_TYPES, TradeFilter(FilterParams(keep_all=keep_all)), lambda batch: None, venue=venue)


def make_pass(venue: str, sim: Any, names: list[str], frames: list[str], batch: int,
              receipt: float, keep_all: bool = False) -> Callable[[], None]:
    """One pass over the recorded frames through a fresh pipeline and the venue's lean path, every read
    received at `receipt` (the recording's time); `keep_all`: the pipeline keeps (encodes) every trade."""
    reads = [frames[i:i + batch] for i in range(0, len(frames), batch)]
    if venue == "binance":
        cls = bind_feed_class(Endpoints(sim.rest_url, sim.ws_url), FastBinanceFutures)
        feed = cls(exchange_symbols=names, channels=subscription_channels(DATA_TYPES), sink=_pipeline(names, venue, keep_all))
        conn = _Conn()

        def run_binance() -> None:
            feed.set_sink(_pipeline(names, venue, keep_all))
            for r in reads:
                feed.handle_batch(r, conn, receipt)  # type: ignore[arg-type]
        return run_binance
    symbols = fetch_venue_universe(venue, sim.rest_url, common.http_json)

    def run_venue() -> None:
        sink = GatedSink(_pipeline(names, venue, keep_all), OpenInterestGate(300_000))
        decoder = (okx.OkxDecoder(symbols, sink, venue, sink.gate) if venue == "okx"
                   else bybit.BybitDecoder(symbols, sink, venue, sink.gate))
        handle_batch = decoder.handle_batch
        for r in reads:
            handle_batch(r, receipt)
    return run_venue


def _timed(run: Callable[[], None], frames: int) -> float:
    """us/msg of one pass, after a full collection outside the timing: what the previous pass left behind is
    not collected inside this one."""
    gc.collect()
    c0 = time.process_time()
    run()
    return (time.process_time() - c0) / frames * 1e6


def _quartiles(xs: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(xs, n=4, method="inclusive")
    return q1, q2, q3


def _fingerprint(frames: dict[str, list[str]]) -> str:
    h = hashlib.sha256()
    for v in VENUES:
        for f in frames[v]:
            h.update(f.encode())
            h.update(b"\n")
    return h.hexdigest()[:16]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--symbols", type=int, default=100, help="perpetuals per venue (default %(default)s)")
    p.add_argument("--rate", type=float, default=254.0,
                   help="aggTrades/s of sim time per venue (default %(default)s: the real 1,260/s over 496 "
                        "symbols, per symbol)")
    p.add_argument("--messages", type=int, default=30_000, help="frames recorded per venue (default %(default)s)")
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--batch", type=int, default=20, help="frames per simulated socket read")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--keep-all", action="store_true",
                   help="the pipelines keep every trade (filters.trades.keep_all): the encode and batch path")
    p.add_argument("--profile", choices=VENUES, help="print the cProfile of one pass of this venue")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--record", type=Path, metavar="DIR",
                     help="record, keep the recording in DIR/frames.json, and measure it")
    src.add_argument("--frames", type=Path, metavar="DIR",
                     help="replay DIR/frames.json (made by --record; its market model overrides --symbols, "
                          "--rate, --seed, --messages) instead of recording")
    args = p.parse_args()
    common.stop_on_signals()
    recording: dict[str, Any] | None = None
    if args.frames is not None:
        recording = json.loads((args.frames / "frames.json").read_text())
        model = recording["model"]
        args.symbols, args.rate, args.seed, args.messages = (model["symbols"], model["rate"], model["seed"],
                                                              model["messages"])
    # The simulators answer the universe (names, OKX's contract sizes) also when replaying: the same seed
    # and symbol count give the same universe.
    sims = {v: launch_subprocess(SimConfig(venue=v, port=0, symbols=args.symbols, rate=args.rate, seed=args.seed))
            for v in VENUES}
    try:
        names = {v: [s.name for s in fetch_venue_universe(v, sims[v].rest_url, common.http_json)]
                 if v != "binance" else [s["symbol"] for s in common.http_json(  # type: ignore[index, union-attr]
                     sims[v].rest_url + "/fapi/v1/exchangeInfo")["symbols"]] for v in VENUES}  # type: ignore[index]
        if recording is not None:
            frames: dict[str, list[str]] = recording["frames"]
            receipt: float = recording["receipt"]
            recorded_s: float = recording["recorded_s"]
            if recording["names"] != names:
                raise SystemExit(f"{args.frames}: recorded for another universe than the simulators answer")
        else:
            async def record_all() -> dict[str, list[str]]:
                got = await asyncio.gather(*(_record(v, sims[v], names[v], args.messages) for v in VENUES))
                return dict(zip(VENUES, got, strict=True))
            t0 = time.monotonic()
            frames = asyncio.run(record_all())
            recorded_s = time.monotonic() - t0
            receipt = time.time()
            if args.record is not None:
                args.record.mkdir(parents=True, exist_ok=True)
                (args.record / "frames.json").write_text(json.dumps({
                    "model": {"symbols": args.symbols, "rate": args.rate, "seed": args.seed,
                              "messages": args.messages},
                    "names": names, "receipt": receipt, "recorded_s": recorded_s, "frames": frames}))
        passes = {v: make_pass(v, sims[v], names[v], frames[v], args.batch, receipt, args.keep_all) for v in VENUES}
        by_channel = {(v, ch): make_pass(v, sims[v], names[v], fs, args.batch, receipt, args.keep_all)
                      for v in VENUES for ch, fs in _channels(v, frames[v]).items()}
    finally:
        for sim in sims.values():
            sim.stop()
    mix = {v: _mix(v, frames[v]) for v in VENUES}
    load0 = os.getloadavg()
    for v in VENUES:
        passes[v]()  # warm-up: imports, caches, the allocator
    us: dict[str, list[float]] = {v: [] for v in VENUES}
    channel_us: dict[tuple[str, str], list[float]] = {k: [] for k in by_channel}
    sizes = {(v, ch): len(fs) for v in VENUES for ch, fs in _channels(v, frames[v]).items()}
    for i in range(args.runs):
        for v in VENUES[i % 3:] + VENUES[:i % 3]:  # no venue always first after the channels' passes
            us[v].append(_timed(passes[v], len(frames[v])))
        for k, run in by_channel.items():
            channel_us[k].append(_timed(run, sizes[k]))
    load1 = os.getloadavg()
    print(common.conditions(sys.argv, f"collector from {os.path.dirname(os.path.dirname(collector.__file__))}",
                            "no database"))
    print(f"{args.symbols} symbols per venue, {args.rate:g} aggTrades/s sim time, seed {args.seed}; "
          f"{args.messages:,} frames per venue "
          + (f"replayed from {args.frames} " if args.frames else f"recorded in {recorded_s:.0f} s ")
          + f"(sha256 {_fingerprint(frames)}); {args.runs} runs; "
          + ("keep_all (every trade encoded); " if args.keep_all else "default filter; ")
          + "load average "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f} -> {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    base = statistics.median(us["binance"])
    ratios = {v: [a / b for a, b in zip(us[v], us["binance"], strict=True)] for v in VENUES}
    rows = []
    for v in VENUES:
        q1, q2, q3 = _quartiles(ratios[v]) if args.runs > 1 else (ratios[v][0],) * 3
        rows.append({"venue": v, "median": statistics.median(us[v]), "min": min(us[v]), "max": max(us[v]),
                     "ratio": statistics.median(us[v]) / base, "paired": q2, "iqr": f"{q1:.3f}-{q3:.3f}",
                     "mix": mix[v], "ok": "yes" if q2 <= TARGET_RATIO else "NO"})
    common.print_table(rows, [("venue", "venue"), ("median", "us/msg (median)"), ("min", "min"), ("max", "max"),
                              ("ratio", "/ binance (of medians)"), ("paired", "/ binance (per round, median)"),
                              ("iqr", "per round IQR"), ("ok", f"<= {TARGET_RATIO}"),
                              ("mix", "frames by channel")])
    common.print_table([{"venue": v, "channel": ch, "frames": sizes[(v, ch)],
                         "median": statistics.median(channel_us[(v, ch)])} for v, ch in by_channel],
                       [("venue", "venue"), ("channel", "channel alone"), ("frames", "frames"),
                        ("median", "us/msg (median)")])
    common.write_results("venue-cost", {"args": {k: str(x) if isinstance(x, Path) else x
                                                 for k, x in vars(args).items()},
                                        "us_per_msg": us, "ratios": ratios, "mix": mix,
                                        "frames_sha256": _fingerprint(frames),
                                        "by_channel": {f"{v} {ch}": x for (v, ch), x in channel_us.items()},
                                        "load": [load0, load1]})
    if args.profile:
        prof = cProfile.Profile()
        prof.runcall(passes[args.profile])
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    return 0 if all(r["ok"] == "yes" for r in rows) else 1


def _channel(venue: str, frame: str) -> str:
    if venue == "binance":
        return frame[frame.index("@") + 1:frame.index('"', frame.index("@"))].split("_")[0]
    if venue == "okx":
        return frame[frame.index('"channel":"') + 11:].split('"', 1)[0]
    return frame[10:].split('"', 1)[0].split(".")[0]


def _channels(venue: str, frames: list[str]) -> dict[str, list[str]]:
    """The frames of each channel, in order (liquidations too few to time apart are left out)."""
    out: dict[str, list[str]] = {}
    for f in frames:
        out.setdefault(_channel(venue, f), []).append(f)
    return {ch: fs for ch, fs in out.items() if len(fs) >= 200}


def _mix(venue: str, frames: list[str]) -> str:
    """Frames per channel, e.g. "aggTrade 41%, kline 35%, ..."."""
    counts: dict[str, int] = {}
    for f in frames:
        key = _channel(venue, f)
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {100 * n / len(frames):.0f}%" for k, n in sorted(counts.items(), key=lambda kv: -kv[1]))


if __name__ == "__main__":
    raise SystemExit(main())

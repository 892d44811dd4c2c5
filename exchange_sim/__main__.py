"""`python -m exchange_sim [--venue binance|okx|bybit]`: run the exchange simulator until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import signal

from .config import SimConfig
from .runner import new_event_loop
from .simulator import Simulator


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The simulator's options, shared by `python -m exchange_sim` and `collector sim`."""
    d = SimConfig()
    p.add_argument("--venue", default=d.venue, choices=("binance", "okx", "bybit"))
    p.add_argument("--host", default=d.host)
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--symbols", type=int, default=None, help="default: 496 binance, 250 okx, 400 bybit")
    p.add_argument("--rate", type=float, default=d.rate, help="aggTrades per sim second, whole market")
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--speed", type=float, default=d.speed, help="sim seconds per wall second")
    p.add_argument("--start-ms", type=int, default=None, help="sim clock origin (ms); default: now")
    p.add_argument("--funding-period-ms", type=int, default=SimConfig.funding_period_ms,
                   help="sim ms between funding settlements (default 8 h)")
    p.add_argument("--tick-ms", type=float, default=d.tick_ms)
    p.add_argument("--truth-file", default=None, help="write the ground truth here on stop")
    p.add_argument("--replay", default=None, help="serve frames from a cryptofeed raw capture file")
    p.add_argument("--replay-speed", type=float, default=d.replay_speed)
    p.add_argument("--ping-interval", type=float, default=d.ping_interval_s)
    p.add_argument("--pong-timeout", type=float, default=d.pong_timeout_s)
    p.add_argument("--max-conn-age", type=float, default=d.max_conn_age_s, help="sim seconds (24h cut)")
    p.add_argument("--drop-prob", type=float, default=0.0, help="per-connection drop probability per second")
    p.add_argument("--malformed-rate", type=float, default=0.0, help="fraction of frames followed by a bad one")
    p.add_argument("--weight-limit", type=int, default=d.weight_limit)
    p.add_argument("--venue-rest-limit", type=int, default=None, help="OKX/Bybit: requests per endpoint window")
    p.add_argument("--truth-trades", action="store_true", help="OKX/Bybit: keep every trade in the truth")


def config_from(a: argparse.Namespace) -> SimConfig:
    """The SimConfig for options parsed by `add_arguments`."""
    return SimConfig(venue=a.venue, venue_rest_limit=a.venue_rest_limit, truth_trades=a.truth_trades,
                     host=a.host, port=a.port, symbols=a.symbols, rate=a.rate, seed=a.seed, speed=a.speed,
                     start_ms=a.start_ms, funding_period_ms=a.funding_period_ms, tick_ms=a.tick_ms,
                     truth_file=a.truth_file, replay=a.replay,
                     replay_speed=a.replay_speed, ping_interval_s=a.ping_interval, pong_timeout_s=a.pong_timeout,
                     max_conn_age_s=a.max_conn_age, drop_prob_per_s=a.drop_prob, malformed_rate=a.malformed_rate,
                     weight_limit=a.weight_limit)


def parse_args(argv: list[str] | None = None) -> SimConfig:
    p = argparse.ArgumentParser(prog="python -m exchange_sim", description=__doc__)
    add_arguments(p)
    return config_from(p.parse_args(argv))


async def _main(cfg: SimConfig) -> None:
    sim = Simulator(cfg)
    await sim.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Launchers wait for this exact line instead of sleeping.
    print(f"ready port={sim.port} rest=http://{cfg.host}:{sim.port} ws=ws://{cfg.host}:{sim.port}", flush=True)
    await stop.wait()
    await sim.stop()


def serve(cfg: SimConfig) -> None:
    """Run the simulator with `cfg` until SIGINT/SIGTERM."""
    loop = new_event_loop()
    try:
        loop.run_until_complete(_main(cfg))
    finally:
        loop.close()


def main(argv: list[str] | None = None) -> None:
    serve(parse_args(argv))


if __name__ == "__main__":
    main()

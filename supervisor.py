#!/usr/bin/env python3
"""Entry point: `python supervisor.py --workers 8 [--simulate] [--run-for SECONDS]`."""

from __future__ import annotations

import argparse
import sys

from collector.runtime.arbiter import Supervisor


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Binance USDT-M futures collector")
    p.add_argument("--config", default="config/main.yaml", help="configuration file (default: %(default)s)")
    p.add_argument("--workers", type=int, default=8, help="worker processes sharing the symbols (default: 8)")
    p.add_argument("--simulate", action="store_true",
                   help="start the bundled Binance simulator on 127.0.0.1 and collect from it")
    p.add_argument("--run-for", type=float, default=None, metavar="SECONDS", help="stop cleanly after this long")
    p.add_argument("--sim-symbols", type=int, default=496, help="with --simulate: number of perpetuals")
    p.add_argument("--sim-rate", type=float, default=1260.0, help="with --simulate: aggTrades/s (sim time)")
    p.add_argument("--sim-speed", type=float, default=1.0, help="with --simulate: sim seconds per wall second")
    p.add_argument("--sim-seed", type=int, default=7)
    args = p.parse_args(argv)
    if args.workers < 1:
        p.error("--workers must be at least 1")
    sim = {"symbols": args.sim_symbols, "rate": args.sim_rate, "speed": args.sim_speed, "seed": args.sim_seed}
    return Supervisor(args.config, args.workers, simulate=args.simulate, run_for=args.run_for, sim_options=sim).run()


if __name__ == "__main__":
    sys.exit(main())

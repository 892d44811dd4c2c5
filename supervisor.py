#!/usr/bin/env python3
"""Entry point: `python supervisor.py --workers 8 [--simulate] [--run-for SECONDS]` (also `collector run`)."""

from __future__ import annotations

import sys

from collector.cli import OneLineParser, add_run_arguments, run


def main(argv: list[str] | None = None) -> int:
    p = OneLineParser(description="USDT-margined perpetual futures collector (Binance, OKX, Bybit)")
    add_run_arguments(p)
    return run(p, p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

"""Per-venue simulator options of `supervisor.py --simulate`: `--sim-symbols 496,okx=250,bybit=400`.

With several venues one simulator runs per venue, and the real markets differ in size (Binance ~496
USDT-M perpetuals, OKX ~250, Bybit ~400), so one number for all of them is the wrong default for a scale
run. A value is a comma-separated list: a bare number is the default for every venue, `venue=N` overrides
it for that venue. A venue given no number gets the simulator's own default for it
(`exchange_sim.config.DEFAULT_SYMBOLS` for the symbol count). Pure parsing, no I/O: the CLI parses, the
bootstrap resolves the options of each simulator it starts.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from collector.feed.endpoints import VENUES

# The key of the bare number: the value for every venue not named.
EVERY_VENUE = "*"


def per_venue(kind: Callable[[str], float], minimum: float, what: str) -> Callable[[str], dict[str, float]]:
    """An argparse `type=` that reads `N`, `venue=N` or a comma-separated mix into {venue or '*': N}.

    Each problem is one line naming the bad part (argparse prefixes the option's name and exits 2)."""
    def parse(text: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for part in text.split(","):
            venue, eq, number = part.strip().rpartition("=")
            venue = venue.strip() if eq else EVERY_VENUE
            if eq and venue not in VENUES:
                raise argparse.ArgumentTypeError(
                    f"unknown venue {venue!r} in {text!r} (choose from {', '.join(VENUES)})")
            if venue in out:
                raise argparse.ArgumentTypeError(
                    f"{'a bare number' if venue == EVERY_VENUE else venue} given twice in {text!r}")
            try:
                value = kind(number.strip())
            except ValueError:
                raise argparse.ArgumentTypeError(
                    f"expected {what} or venue={what} (e.g. 496,okx=250), got {part.strip()!r}") from None
            if not value >= minimum:  # also refuses NaN
                raise argparse.ArgumentTypeError(f"{part.strip()!r}: must be at least {minimum:g}")
            out[venue] = value
        return out
    return parse


def options_for(sim_options: dict[str, Any], venue: str) -> dict[str, Any]:
    """The SimConfig keyword arguments of one venue's simulator: per-venue values resolved (the venue's own,
    else the bare default), options with no value left out so the simulator's venue default applies."""
    out: dict[str, Any] = {}
    for key, value in sim_options.items():
        if isinstance(value, dict):
            value = value.get(venue, value.get(EVERY_VENUE))
        if value is not None:
            out[key] = value
    out["venue"] = venue
    return out

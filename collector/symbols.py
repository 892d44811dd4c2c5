"""The one check of a symbol (and venue) name, shared by the feed, the encoder, the schema and the config.

Why one place: symbol names reach SQL text, COPY text and file names, so every layer that takes a
name from outside (an instruments list, a frame, the config file, the database) must apply the same rule.
"""

from __future__ import annotations

import re

# Decision: two shapes, both ASCII uppercase letters and digits only besides the hyphens of the second.
# - Binance and Bybit: 2..30 characters, no separator. Every USDT-M perpetual ticker so far fits (BTCUSDT,
#   1000PEPEUSDT, 1000000MOGUSDT); dated delivery contracts (BTCUSDT_250926) carry an underscore and are
#   not perpetuals, so they are refused on purpose. Binance has also listed a non-ASCII perpetual (a
#   Chinese-named ...USDT in 2025): it is refused too and must be skipped (and logged) by the universe.
#   30 leaves room over the longest ticker seen (~16) without letting garbage through.
# - OKX swaps and the cross-venue name: BASE-QUOTE-SWAP (BTC-USDT-SWAP) and BASE-USDT-PERP
#   (collector.feed.venues.common.normalized): a base of 1..20, a quote of 2..10, then SWAP or PERP. OKX's
#   dated futures (BTC-USDT-250926) and options (BTC-USD-250926-100000-C) do not fit and are refused.
SYMBOL_RE = re.compile(r"[A-Z0-9]{2,30}|[A-Z0-9]{1,20}-[A-Z0-9]{2,10}-(?:SWAP|PERP)")


def valid_symbol(name: object) -> bool:
    """True for a name we accept anywhere near SQL: a Binance/Bybit ticker (^[A-Z0-9]{2,30}$) or an OKX
    swap / cross-venue name (BTC-USDT-SWAP, BTC-USDT-PERP)."""
    return isinstance(name, str) and name.isascii() and SYMBOL_RE.fullmatch(name) is not None


# A venue is the lowercase name of the exchange its rows came from (binance, okx, bybit): stored in every
# table's key and spelled in COPY text, so it is held to a rule as strict as a symbol's.
VENUE_RE = re.compile(r"[a-z][a-z0-9]{1,19}")


def valid_venue(name: object) -> bool:
    """True for a venue name we store: ^[a-z][a-z0-9]{1,19}$ (e.g. binance, okx, bybit)."""
    return isinstance(name, str) and VENUE_RE.fullmatch(name) is not None

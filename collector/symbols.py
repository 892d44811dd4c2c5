"""The one check of a symbol (and venue) name, shared by the feed, the encoder, the schema and the config.

Why one place: symbol names reach SQL identifiers, COPY text and file names, so every layer that takes a
name from outside (exchangeInfo, a frame, the config file, the database) must apply the same rule.
"""

from __future__ import annotations

import re

# Decision: ASCII uppercase letters and digits, 2..30 characters. Every USDT-M perpetual ticker so far fits
# (BTCUSDT, 1000PEPEUSDT, 1000000MOGUSDT); dated delivery contracts (BTCUSDT_250926) carry an underscore and
# are not perpetuals, so they are refused on purpose. Binance has also listed a non-ASCII perpetual
# (a Chinese-named ...USDT in 2025): it is refused too and must be skipped (and logged) by the universe.
# 30 leaves room over the longest ticker seen (~16) without letting garbage through.
SYMBOL_RE = re.compile(r"[A-Z0-9]{2,30}")


def valid_symbol(name: object) -> bool:
    """True for a name we accept anywhere near SQL: ^[A-Z0-9]{2,30}$ (ASCII uppercase and digits)."""
    return isinstance(name, str) and SYMBOL_RE.fullmatch(name) is not None


# A venue is the lowercase name of the exchange its rows came from (binance, okx, bybit): stored in every
# table's key and spelled in COPY text, so it is held to a rule as strict as a symbol's.
VENUE_RE = re.compile(r"[a-z][a-z0-9]{1,19}")


def valid_venue(name: object) -> bool:
    """True for a venue name we store: ^[a-z][a-z0-9]{1,19}$ (e.g. binance, okx, bybit)."""
    return isinstance(name, str) and VENUE_RE.fullmatch(name) is not None

"""The supervisor's name for a symbol: unique across venues, where the venues' own names are not.

Why: Binance and Bybit both call their perpetuals BTCUSDT, and the supervisor keeps per-symbol state for
every venue in one mapping (statistics slots, checkpoint slots, tiers). So it keys that state by `key(venue,
name)`: the name itself for Binance (a Binance-only run, the default, keys exactly as before) and
"venue:name" for every other venue ("bybit:BTCUSDT", "okx:BTC-USDT-SWAP"). No venue's symbol name holds a
colon (collector.symbols.valid_symbol), so `split` is exact. Workers, the database and the exchanges only
ever see plain names: the supervisor converts where it hands a venue's symbols over.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# The venue whose symbols are keyed by their plain name (what every row and test before multi-venue used).
PLAIN_VENUE = "binance"
SEPARATOR = ":"


def key(venue: str, name: str) -> str:
    """The supervisor-wide key of `venue`'s symbol `name`."""
    return name if venue == PLAIN_VENUE else f"{venue}{SEPARATOR}{name}"


def split(symbol_key: str) -> tuple[str, str]:
    """(venue, name) of a key made by `key`."""
    venue, sep, name = symbol_key.partition(SEPARATOR)
    return (venue, name) if sep else (PLAIN_VENUE, symbol_key)


def keys(venue: str, names: Iterable[str]) -> list[str]:
    """The keys of `venue`'s `names`, in their order."""
    return [key(venue, n) for n in names]


def of_venue[T](per_key: Mapping[str, T], venue: str, names: Iterable[str]) -> dict[str, T]:
    """{name: value} of `venue`'s `names` found in a per-key mapping: what a worker or a venue's rows take."""
    out: dict[str, T] = {}
    for name in names:
        k = key(venue, name)
        if k in per_key:
            out[name] = per_key[k]
    return out


def keyed[T](venue: str, per_name: Mapping[str, T]) -> dict[str, T]:
    """{key: value} of one venue's {name: value} (e.g. what the database loaded for that venue)."""
    return {key(venue, n): v for n, v in per_name.items()}

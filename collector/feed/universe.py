"""Which contracts the collector watches, and how they are shared out among workers.

The universe is every USDT-margined perpetual in TRADING. exchangeInfo also lists coin-margined and
other-quote contracts, quarterly deliveries and contracts being settled or not yet open: none of them
produce the streams we store, and subscribing to them would only waste a connection slot.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from collector.symbols import valid_symbol


def select_universe(exchange_info: Mapping[str, object]) -> list[str]:
    """The USDT-M perpetuals in TRADING, sorted; malformed entries and unsafe names are left out."""
    out = []
    symbols = exchange_info.get("symbols")
    if not isinstance(symbols, list):
        raise ValueError("exchangeInfo has no 'symbols' list")
    for s in symbols:
        if not isinstance(s, dict):
            continue
        if (s.get("contractType") == "PERPETUAL" and s.get("quoteAsset") == "USDT"
                and s.get("marginAsset", "USDT") == "USDT" and s.get("status") == "TRADING"
                and valid_symbol(s.get("symbol"))):
            out.append(s["symbol"])
    return sorted(set(out))


def shard(symbols: Iterable[str], n: int, activity: Mapping[str, float] | None = None) -> list[list[str]]:
    """Split symbols into n shards of equal size (+-1) with a fair mix of busy and quiet names.

    A snake draft down the activity ranking (0..n-1, n-1..0, ...): each worker gets one of the top n
    names, one of the next n, and so on, so no worker holds a run of the busiest symbols and the counts
    differ by at most one. Deterministic for the same input; without activity figures, alphabetical.
    """
    if n < 1:
        raise ValueError("need at least one shard")
    weights = activity or {}
    ordered = sorted(set(symbols), key=lambda s: (-weights.get(s, 0.0), s))
    shards: list[list[str]] = [[] for _ in range(n)]
    for rank, sym in enumerate(ordered):
        lap, pos = divmod(rank, n)
        shards[pos if lap % 2 == 0 else n - 1 - pos].append(sym)
    return [sorted(s) for s in shards]

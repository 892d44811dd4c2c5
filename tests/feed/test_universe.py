from collector.feed.universe import select_universe, shard
from collector.symbols import valid_symbol


def _sym(name: str, **kw: str) -> dict:
    base = {"symbol": name, "contractType": "PERPETUAL", "quoteAsset": "USDT", "marginAsset": "USDT", "status": "TRADING"}
    base.update(kw)
    return base


def test_only_usdt_perpetuals_in_trading() -> None:
    info = {"symbols": [
        _sym("BTCUSDT"), _sym("ETHUSDT"),
        _sym("BTCUSDC", quoteAsset="USDC", marginAsset="USDC"),
        _sym("ETHBUSD", quoteAsset="BUSD"),
        _sym("BTCUSDT_261225", contractType="CURRENT_QUARTER"),
        _sym("OLDUSDT", status="SETTLING"),
        _sym("NEWUSDT", status="PENDING_TRADING"),
        _sym("bad;DROP", ),
        "garbage",
    ]}
    assert select_universe(info) == ["BTCUSDT", "ETHUSDT"]


def test_valid_symbol() -> None:
    assert valid_symbol("1000PEPEUSDT")
    assert not valid_symbol("BTC/USDT") and not valid_symbol("") and not valid_symbol(None)
    assert not valid_symbol("btcusdt") and not valid_symbol("A" * 31)


def test_shard_balances_activity_and_covers_everything() -> None:
    symbols = [f"S{i:03d}USDT" for i in range(496)]
    activity = {s: 1.0 / (i + 1) ** 1.1 for i, s in enumerate(symbols)}  # Zipf-like, like a real venue
    shards = shard(symbols, 8, activity)
    assert sorted(s for sh in shards for s in sh) == sorted(symbols)
    assert sorted(map(len, shards)) == [62] * 8
    ranked = sorted(symbols, key=lambda s: -activity[s])
    for lap in range(0, 496, 8):  # every worker gets exactly one of each group of 8 by rank
        group = set(ranked[lap:lap + 8])
        assert all(len(group.intersection(sh)) == 1 for sh in shards)
    # excluding the top 8 (one each, unavoidable), the rest of the load is within 25% across workers
    rest = [sum(activity[s] for s in sh if s not in ranked[:8]) for sh in shards]
    assert max(rest) / min(rest) < 1.25


def test_shard_without_activity_is_even() -> None:
    shards = shard([f"S{i}USDT" for i in range(10)], 3)
    assert sorted(map(len, shards)) == [3, 3, 4]

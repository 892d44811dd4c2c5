"""The supervisor's venue-unique symbol keys (collector.runtime.symbol_keys): pure."""

from __future__ import annotations

import pytest

from collector.runtime import symbol_keys as sk


def test_binance_keys_are_its_names_and_other_venues_are_prefixed() -> None:
    assert sk.key("binance", "BTCUSDT") == "BTCUSDT"  # a Binance-only run keys exactly as before
    assert sk.key("bybit", "BTCUSDT") == "bybit:BTCUSDT"
    assert sk.key("okx", "BTC-USDT-SWAP") == "okx:BTC-USDT-SWAP"
    assert sk.keys("bybit", ["BTCUSDT", "ETHUSDT"]) == ["bybit:BTCUSDT", "bybit:ETHUSDT"]


@pytest.mark.parametrize(("venue", "name"), [("binance", "BTCUSDT"), ("bybit", "BTCUSDT"),
                                             ("okx", "BTC-USDT-SWAP"), ("binance", "1000PEPEUSDT")])
def test_split_undoes_key(venue: str, name: str) -> None:
    assert sk.split(sk.key(venue, name)) == (venue, name)


def test_a_shared_name_maps_to_each_venues_own_value() -> None:
    per_key = {"BTCUSDT": 1, "bybit:BTCUSDT": 2, "bybit:ETHUSDT": 3}
    assert sk.of_venue(per_key, "binance", ["BTCUSDT", "ETHUSDT"]) == {"BTCUSDT": 1}
    assert sk.of_venue(per_key, "bybit", ["BTCUSDT", "ETHUSDT", "GONEUSDT"]) == {"BTCUSDT": 2, "ETHUSDT": 3}
    assert sk.keyed("bybit", {"BTCUSDT": 2}) == {"bybit:BTCUSDT": 2}
    assert sk.keyed("binance", {"BTCUSDT": 1}) == {"BTCUSDT": 1}

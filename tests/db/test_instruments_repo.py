"""Instruments from each venue's universe: the cross-venue name and the contract size recorded as given."""

from __future__ import annotations

import logging

import pytest

from collector.db.instruments_repo import Instrument, from_venue_symbols
from collector.feed.venues.common import ContractSize, VenueSymbol


def test_venue_symbols_become_instruments_with_their_contract_size(caplog: pytest.LogCaptureFixture) -> None:
    symbols = [VenueSymbol("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", ContractSize("0.01")),
               VenueSymbol("bybit", "1000PEPEUSDT", "1000PEPE-USDT-PERP", ContractSize("1")),
               VenueSymbol("binance", "ODDUSDC", "", ContractSize("1"))]  # no cross-venue name
    with caplog.at_level(logging.WARNING):
        got = from_venue_symbols(symbols)
    assert got == [Instrument("okx", "BTC-USDT-SWAP", "BTC-USDT-PERP", "BTC", "0.01"),
                   Instrument("bybit", "1000PEPEUSDT", "1000PEPE-USDT-PERP", "1000PEPE", "1")]
    assert "skipped binance 'ODDUSDC'" in caplog.text

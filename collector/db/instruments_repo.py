"""The instruments repository: every venue's contracts with their cross-venue name, kept in `instruments`.

Why a table: each venue names a contract its own way (Binance and Bybit `BTCUSDT`, OKX `BTC-USDT-SWAP`)
and OKX trades in contracts of `ctVal` base units, so a query comparing venues needs, per (venue, symbol),
the one normalized name (`BTC-USDT-PERP`, collector.feed.venues.common.normalized) to join on and the
contract size the amounts were converted with. Rows are upserted whenever a venue's universe is fetched:
first_seen stays, last_seen moves, so a delisted contract keeps its row and its last sighting.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import NamedTuple

import psycopg

from collector.feed.venues.common import NORMALIZED_SUFFIX, VenueSymbol, binance_normalized
from collector.symbols import valid_symbol, valid_venue

log = logging.getLogger(__name__)


class Instrument(NamedTuple):
    """One venue's contract: its own symbol, the normalized name, base asset and contract size."""

    venue: str
    symbol: str
    normalized: str  # e.g. BTC-USDT-PERP: the same string for the same contract on every venue
    base: str
    contract_size: str  # base units per contract, a decimal string ("1" where amounts are in base units)


def binance_instruments(symbols: Iterable[str]) -> list[Instrument]:
    """Binance USDT-M perpetuals -> Instruments (amounts are already in base units: contract size 1).

    A name that is not a ...USDT perpetual is skipped and logged (the universe only holds those; one
    that is not must not stop the rest from being recorded)."""
    out = []
    for s in symbols:
        try:
            norm = binance_normalized(s)
        except ValueError as e:
            log.warning("instruments: skipped %r: %s", s, e)
            continue
        out.append(Instrument("binance", s, norm, norm.removesuffix(NORMALIZED_SUFFIX), "1"))
    return out


def from_venue_symbols(symbols: Iterable[VenueSymbol]) -> list[Instrument]:
    """A venue's universe (collector.feed.venue_universe) -> Instruments; one without a cross-venue name
    (a Binance name that is not ...USDT) is skipped and logged, the rest are recorded."""
    out = []
    for s in symbols:
        if not s.normalized.endswith(NORMALIZED_SUFFIX):
            log.warning("instruments: skipped %s %r: no cross-venue name", s.venue, s.name)
            continue
        out.append(Instrument(s.venue, s.name, s.normalized, s.normalized.removesuffix(NORMALIZED_SUFFIX),
                              s.contract.value))
    return out


def _check(i: Instrument) -> None:
    if not valid_venue(i.venue):
        raise ValueError(f"instruments: invalid venue {i.venue!r}")
    if not valid_symbol(i.symbol) and not valid_symbol(i.symbol.replace("-", "")):
        raise ValueError(f"instruments: invalid symbol {i.symbol!r}")
    if not i.normalized.endswith(NORMALIZED_SUFFIX):
        raise ValueError(f"instruments: normalized name {i.normalized!r} does not end in {NORMALIZED_SUFFIX}")
    try:
        size = Decimal(i.contract_size)
    except InvalidOperation:
        size = Decimal(0)
    if not size.is_finite() or size <= 0:
        raise ValueError(f"instruments: contract size {i.contract_size!r} of {i.symbol} is not a positive decimal")


def upsert_instruments(conn: psycopg.Connection, instruments: Iterable[Instrument], seen_at: datetime) -> int:
    """Record a universe as seen at `seen_at`: new contracts inserted, known ones updated (names and contract
    size as the venue now states them; first_seen kept, last_seen never moved back). Returns rows sent.

    Every row is checked first (ValueError naming the bad field), so a bad one writes nothing."""
    rows = list(instruments)
    for i in rows:
        _check(i)
    with conn.transaction(), conn.cursor() as cur:
        cur.executemany("""
            INSERT INTO instruments AS i (venue, symbol, normalized, base, contract_size, first_seen, last_seen)
            VALUES (%s, %s, %s, %s, %s::numeric, %s, %s)
            ON CONFLICT (venue, symbol) DO UPDATE SET normalized = EXCLUDED.normalized, base = EXCLUDED.base,
                contract_size = EXCLUDED.contract_size, first_seen = least(i.first_seen, EXCLUDED.first_seen),
                last_seen = greatest(i.last_seen, EXCLUDED.last_seen)""",
            [(*i, seen_at, seen_at) for i in rows])
    return len(rows)

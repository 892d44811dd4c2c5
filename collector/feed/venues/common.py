"""What the OKX and Bybit lean decoders share: a symbol's identity across venues, exact contract-size
arithmetic on decimal strings, and the counting of frames a decoder skips.

Why: every venue's events reach the pipeline as the structs of collector.feed.wire (AggTrade, MarkPrice,
ForceOrder, Kline, OpenInterest), with amounts in base-asset units so that amounts and USD values compare
across venues. OKX swaps trade in contracts of `ctVal` base units; the pipeline stores NUMERIC from the
exchange's strings, so the conversion is done on the strings, exactly, without a Decimal per trade.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

from collector.feed.events import EventSink, FrameErrors

# The one cross-venue name of a USDT-margined perpetual: base asset as the venue spells it, then -USDT-PERP
# (cryptofeed's normalised name for the same contract, so both parsers name it alike).
NORMALIZED_SUFFIX = "-USDT-PERP"
_BASE_RE = re.compile(r"[A-Z0-9]{1,20}")
_DECIMAL_RE = re.compile(r"(\d+)(?:\.(\d+))?")

# Values the lean decoders put where the venue publishes nothing Binance's struct has (see venues/__init__).
NOT_GIVEN = ""
NO_COUNT = -1


def normalized(base: str) -> str:
    """`BTC` -> `BTC-USDT-PERP`; ValueError for a base that is not ASCII uppercase letters and digits."""
    if _BASE_RE.fullmatch(base) is None:
        raise ValueError(f"base asset {base!r} is not 1-20 ASCII uppercase letters or digits")
    return base + NORMALIZED_SUFFIX


def binance_normalized(symbol: str) -> str:
    """Binance's `BTCUSDT` -> `BTC-USDT-PERP` (the USDT-M universe only holds ...USDT perpetuals)."""
    if not symbol.endswith("USDT") or len(symbol) <= 4:
        raise ValueError(f"{symbol!r} is not a USDT-margined Binance perpetual name")
    return normalized(symbol[:-4])


def power_of_ten(value: str) -> int | None:
    """e for a decimal string equal to 10**e ("0.01" -> -2, "1" -> 0, "100" -> 2), else None."""
    m = _DECIMAL_RE.fullmatch(value)
    if m is None:
        return None
    digits = (m.group(1) + (m.group(2) or "")).lstrip("0")
    frac = len(m.group(2) or "")
    if not digits or digits.rstrip("0") != "1":
        return None
    return len(digits) - 1 - frac


def shift_decimal(value: str, exp10: int) -> str:
    """value * 10**exp10, exactly, as a positional decimal string (no exponent), e.g. ("12.5", -2) -> "0.125".

    Keeps the scale Decimal.scaleb would ("50" * 10**-2 -> "0.50"). ValueError unless value is an unsigned
    positional decimal (what the venues send for sizes).
    """
    whole, dot, frac = value.partition(".")
    digits = whole + frac
    if not whole or (dot and not frac) or not digits.isdigit() or not digits.isascii():
        raise ValueError(f"not an unsigned decimal: {value!r}")
    if exp10 == 0:
        return value
    point = len(whole) + exp10
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return (digits + "0" * (point - len(digits))).lstrip("0") or "0"
    head = digits[:point].lstrip("0") or "0"
    return head + "." + digits[point:]


# Sizes repeat (lot multiples: "1", "0.1", "12"...): converted ones are remembered, up to this many per size.
_SIZE_CACHE_LIMIT = 4096


class ContractSize:
    """Base units per contract, applied to size strings exactly (a digit shift when it is a power of ten)."""

    __slots__ = ("converted", "_exp", "value")

    def __init__(self, value: str = "1") -> None:
        try:
            ok = Decimal(value) > 0 and _DECIMAL_RE.fullmatch(value) is not None
        except InvalidOperation:
            ok = False
        if not ok:
            raise ValueError(f"contract size {value!r} is not a positive decimal")
        self.value = value
        self._exp = power_of_ten(value)
        # size string -> base units, every conversion made so far (bounded): a decoder's hot loop reads it
        # directly and calls base_units only on a miss (one Python call less per trade)
        self.converted: dict[str, str] = {}

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContractSize) and Decimal(other.value) == Decimal(self.value)

    def __hash__(self) -> int:
        return hash(Decimal(self.value))

    def __repr__(self) -> str:
        return f"ContractSize({self.value!r})"

    def base_units(self, contracts: str) -> str:
        """contracts * value as an exact decimal string."""
        out = self.converted.get(contracts)
        if out is not None:
            return out
        exp = self._exp
        if exp is not None:
            out = shift_decimal(contracts, exp)
        else:
            shift_decimal(contracts, 0)  # the same validation
            out = format(Decimal(contracts) * Decimal(self.value), "f")
        if len(self.converted) >= _SIZE_CACHE_LIMIT:
            self.converted.clear()
        self.converted[contracts] = out
        return out


@dataclass(frozen=True, slots=True)
class VenueSymbol:
    """One tradable perpetual: the venue's own name, the cross-venue name and the contract size."""

    venue: str
    name: str  # as the venue spells it: BTC-USDT-SWAP (OKX), BTCUSDT (Bybit, Binance)
    normalized: str  # BTC-USDT-PERP on every venue
    contract: ContractSize  # base units per contract (1 where sizes are already in base units)


class SkipCounter:
    """Frames a decoder skipped, by kind: counted, a few logged (FrameErrors), the sink told. Never raises."""

    def __init__(self, sink: EventSink, conn_id: str) -> None:
        self.sink = sink
        self.conn_id = conn_id
        self.errors = FrameErrors()

    @property
    def counts(self) -> Counter[str]:
        return self.errors.counts

    def skip(self, kind: str, msg: str | bytes, exc: BaseException | None = None) -> None:
        self.errors.record(kind, msg, self.conn_id, exc)
        self.sink.on_bad_frame(kind)


class OpenInterestGate:
    """At most one open interest per symbol per interval: the first of each interval-aligned window.

    Pure (event times in, a decision out). Windows are aligned to the epoch (00:00, 00:05, ...), so a
    successor that sees the same pushes keeps the same one, and a restart costs at most one extra row.
    """

    def __init__(self, interval_ms: int) -> None:
        self.interval_ms = max(1, interval_ms)
        self.window: dict[str, int] = {}

    def admit(self, symbol: str, time_ms: int) -> bool:
        w = time_ms // self.interval_ms
        if self.window.get(symbol, -1) >= w:
            return False
        self.window[symbol] = w
        return True

    def due(self, symbol: str, time_ms: int) -> bool:
        """Whether admit would pass this open interest, without admitting it: a decoder builds the event
        only then (most pushes fall in a window already served)."""
        return self.window.get(symbol, -1) < time_ms // self.interval_ms


def binance_symbol(name: str) -> VenueSymbol:
    """A Binance USDT-M perpetual (sizes in base units already) with its cross-venue name."""
    return VenueSymbol("binance", name, binance_normalized(name), ContractSize("1"))

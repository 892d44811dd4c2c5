"""Binance USDT-M futures stream frames as typed msgspec structs.

Why not cryptofeed's parser: it turns every number into a Decimal and builds an object per event
(~10 µs a frame), although the filter drops ~99% of trades. Here one C-level decode produces a struct
whose prices stay the exchange's decimal strings (stored exactly as NUMERIC when a row is kept) and
whose integers are ints; the filter converts just price and quantity to float.

Unknown fields are ignored (Binance adds fields without notice); an unknown event type or a missing
required field is a `msgspec.ValidationError`, which the feed counts and skips.
"""

from __future__ import annotations

from typing import Annotated

import msgspec


class AggTrade(msgspec.Struct, tag_field="e", tag="aggTrade"):
    E: int  # event time, ms
    s: str  # symbol
    a: int  # aggregate trade id: consecutive per symbol, so a jump is a gap
    p: str  # price
    q: str  # quantity (base asset)
    f: int  # first trade id
    l: int  # noqa: E741 - Binance's name: last trade id
    T: int  # trade time, ms
    m: bool  # buyer is the maker: the aggressor sold


class UuidTrade(AggTrade, tag="uuidTrade"):
    """A trade whose id is a UUID (Bybit's fills): a = f = l = 0 and the UUID in `u`; the pipeline computes
    the id (uuid_trade_id) only for the trades it stores.

    Why: ~99% of trades are dropped by the filter, and a venue whose ids have no order
    (collector.pipeline.router.TRADE_ID_RULES rule 0) reads the id nowhere else, so parsing every UUID on
    arrival cost ~11% of Bybit's decode + pipeline path (bench/venue_cost.py). A malformed UUID is therefore
    found when its trade is kept (counted as bad_number then), not on arrival.
    """

    u: str  # the fill's UUID, as the venue sent it


def uuid_trade_id(uuid: str) -> int:
    """The trade_id stored for a UuidTrade: the first 63 bits of its UUID (a BIGINT, never negative).

    ValueError if its first 16 characters (dashes aside) are not a hexadecimal number."""
    return int(uuid.replace("-", "")[:16], 16) >> 1


class OkxTrade(AggTrade, tag="okxTrade", kw_only=True, gc=False):
    """An OKX trade as msgspec decodes it from a trades push (collector.feed.venues.okx_frames.OkxTradesFrame):
    s, a, p, q, T straight from instId, tradeId, px, sz, ts; the decoder then sets q to base units (sz * ctVal)
    and f = a - count + 1, the two fields the pipeline reads for every trade. E, l and m stay 0 / False until
    the pipeline keeps the trade (`agg()`: E = T, l = a, m = side == "sell"), as UuidTrade's id.

    Why: building an AggTrade in Python per trade (9 arguments, 7 attribute reads) was ~8% of the OKX decoder's
    trades path (bench/README.md "Cost per message per venue"); the filter drops ~99% of trades, and nothing
    before the pipeline's keep reads E, l or m (the hand-over buffer reads s, a, T). Untracked by the garbage
    collector (gc=False): every field is a str, int or bool, so it cannot be part of a cycle.
    """

    s: str = msgspec.field(name="instId")
    a: int = msgspec.field(name="tradeId")  # the LAST fill of the push (collector.feed.venues.okx)
    p: str = msgspec.field(name="px")
    q: str = msgspec.field(name="sz")  # contracts as decoded; base units once the decoder has converted it
    T: int = msgspec.field(name="ts")
    E: int = 0  # = T, set by agg()
    f: int = 0  # set by the decoder: a - count + 1
    l: int = 0  # noqa: E741 - = a, set by agg()
    m: bool = False  # side == "sell", set by agg()
    side: str
    count: Annotated[int, msgspec.Meta(ge=1)] = 1  # fills in the push; a count below 1 takes the general path

    def agg(self) -> AggTrade:
        """The AggTrade of this trade, every field set (what is stored of a kept trade)."""
        return AggTrade(self.T, self.s, self.a, self.p, self.q, self.f, self.a, self.T, self.side == "sell")


class MarkPrice(msgspec.Struct, tag_field="e", tag="markPriceUpdate"):
    E: int
    s: str
    p: str  # mark price
    i: str = ""  # index price
    P: str = ""  # estimated settle price
    r: str = ""  # funding rate ("" on symbols without funding)
    T: int = 0  # next funding time, ms


class LiquidationOrder(msgspec.Struct):
    s: str
    S: str  # side
    o: str  # order type
    f: str  # time in force
    q: str  # original quantity
    p: str  # price
    ap: str  # average price
    X: str  # order status
    l: str  # noqa: E741 - last filled quantity
    z: str  # filled accumulated quantity
    T: int  # trade time, ms


class ForceOrder(msgspec.Struct, tag_field="e", tag="forceOrder"):
    E: int
    o: LiquidationOrder


class KlineBody(msgspec.Struct):
    t: int  # open time, ms
    T: int  # close time, ms
    s: str
    i: str  # interval
    o: str
    c: str
    h: str
    l: str  # noqa: E741 - low
    v: str  # base volume
    n: int  # number of trades
    x: bool  # closed
    q: str  # quote volume
    V: str  # taker buy base volume
    Q: str  # taker buy quote volume
    f: int = -1
    L: int = -1


class Kline(msgspec.Struct, tag_field="e", tag="kline"):
    E: int
    s: str
    k: KlineBody


Event = AggTrade | MarkPrice | ForceOrder | Kline


class Frame(msgspec.Struct, gc=False):
    """A combined-stream frame: `{"stream": "btcusdt@aggTrade", "data": {...}}`.

    `!markPrice@arr` carries a list of MarkPrice; every other stream one event. Untracked by the garbage
    collector (gc=False): a frame lives for one dispatch and cannot be part of a cycle, and a tracked
    allocation per frame would count towards a young-generation collection every couple of thousand frames.
    """

    stream: str
    data: AggTrade | MarkPrice | ForceOrder | Kline | list[MarkPrice]


class OpenInterest(msgspec.Struct):
    """The REST answer of /fapi/v1/openInterest."""

    symbol: str
    openInterest: str
    time: int


frame_decoder = msgspec.json.Decoder(Frame)
open_interest_decoder = msgspec.json.Decoder(OpenInterest)

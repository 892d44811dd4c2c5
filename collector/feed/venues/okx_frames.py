"""OKX v5 public WebSocket frames as msgspec structs, and the decoders collector.feed.venues.okx uses.

Why a module of its own: the frame shapes (pushes, answers, the rows of each channel) are OKX's wire format,
apart from what the decoder does with them; the one-pass decoders read a whole push in OKX's usual key order
(`{"arg":{"channel":...},"data":[...]}`), the envelope decoder and the per-channel row decoders everything
else. venue_history decodes OKX's REST fills with `Trade` too.
"""

from __future__ import annotations

from typing import Any

import msgspec

from collector.feed.wire import OkxTrade

NO_DATA = msgspec.Raw(b"")  # the envelope of an answer (no `data`)


class Arg(msgspec.Struct):
    channel: str
    instId: str = ""
    instType: str = ""


class Envelope(msgspec.Struct):
    """A push (`arg` + `data`) or an answer (`event`: subscribe, unsubscribe, error)."""

    arg: Arg | None = None
    data: msgspec.Raw = NO_DATA
    event: str = ""
    code: str = ""
    msg: str = ""


class Trade(msgspec.Struct):
    instId: str
    tradeId: str
    px: str
    sz: str
    side: str
    ts: str
    count: str = "1"


class Funding(msgspec.Struct):
    instId: str
    fundingRate: str
    fundingTime: str
    ts: str


class Mark(msgspec.Struct):
    instId: str
    markPx: str
    ts: str


class OI(msgspec.Struct):
    instId: str
    oi: str
    ts: str


class LiqDetail(msgspec.Struct):
    side: str
    sz: str
    bkPx: str
    ts: str


class Liq(msgspec.Struct):
    instId: str
    details: list[LiqDetail]


Candle = tuple[str, str, str, str, str, str, str, str, str]


class OkxTradesFrame(msgspec.Struct, gc=False):
    """A trades push for the one-decode path: its rows decoded straight into collector.feed.wire.OkxTrade, the
    ids and times OKX sends as digit strings to ints by msgspec (lax mode); a value lax mode refuses (or a
    count below 1) sends the frame to the general path, which names it. `arg` is not decoded
    (bench/venue_cost.py: ~0.1 us of a frame): the channel is known from the prefix matched, and every trade
    names its instrument. Untracked by the garbage collector (gc=False), as Binance's collector.feed.wire.Frame:
    a push lives for one dispatch and cannot be part of a cycle. The one-pass pushes' rows are tuples, not
    lists: one allocation less per push (~0.05-0.1 us of a frame, timed with a throwaway script on one
    recording)."""

    data: tuple[OkxTrade, ...]


TRADES_S = '{"arg":{"channel":"trades"'
TRADES_B = TRADES_S.encode()
trades_frame = msgspec.json.Decoder(OkxTradesFrame, strict=False)
# Every other push in OKX's usual key order ({"arg":{"channel":"<name>",...},"data":[...]}) is decoded in
# one pass too, by the channel named at this offset: the envelope-then-rows path decodes twice.
PUSH_S = '{"arg":{"channel":"'
PUSH_B = PUSH_S.encode()
CHANNEL_AT = len(PUSH_S)


def push_decoder(data: Any) -> msgspec.json.Decoder[Any]:
    """A decoder of a whole push, {"arg": Arg, "data": data} (untracked by the garbage collector, as
    OkxTradesFrame)."""
    return msgspec.json.Decoder(msgspec.defstruct("WholePush", [("arg", Arg), ("data", data)], gc=False))


class MarkFrame(msgspec.Struct, gc=False):
    """A mark-price push, one-pass or from the general path: `arg` is not decoded (every row names its
    instrument), as OkxTradesFrame; 20% of OKX's frames (every second per instrument)."""

    data: tuple[Mark, ...]


class OIFrame(msgspec.Struct, gc=False):
    """An open-interest push, one-pass or from the general path: `arg` is not decoded, as MarkFrame; 7% of
    OKX's frames (every few seconds per instrument), most of which the open-interest gate refuses."""

    data: tuple[OI, ...]


frames = {"candle1m": push_decoder(tuple[Candle, ...]), "mark-price": msgspec.json.Decoder(MarkFrame),
          "open-interest": msgspec.json.Decoder(OIFrame), "funding-rate": push_decoder(tuple[Funding, ...])}
frames_b = {k.encode(): v for k, v in frames.items()}  # the same, for a binary frame
# The most frequent pushes after trades (candle1m 23%, mark-price 20%, open-interest 7% of OKX's frames) are
# told by their whole prefix: a startswith each instead of finding, slicing and hashing the channel's name
# (bench/venue_cost.py)
CANDLE_S, MARK_S, OI_S = PUSH_S + 'candle1m"', PUSH_S + 'mark-price"', PUSH_S + 'open-interest"'
CANDLE_B, MARK_B, OI_B = CANDLE_S.encode(), MARK_S.encode(), OI_S.encode()
candle_frame, mark_frame, oi_frame = frames["candle1m"], frames["mark-price"], frames["open-interest"]


class Push(msgspec.Struct):
    """A push the general path decoded (envelope, then rows), as the one-pass decoders give it."""

    arg: Arg
    data: Any


envelope = msgspec.json.Decoder(Envelope)
row_decoders: dict[str, msgspec.json.Decoder[Any]] = {
    "trades": msgspec.json.Decoder(list[Trade]), "funding-rate": msgspec.json.Decoder(list[Funding]),
    "mark-price": msgspec.json.Decoder(list[Mark]), "open-interest": msgspec.json.Decoder(list[OI]),
    "liquidation-orders": msgspec.json.Decoder(list[Liq]), "candle1m": msgspec.json.Decoder(list[Candle]),
}

"""Bybit v5 USDT linear perpetuals: universe (cursor-paginated), subscriptions and a lean frame decoder.

Why: the collector's pipeline consumes collector.feed.wire's structs; this turns Bybit's `/v5/public/linear`
frames (publicTrade, tickers, allLiquidation, kline.1) into those structs: one msgspec decode for a push in
Bybit's usual key order, else two (envelope, then the topic's data; the frame shapes are in
venues/bybit_frames); no Decimal, no object beyond the struct. Linear sizes are already base units
(contract size 1).

Mapping (Bybit -> wire struct; venues/__init__ has the table for both venues):
- publicTrade -> UuidTrade (an AggTrade with a = f = l = 0 and u = i): the stored id is trade_id_of(i), the
  first 63 bits of the trade's UUID `i`, computed by the pipeline only for the trades it keeps (a malformed
  UUID is a bad_number skip then, of a kept trade only: the others are dropped without their id being read);
  unique per fill, stable across reconnects (so a repeat is one row in the database), but without order. Not
  `seq`: that is the matching engine's cross sequence, which every fill of one taker order shares (a
  recorded frame carries five fills with one seq) and book updates advance, so it neither identifies a
  trade nor runs consecutively: no trade-id gap detection on Bybit (collector.pipeline.router.
  TRADE_ID_RULES); candles are repaired from REST instead. m = S == "Sell", E = frame ts, T = trade T.
- tickers (a snapshot, then deltas of the changed fields) -> per-symbol merged state; every tickers frame
  emits MarkPrice(p = markPrice, i = indexPrice, r = fundingRate, T = nextFundingTime, E = ts) once mark
  price and funding rate are known, and OpenInterest(openInterest, ts) once open interest is known: one
  event per frame each, as cryptofeed does.
- allLiquidation -> ForceOrder: `S` is the side of the liquidated POSITION ("Buy" = a long was liquidated),
  while Binance's forceOrder side is the liquidation ORDER's: a long is closed by a SELL. So S = "SELL" for
  "Buy" and "BUY" for "Sell" (cryptofeed 3.0.1 passes Bybit's S through unchanged: the opposite).
  p = ap = p (bankruptcy price), q = z = l = v, o = f = X = "" (not published).
- kline.1 -> Kline: v = volume, q = turnover, x = confirm, t = start, T = end, E = data timestamp,
  n = -1 and V = Q = "" (not published).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast
from urllib.parse import urlencode

import msgspec

from collector.feed.events import EventSink
from collector.feed.venues.bybit_frames import (
    KIND_AT,
    KLINE_B,
    KLINE_S,
    NO_DATA,
    PUSH_B,
    PUSH_S,
    TICKERS_B,
    TICKERS_S,
    TRADES_B,
    TRADES_S,
    KlineFrame,
    Liq,
    LiqFrame,
    Ticker,
    TickerFrame,
    Trade,
    envelope,
    kline_frame,
    push_frames,
    push_frames_b,
    row_decoders,
    ticker_frame,
    trades_frame,
)
from collector.feed.venues.common import (
    NO_COUNT,
    NOT_GIVEN,
    ContractSize,
    OpenInterestGate,
    SkipCounter,
    VenueSymbol,
    normalized,
)
from collector.feed.wire import (
    ForceOrder,
    Kline,
    KlineBody,
    LiquidationOrder,
    MarkPrice,
    OpenInterest,
    UuidTrade,
    uuid_trade_id,
)

VENUE = "bybit"
LINEAR_PATH = "/v5/public/linear"
INSTRUMENTS_PATH = "/v5/market/instruments-info"
INSTRUMENTS_PAGE = 1000  # the documented maximum of `limit`


# The trade_id stored for a Bybit fill: the first 63 bits of its UUID (a BIGINT, never negative); ValueError
# when malformed. Why a hash and not `seq`: see the module docstring.
trade_id_of = uuid_trade_id


# Data type (the collector's names) -> topic prefixes; funding and open interest both ride on tickers.
TOPICS = {"trades": ("publicTrade",), "funding": ("tickers",), "open_interest": ("tickers",),
          "liquidations": ("allLiquidation",), "candles_1m": ("kline.1",)}
# Bybit documents a 10-arg cap per subscribe request for spot; linear has none documented, 10 is safe on both.
ARGS_PER_MESSAGE = 10
_ONE = ContractSize("1")


def instruments_path(cursor: str = "") -> str:
    """The instruments-info request for one page (`cursor` from the previous page's nextPageCursor)."""
    q = {"category": "linear", "limit": str(INSTRUMENTS_PAGE)}
    if cursor:
        q["cursor"] = cursor
    return f"{INSTRUMENTS_PATH}?{urlencode(q)}"


def parse_instruments_page(body: Mapping[str, Any]) -> tuple[list[VenueSymbol], str]:
    """(USDT LinearPerpetuals in status Trading on this page, the next page's cursor or "" at the end).

    ValueError if the answer is not a successful Bybit envelope; malformed or other entries are left out.
    """
    result = body.get("result")
    if body.get("retCode") != 0 or not isinstance(result, dict) or not isinstance(result.get("list"), list):
        raise ValueError(f"Bybit instruments-info: not a successful answer (retCode {body.get('retCode')!r})")
    out = []
    for e in result["list"]:
        if not isinstance(e, dict) or e.get("contractType") != "LinearPerpetual" or e.get("status") != "Trading":
            continue
        base, name = e.get("baseCoin"), e.get("symbol")
        if e.get("quoteCoin") != "USDT" or not isinstance(base, str) or name != f"{base}USDT":
            continue
        try:
            out.append(VenueSymbol(VENUE, name, normalized(base), _ONE))
        except ValueError:
            continue
    cursor = result.get("nextPageCursor")
    return out, cursor if isinstance(cursor, str) else ""


def merge_pages(pages: Iterable[list[VenueSymbol]]) -> list[VenueSymbol]:
    """The universe from every page, one entry per name, sorted by name."""
    by_name = {s.name: s for page in pages for s in page}
    return [by_name[k] for k in sorted(by_name)]


def subscribe_messages(symbols: Iterable[str], data_types: Iterable[str],
                       per_message: int = ARGS_PER_MESSAGE) -> list[str]:
    """The `{"op":"subscribe","args":[topic..],"req_id":..}` texts for /v5/public/linear."""
    prefixes = dict.fromkeys(p for t in data_types for p in TOPICS.get(t, ()))
    names = list(symbols)
    topics = [f"{p}.{n}" for p in prefixes for n in names]
    enc = msgspec.json.encode
    return [enc({"op": "subscribe", "args": topics[i:i + per_message], "req_id": f"sub-{i // per_message}"}).decode()
            for i in range(0, len(topics), per_message)]


PING = '{"op":"ping"}'


_POSITION_TO_ORDER_SIDE = {"Buy": "SELL", "Sell": "BUY"}


class BybitDecoder:
    """Bybit linear frames -> the sink's on_trade / on_mark_price / on_liquidation / on_kline /
    on_open_interest.

    `symbols` are the instruments collected (parse_instruments_page); frames of other symbols are skipped as
    unknown_symbol. `tickers` holds each symbol's merged tickers state (a snapshot replaces it, a delta
    updates the fields it carries). A frame that cannot be used is counted in `skipped` by kind, never raised.
    """

    def __init__(self, symbols: Iterable[VenueSymbol], sink: EventSink, conn_id: str = "bybit",
                 oi_gate: OpenInterestGate | None = None) -> None:
        self.symbols = {s.name: s for s in symbols}
        self.sink = sink
        self.skipped = SkipCounter(sink, conn_id)
        self.tickers: dict[str, Ticker] = {}
        self.next_funding: dict[str, int] = {}  # tickers[s].nextFundingTime as an int, parsed once
        self.venue_errors: list[str] = []
        # The gate the sink applies to open interest (collector.feed.venue_feed.GatedSink), if any: an event it
        # would refuse is not built (a tickers push carries open interest every time, the gate keeps one per
        # symbol and interval).
        self.oi_gate = oi_gate

    def reset(self) -> None:
        """A new connection: Bybit sends a fresh tickers snapshot after subscribing, deltas apply to it."""
        self.tickers.clear()
        self.next_funding.clear()

    def handle(self, msg: str | bytes, receipt: float) -> None:
        """One frame: handle_batch of one."""
        self.handle_batch((msg,), receipt)

    def handle_batch(self, messages: Sequence[str | bytes], receipt: float) -> None:
        """Every frame of one socket read, in order: one Python call per read, not per frame, as Binance's
        FastBinanceFutures.handle_batch (bench/venue_cost.py). Pushes in Bybit's usual key order are decoded
        in one pass; _general decodes the rest (envelope, then data), handles answers and names what is wrong,
        and hands pushes in another key order back here, so each topic is handled by one piece of code."""
        sink, symbols, tickers, next_funding = self.sink, self.symbols, self.tickers, self.next_funding
        on_trade, on_kline, on_mark = sink.on_trade, sink.on_kline, sink.on_mark_price
        oi_due = self.oi_gate.due if self.oi_gate is not None else None
        for msg in messages:
            if isinstance(msg, str):
                trades = msg.startswith(TRADES_S)
                decoder = (None if trades else kline_frame if msg.startswith(KLINE_S)
                           else ticker_frame if msg.startswith(TICKERS_S) else None if not msg.startswith(PUSH_S)
                           else push_frames.get(msg[KIND_AT:KIND_AT + 8]))
            else:
                trades = msg.startswith(TRADES_B)
                decoder = (None if trades else kline_frame if msg.startswith(KLINE_B)
                           else ticker_frame if msg.startswith(TICKERS_B) else None if not msg.startswith(PUSH_B)
                           else push_frames_b.get(msg[KIND_AT:KIND_AT + 8]))
            if trades:
                try:
                    frame = trades_frame.decode(msg)
                except msgspec.DecodeError:
                    self._general(msg, receipt)  # names the problem
                    continue
                try:  # the hottest loop of the venue: the id is left to the pipeline (UuidTrade)
                    ts = frame.ts
                    for r in frame.data:
                        if r.s in symbols:
                            on_trade(UuidTrade(ts, r.s, 0, r.p, r.v, 0, 0, r.T, r.S == "Sell", r.i), receipt)
                        else:
                            self.skipped.skip("unknown_symbol", msg)
                except Exception as e:  # the sink's failure: counted like Binance's, never raised
                    self.skipped.skip("handler_error", msg, e)
                continue
            push: TickerFrame | KlineFrame | LiqFrame | None = None
            if decoder is not None:
                try:
                    push = decoder.decode(msg)
                except msgspec.DecodeError:
                    pass
            if push is None:
                push = self._general(msg, receipt)  # another key order, an answer, or not decodable
                if push is None:
                    continue
            try:
                if type(push) is TickerFrame:
                    d, ts = push.data, push.ts
                    name = d.symbol
                    if name not in symbols:
                        self.skipped.skip("unknown_symbol", msg)
                        continue
                    nxt_text = d.nextFundingTime
                    nxt = int(nxt_text) if nxt_text else 0  # a bad value is refused here (bad_number), never merged
                    st = tickers.get(name)
                    if st is None or push.type == "snapshot":
                        st = tickers[name] = d
                        next_funding[name] = nxt
                    else:  # a delta carries the fields that changed; spelled out, not a getattr loop
                        if d.markPrice is not None:
                            st.markPrice = d.markPrice
                        if d.indexPrice is not None:
                            st.indexPrice = d.indexPrice
                        if d.fundingRate is not None:
                            st.fundingRate = d.fundingRate
                        if nxt_text is not None:
                            st.nextFundingTime = nxt_text
                            next_funding[name] = nxt
                        if d.openInterest is not None:
                            st.openInterest = d.openInterest
                    if st.markPrice is not None and st.fundingRate:
                        on_mark(MarkPrice(ts, name, st.markPrice, st.indexPrice or NOT_GIVEN, NOT_GIVEN,
                                          st.fundingRate, next_funding.get(name, 0)), receipt)
                    if st.openInterest is not None and (oi_due is None or oi_due(name, ts)):
                        sink.on_open_interest(OpenInterest(name, st.openInterest, ts), receipt)
                elif type(push) is KlineFrame:
                    name = push.topic[8:]  # kline.1.<symbol>
                    if name not in symbols:
                        self.skipped.skip("unknown_symbol", msg)
                        continue
                    for k in push.data:
                        on_kline(Kline(k.timestamp, name, KlineBody(
                            k.start, k.end, name, "1m", k.open, k.close, k.high, k.low, k.volume, NO_COUNT,
                            k.confirm, k.turnover, NOT_GIVEN, NOT_GIVEN)), receipt)
                else:
                    self._liquidations(cast(LiqFrame, push).data, msg, receipt)
            except (ValueError, KeyError) as e:
                self.skipped.skip("bad_number" if isinstance(e, ValueError) else "unknown_side", msg, e)
            except Exception as e:  # the sink's failure: counted like Binance's, never raised
                self.skipped.skip("handler_error", msg, e)

    def _general(self, msg: str | bytes, receipt: float) -> TickerFrame | KlineFrame | LiqFrame | None:
        """Any frame, envelope then data: answers, pongs, other key orders, and what the one-pass paths refuse.
        A tickers, kline.1 or allLiquidation push comes back (for handle_batch to handle), anything else is
        handled or counted here (None)."""
        try:
            env = envelope.decode(msg)
        except msgspec.DecodeError as e:
            kind = "invalid_frame" if isinstance(e, msgspec.ValidationError) else "malformed_json"
            self.skipped.skip(kind, msg, e)
            return None
        if env.data is NO_DATA:
            if env.success is False:
                self.venue_errors.append(env.ret_msg)
                self.skipped.skip("venue_error", msg)
                return None
            if env.success:
                return None   # subscribe acknowledgement or pong
            self.skipped.skip("invalid_frame", msg)
            return None
        kind, _, rest = env.topic.partition(".")
        decoder = row_decoders.get(kind)
        if decoder is None or (kind == "kline" and not rest.startswith("1.")):
            self.skipped.skip("unknown_channel", msg)
            return None
        try:
            rows = decoder.decode(env.data)
            if kind == "tickers":
                return TickerFrame(rows, env.type, env.ts)
            if kind == "kline":
                return KlineFrame(env.topic, tuple(rows))
            if kind == "allLiquidation":
                return LiqFrame(env.topic, rows)
            self._trades(rows, env.ts, msg, receipt)
        except msgspec.DecodeError as e:
            self.skipped.skip("invalid_frame", msg, e)
        except ValueError as e:
            self.skipped.skip("bad_number", msg, e)
        except Exception as e:  # the sink's failure: counted like Binance's, never raised
            self.skipped.skip("handler_error", msg, e)
        return None

    def _known(self, name: str, msg: str | bytes) -> bool:
        if name in self.symbols:
            return True
        self.skipped.skip("unknown_symbol", msg)
        return False

    def _trades(self, rows: list[Trade], ts: int, msg: str | bytes, receipt: float) -> None:
        on_trade = self.sink.on_trade
        for r in rows:
            if self._known(r.s, msg):
                on_trade(UuidTrade(ts, r.s, 0, r.p, r.v, 0, 0, r.T, r.S == "Sell", r.i), receipt)

    def _liquidations(self, rows: list[Liq], msg: str | bytes, receipt: float) -> None:
        for r in rows:
            if not self._known(r.s, msg):
                continue
            order = LiquidationOrder(r.s, _POSITION_TO_ORDER_SIDE[r.S], NOT_GIVEN, NOT_GIVEN, r.v, r.p, r.p,
                                     NOT_GIVEN, r.v, r.v, r.T)
            self.sink.on_liquidation(ForceOrder(r.T, order), receipt)

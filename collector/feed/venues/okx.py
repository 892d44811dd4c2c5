"""OKX v5 USDT-margined perpetual swaps: universe, subscriptions and a lean frame decoder.

Why: the collector's pipeline consumes collector.feed.wire's structs; this turns OKX's public WebSocket frames
(`/ws/v5/public`: trades, funding-rate, open-interest, mark-price, liquidation-orders; `/ws/v5/business`:
candle1m) into those structs: one msgspec decode for a push in OKX's usual key order, else two (envelope,
then the channel's rows; the frame shapes are in venues/okx_frames); no Decimal, no object beyond the struct;
contract sizes applied on the strings so amounts are base units.

Mapping (OKX -> wire struct; venues/__init__ has the table for both venues):
- trades -> OkxTrade (an AggTrade decoded straight from the row, collector.feed.wire): a = tradeId,
  f = tradeId - count + 1, q = sz * ctVal, T = ts; the pipeline makes l = a, m = side == "sell", E = T of the
  trades it keeps (OkxTrade.agg). A push aggregates the `count` fills of one taker order at one price and
  carries the LAST fill's id (OKX's docs: tradeId 123 with count 3 covers fills 121..123); fill ids go up by
  one per instrument, so the next push's f follows this push's l (collector.pipeline.router.TRADE_ID_RULES).
- funding-rate and mark-price -> MarkPrice: OKX sends the funding rate (every 30-90 s) apart from the mark
  price (every second), so the decoder keeps both per instrument and every push of either emits the merged
  MarkPrice (p = "" until a mark price was seen, r = "" and T = 0 until a rate was: after a worker restart or
  a full restart the pipeline fills in the rate last sent, from the checkpoint or the `checkpoints` table;
  either rate only until shortly after its settlement, collector.pipeline.funding_rates); T = fundingTime,
  the settlement of the rate sent.
- open-interest -> OpenInterest: openInterest = oi * ctVal (equals oiCcy), time = ts.
- liquidation-orders -> ForceOrder per detail: S = side (the liquidation order's side, Binance's
  convention), q = z = l = sz * ctVal, p = ap = bkPx (bankruptcy price; OKX publishes no fill price),
  o = f = X = "" (not published).
- candle1m -> Kline: v = volCcy (base), q = volCcyQuote, x = confirm == "1", n = -1 and V = Q = ""
  (not published), t = ts, T = t + 59999, E = t (the frame carries no event time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import msgspec

from collector.feed.events import EventSink
from collector.feed.venues.common import (
    NO_COUNT,
    NOT_GIVEN,
    ContractSize,
    OpenInterestGate,
    SkipCounter,
    VenueSymbol,
    normalized,
)
from collector.feed.venues.okx_frames import (
    CANDLE_B,
    CANDLE_S,
    CHANNEL_AT,
    MARK_B,
    MARK_S,
    NO_DATA,
    OI_B,
    OI_S,
    PUSH_B,
    PUSH_S,
    TRADES_B,
    TRADES_S,
    Arg,
    Funding,
    Liq,
    MarkFrame,
    OIFrame,
    Push,
    Trade,
    candle_frame,
    envelope,
    frames,
    frames_b,
    mark_frame,
    oi_frame,
    row_decoders,
    trades_frame,
)
from collector.feed.wire import (
    ForceOrder,
    Kline,
    KlineBody,
    LiquidationOrder,
    MarkPrice,
    OkxTrade,
    OpenInterest,
)

VENUE = "okx"
PUBLIC_PATH = "/ws/v5/public"
BUSINESS_PATH = "/ws/v5/business"
INSTRUMENTS_PATH = "/api/v5/public/instruments?instType=SWAP"
# Data type (the collector's names) -> OKX channels; liquidation-orders is one subscription for all swaps.
CHANNELS = {"trades": ("trades",), "funding": ("funding-rate", "mark-price"), "liquidations": ("liquidation-orders",),
            "candles_1m": ("candle1m",), "open_interest": ("open-interest",)}
BUSINESS_CHANNELS = frozenset({"candle1m"})
# OKX caps one request at 64 KB; 100 args of ~50 bytes stay far below it.
ARGS_PER_MESSAGE = 100
MINUTE_MS = 60_000


def parse_instruments(body: Mapping[str, Any]) -> list[VenueSymbol]:
    """USDT-settled linear SWAPs in state live from `GET /api/v5/public/instruments?instType=SWAP`, by name.

    ValueError if the answer is not a successful OKX envelope; entries that are malformed, not USDT-margined
    linear perpetuals, or not live are left out.
    """
    if str(body.get("code")) != "0" or not isinstance(body.get("data"), list):
        raise ValueError(f"OKX instruments: not a successful answer (code {body.get('code')!r})")
    out: dict[str, VenueSymbol] = {}
    for e in body["data"]:
        if not isinstance(e, dict) or e.get("instType") != "SWAP" or e.get("settleCcy") != "USDT":
            continue
        if e.get("state") != "live" or e.get("ctType", "linear") != "linear" or e.get("ctMult", "1") != "1":
            continue
        name = e.get("instId")
        if not isinstance(name, str):
            continue
        parts = name.split("-")
        if len(parts) != 3 or parts[1:] != ["USDT", "SWAP"] or e.get("ctValCcy", parts[0]) != parts[0]:
            continue
        try:
            out[name] = VenueSymbol(VENUE, name, normalized(parts[0]), ContractSize(str(e.get("ctVal"))))
        except ValueError:
            continue
    return [out[k] for k in sorted(out)]


def subscribe_messages(inst_ids: Iterable[str], data_types: Iterable[str],
                       per_message: int = ARGS_PER_MESSAGE) -> dict[str, list[str]]:
    """WebSocket path -> the `{"op":"subscribe","args":[{channel, instId}..]}` texts to send on it.

    candle1m lives on /ws/v5/business, the rest on /ws/v5/public; liquidation-orders takes instType SWAP.
    """
    channels = [c for t in data_types for c in CHANNELS.get(t, ())]
    names = list(inst_ids)
    args: dict[str, list[dict[str, str]]] = {PUBLIC_PATH: [], BUSINESS_PATH: []}
    for ch in dict.fromkeys(channels):
        path = BUSINESS_PATH if ch in BUSINESS_CHANNELS else PUBLIC_PATH
        if ch == "liquidation-orders":
            args[path].append({"channel": ch, "instType": "SWAP"})
        else:
            args[path].extend({"channel": ch, "instId": n} for n in names)
    enc = msgspec.json.encode
    return {path: [enc({"op": "subscribe", "args": a[i:i + per_message]}).decode()
                   for i in range(0, len(a), per_message)]
            for path, a in args.items() if a}


# The channels handle_batch hands to a method (the others it handles inline).
_OTHER_ROWS = ("funding-rate", "liquidation-orders")


class _FundingState:
    __slots__ = ("mark", "rate", "time")

    def __init__(self) -> None:
        self.mark, self.rate, self.time = NOT_GIVEN, NOT_GIVEN, 0


class OkxDecoder:
    """OKX frames -> the sink's on_trade / on_mark_price / on_liquidation / on_kline / on_open_interest.

    `symbols` are the instruments collected (parse_instruments); frames of any other instrument are
    skipped as unknown_symbol (their contract size is unknown). A frame that cannot be used is counted in
    `skipped` by kind and never raises.
    """

    def __init__(self, symbols: Iterable[VenueSymbol], sink: EventSink, conn_id: str = "okx",
                 oi_gate: OpenInterestGate | None = None) -> None:
        self.symbols = {s.name: s for s in symbols}
        self.sink = sink
        # name -> its contract size's cache of conversions, read directly by the trades loop
        self._sizes = {s.name: s.contract.converted for s in self.symbols.values()}
        self.skipped = SkipCounter(sink, conn_id)
        self.funding: dict[str, _FundingState] = {}
        self.venue_errors: list[str] = []
        # The gate the sink applies to open interest (collector.feed.venue_feed.GatedSink), if any: an event it
        # would refuse is not built.
        self.oi_gate = oi_gate
        self._handlers: dict[str, Any] = {ch: getattr(self, "_" + ch.replace("-", "_")) for ch in _OTHER_ROWS}

    def handle(self, msg: str | bytes, receipt: float) -> None:
        """One frame: handle_batch of one."""
        self.handle_batch((msg,), receipt)

    def handle_batch(self, messages: Sequence[str | bytes], receipt: float) -> None:
        """Every frame of one socket read, in order: one Python call per read, not per frame, as Binance's
        FastBinanceFutures.handle_batch (bench/venue_cost.py). Pushes in OKX's usual key order are decoded
        in one pass; _general decodes the rest (envelope, then rows), handles answers and names what is wrong,
        and hands pushes in another key order back here, so each channel is handled by one piece of code
        (trades apart: the general path converts OKX's id strings itself)."""
        sink, symbols, sizes, funding = self.sink, self.symbols, self._sizes, self.funding
        on_trade, on_mark, on_kline = sink.on_trade, sink.on_mark_price, sink.on_kline
        oi_due = self.oi_gate.due if self.oi_gate is not None else None
        for msg in messages:
            if isinstance(msg, str):
                trades = msg.startswith(TRADES_S)
                full = (None if trades else candle_frame if msg.startswith(CANDLE_S)
                        else mark_frame if msg.startswith(MARK_S) else oi_frame if msg.startswith(OI_S)
                        else None if not msg.startswith(PUSH_S)
                        else frames.get(msg[CHANNEL_AT:msg.find('"', CHANNEL_AT)]))
            else:
                trades = msg.startswith(TRADES_B)
                full = (None if trades else candle_frame if msg.startswith(CANDLE_B)
                        else mark_frame if msg.startswith(MARK_B) else oi_frame if msg.startswith(OI_B)
                        else None if not msg.startswith(PUSH_B)
                        else frames_b.get(msg[CHANNEL_AT:msg.find(b'"', CHANNEL_AT)]))
            if trades:
                try:
                    frame = trades_frame.decode(msg)
                except msgspec.DecodeError:
                    self._general(msg, receipt)  # names the problem
                    continue
                # The hottest loop of the venue: each row is already the OkxTrade handed on (ids and times
                # ints); only its size's conversion (read from its cache) and its first fill id are set here
                try:
                    for r in frame.data:
                        converted = sizes.get(r.s)
                        if converted is None:
                            self.skipped.skip("unknown_symbol", msg)
                            continue
                        sz = r.q
                        r.q = converted.get(sz) or symbols[r.s].contract.base_units(sz)
                        r.f = r.a - r.count + 1
                        on_trade(r, receipt)
                except ValueError as e:
                    self.skipped.skip("bad_number", msg, e)
                except Exception as e:  # the sink's failure: counted like Binance's, never raised
                    self.skipped.skip("handler_error", msg, e)
                continue
            push: Any = None
            if full is not None:
                try:
                    push = full.decode(msg)
                except msgspec.DecodeError:
                    pass
            if push is None:
                push = self._general(msg, receipt)  # another key order, an answer, or not decodable
                if push is None:
                    continue
            try:
                if type(push) is MarkFrame:  # every second per instrument
                    for mark in push.data:
                        name = mark.instId
                        if name not in symbols:
                            self.skipped.skip("unknown_symbol", msg)
                            continue
                        st = funding.get(name) or self._state(name)
                        st.mark = mark.markPx
                        on_mark(MarkPrice(int(mark.ts), name, st.mark, NOT_GIVEN, NOT_GIVEN, st.rate, st.time),
                                receipt)
                    continue
                if type(push) is OIFrame:  # every few seconds per instrument, most refused by the gate
                    for oi_row in push.data:
                        name = oi_row.instId
                        vs = symbols.get(name)
                        if vs is None:
                            self.skipped.skip("unknown_symbol", msg)
                            continue
                        # checked before the gate: a bad one is counted
                        oi, ts = vs.contract.base_units(oi_row.oi), int(oi_row.ts)
                        if oi_due is None or oi_due(name, ts):
                            sink.on_open_interest(OpenInterest(name, oi, ts), receipt)
                    continue
                arg = push.arg
                channel = arg.channel
                if channel == "candle1m":
                    name = arg.instId  # a candle row is a bare array: the instrument is only in `arg`
                    if name not in symbols:
                        self.skipped.skip("unknown_symbol", msg)
                        continue
                    for ts_text, o, h, lo, c, _vol, vol_ccy, vol_quote, confirm in push.data:
                        t = int(ts_text)
                        on_kline(Kline(t, name, KlineBody(t, t + MINUTE_MS - 1, name, "1m", o, c, h, lo, vol_ccy,
                                                          NO_COUNT, confirm == "1", vol_quote, NOT_GIVEN, NOT_GIVEN)),
                                 receipt)
                else:
                    self._handlers[channel](push.data, arg, msg, receipt)
            except ValueError as e:
                self.skipped.skip("bad_number", msg, e)
            except Exception as e:  # the sink's failure: counted like Binance's, never raised
                self.skipped.skip("handler_error", msg, e)

    def _general(self, msg: str | bytes, receipt: float) -> Any:
        """Any frame, envelope then rows: answers, pings, other key orders, and what the one-pass paths refuse.
        A push of any channel but trades comes back as {arg, data} (a mark-price push as MarkFrame, the shape of
        its one-pass decoder) for handle_batch to handle; anything else is handled or counted here (None)."""
        if msg == "pong" or msg == b"pong":
            return None
        try:
            env = envelope.decode(msg)
        except msgspec.DecodeError as e:
            kind = "invalid_frame" if isinstance(e, msgspec.ValidationError) else "malformed_json"
            return self.skipped.skip(kind, msg, e)
        if env.arg is None or env.data is NO_DATA:
            if env.event == "error":
                self.venue_errors.append(f"{env.code} {env.msg}")
                return self.skipped.skip("venue_error", msg)
            if env.event in ("subscribe", "unsubscribe"):
                return None
            if env.event == "notice":  # e.g. 64008: the connection will be closed for a service upgrade
                self.venue_errors.append(f"{env.code} {env.msg}")
                return self.skipped.skip("venue_notice", msg)
            return self.skipped.skip("unknown_event" if env.event else "invalid_frame", msg)
        channel = env.arg.channel
        decoder = row_decoders.get(channel)
        if decoder is None:
            return self.skipped.skip("unknown_channel", msg)
        try:
            rows = decoder.decode(env.data)
            if channel == "mark-price":
                return MarkFrame(tuple(rows))
            if channel == "open-interest":
                return OIFrame(tuple(rows))
            if channel != "trades":
                return Push(env.arg, rows)
            self._trades(rows, env.arg, msg, receipt)
        except msgspec.DecodeError as e:
            self.skipped.skip("invalid_frame", msg, e)
        except ValueError as e:
            self.skipped.skip("bad_number", msg, e)
        except Exception as e:  # the sink's failure: counted like Binance's, never raised
            self.skipped.skip("handler_error", msg, e)
        return None

    def _symbol(self, name: str, msg: str | bytes) -> VenueSymbol | None:
        s = self.symbols.get(name)
        if s is None:
            self.skipped.skip("unknown_symbol", msg)
        return s

    def _trades(self, rows: list[Trade], arg: Arg, msg: str | bytes, receipt: float) -> None:
        on_trade = self.sink.on_trade
        for r in rows:
            s = self._symbol(r.instId, msg)
            if s is None:
                continue
            tid, n = int(r.tradeId), int(r.count)
            if n < 1:
                raise ValueError(f"count {n} < 1")
            on_trade(OkxTrade(s=r.instId, a=tid, p=r.px, q=s.contract.base_units(r.sz), T=int(r.ts), f=tid - n + 1,
                              side=r.side, count=n), receipt)

    def _state(self, name: str) -> _FundingState:
        st = self.funding.get(name)
        if st is None:
            st = self.funding[name] = _FundingState()
        return st

    def _emit_funding(self, name: str, st: _FundingState, ts: int, receipt: float) -> None:
        self.sink.on_mark_price(MarkPrice(ts, name, st.mark, r=st.rate, T=st.time), receipt)

    def _funding_rate(self, rows: Sequence[Funding], arg: Arg, msg: str | bytes, receipt: float) -> None:
        for r in rows:
            if self._symbol(r.instId, msg) is None:
                continue
            st = self._state(r.instId)
            st.rate, st.time = r.fundingRate, int(r.fundingTime)
            self._emit_funding(r.instId, st, int(r.ts), receipt)

    def _liquidation_orders(self, rows: list[Liq], arg: Arg, msg: str | bytes, receipt: float) -> None:
        # One subscription carries every swap's liquidations (instType SWAP): those of instruments this
        # decoder does not serve belong to another worker of the venue, or to a swap not collected (coin- or
        # USDC-margined); not a bad frame, so skipped without a count.
        for r in rows:
            s = self.symbols.get(r.instId)
            if s is None:
                continue
            for d in r.details:
                qty, ts = s.contract.base_units(d.sz), int(d.ts)
                order = LiquidationOrder(r.instId, d.side.upper(), NOT_GIVEN, NOT_GIVEN, qty, d.bkPx, d.bkPx,
                                         NOT_GIVEN, qty, qty, ts)
                self.sink.on_liquidation(ForceOrder(ts, order), receipt)

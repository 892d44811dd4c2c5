"""OKX and Bybit USDT perpetuals in the shapes the pipeline already consumes (collector.feed.wire).

Why a package apart: Binance's lean path (wire.py, source.py) stays as it is; each venue module here holds
its universe parsing, its subscription messages and its lean decoder, as pure code (no I/O, no cryptofeed).
Names: every symbol keeps the venue's own name (events carry it in `s` / `symbol`) and one normalized name,
`<BASE>-USDT-PERP` (common.normalized, common.binance_normalized); amounts are base units on every venue.

| wire struct  | OKX v5 (okx.py)                                   | Bybit v5 (bybit.py)                          |
|--------------|---------------------------------------------------|----------------------------------------------|
| AggTrade     | trades; a = l = tradeId, f = a-count+1, sz*ctVal  | publicTrade; UuidTrade (u = i), q = v        |
| MarkPrice    | funding-rate + mark-price merged per instrument   | tickers snapshot + deltas merged per symbol  |
| OpenInterest | open-interest; oi * ctVal                         | tickers openInterest (base units)            |
| ForceOrder   | liquidation-orders; side = order side, sz * ctVal | allLiquidation; position side -> order side  |
| Kline        | candle1m; n = -1, V = Q = "" (not published)      | kline.1; n = -1, V = Q = "" (not published)  |

Fields a venue does not publish are "" (strings) or -1 (counts): see each module's docstring.
"""

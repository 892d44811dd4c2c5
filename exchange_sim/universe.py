"""The instrument list: which symbols exist, their tick/step sizes, their activity share and listing status.

Kept apart from the market model because exchangeInfo, the rate of each symbol and listing/delisting all
need the same view of "what is listed", while the price process does not care.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

# Real USDT-M perpetual base assets, roughly by activity, so the busiest simulated names look familiar.
REAL_BASES = (
    "BTC ETH SOL XRP DOGE BNB 1000PEPE SUI ADA WIF LINK AVAX TRX LTC ENA BCH NEAR DOT 1000SHIB ORDI "
    "APT ARB OP TIA WLD FIL ETC INJ SEI UNI 1000BONK FET RENDER AAVE STX ATOM XLM HBAR JUP ONDO "
    "TON NOT PYTH STRK ZRO BLUR LDO MKR CRV IMX GALA SAND MANA AXS APE DYDX GMX ENS COMP SNX YFI "
    "SUSHI 1INCH ALGO EGLD FTM ICP VET THETA XTZ EOS NEO KAVA ZEC DASH ZIL CHZ ENJ BAT KSM ARKM AR "
    "ROSE GRT MINA FLOW QNT IOTA CFX RUNE TAO JTO W PENDLE ETHFI BOME MEME PEOPLE"
).split()

# Weight exponent of the Zipf law: with s=1.1 over ~500 names the top 2% carry roughly half the trades,
# which is what Binance's 24h trade counts look like.
ZIPF_S = 1.1

# Rough USD price levels for the real names; the rest get a log-uniform price.
_KNOWN_PRICES = {"BTC": 65000.0, "ETH": 3200.0, "SOL": 150.0, "BNB": 580.0, "XRP": 0.55, "DOGE": 0.14,
                 "ADA": 0.45, "AVAX": 30.0, "LINK": 14.0, "LTC": 80.0, "BCH": 400.0, "DOT": 6.5,
                 "TRX": 0.12, "1000PEPE": 0.011, "1000SHIB": 0.02, "1000BONK": 0.025}

SETTLE_ASSETS = ("USDT",)


@dataclass
class SymbolSpec:
    """Static description of one instrument, exactly what exchangeInfo publishes about it."""
    name: str
    base: str
    quote: str
    contract_type: str
    status: str
    price_dp: int
    qty_dp: int
    base_price: float
    weight: float            # share of the market's trades (sums to 1 over tradable symbols)
    onboard_ms: int
    delivery_ms: int = 4133404800000  # Binance's "never" for perpetuals
    tradable: bool = True    # False for the decoys a collector must ignore

    @property
    def tick(self) -> str:
        return _pow10_str(-self.price_dp)

    @property
    def step(self) -> str:
        return _pow10_str(-self.qty_dp)


def _pow10_str(e: int) -> str:
    if e >= 0:
        return "1" + "0" * e
    return "0." + "0" * (-e - 1) + "1"


def _generated_bases(n: int, taken: set[str]) -> list[str]:
    # Fixed seed: names must not change with --seed, so a collector's tables stay comparable across runs.
    rng = random.Random(20240101)
    consonants, vowels = "BCDFGHJKLMNPRSTVWXZ", "AEIOU"
    out: list[str] = []
    while len(out) < n:
        k = rng.choice((3, 3, 4, 4, 4, 5))
        name = "".join(rng.choice(consonants if i % 2 == 0 else vowels) for i in range(k))
        if rng.random() < 0.15:
            name += str(rng.randint(1, 9))
        if name not in taken and name + "USDT" not in taken:
            taken.add(name)
            out.append(name)
    return out


def _precisions(price: float) -> tuple[int, int]:
    # About five significant digits of price, and a quantity step worth roughly a few USD, as Binance does.
    price_dp = max(0, min(8, 5 - math.floor(math.log10(price))))
    qty_exp = min(0, max(-3, math.floor(math.log10(10.0 / price)) + 1))
    return price_dp, -qty_exp


def build_universe(n: int, start_ms: int) -> list[SymbolSpec]:
    """The n tradable USDT perpetuals (activity-ordered), then decoys a collector has to filter out."""
    bases = list(REAL_BASES[:n])
    bases += _generated_bases(n - len(bases), set(bases))
    price_rng = random.Random(99)
    raw_w = [1.0 / (rank + 1) ** ZIPF_S for rank in range(n)]
    total = sum(raw_w)
    specs = []
    for i, base in enumerate(bases):
        price = _KNOWN_PRICES.get(base) or math.exp(price_rng.uniform(math.log(0.002), math.log(300.0)))
        pdp, qdp = _precisions(price)
        # Onboard dates spread over past years: realistic, and not all identical.
        onboard = 1569398400000 + int(price_rng.random() * (start_ms - 1569398400000) * 0.9)
        specs.append(SymbolSpec(base + "USDT", base, "USDT", "PERPETUAL", "TRADING", pdp, qdp, price,
                                raw_w[i] / total, onboard))
    specs.extend(decoys(start_ms))
    return specs


def decoys(start_ms: int) -> list[SymbolSpec]:
    """Listed entries that are not TRADING USDT perpetuals: other quote assets, delivery, halted."""
    def d(name, base, quote, ctype, status, price):
        pdp, qdp = _precisions(price)
        return SymbolSpec(name, base, quote, ctype, status, pdp, qdp, price, 0.0, 1600000000000,
                          tradable=False)
    quarter = d("BTCUSDT_261225", "BTC", "USDT", "CURRENT_QUARTER", "TRADING", 66000.0)
    quarter.delivery_ms = 1798185600000
    nq = d("ETHUSDT_270326", "ETH", "USDT", "NEXT_QUARTER", "TRADING", 3250.0)
    nq.delivery_ms = 1806048000000
    return [
        d("BTCUSDC", "BTC", "USDC", "PERPETUAL", "TRADING", 65010.0),
        d("ETHUSDC", "ETH", "USDC", "PERPETUAL", "TRADING", 3201.0),
        d("ETHBUSD", "ETH", "BUSD", "PERPETUAL", "TRADING", 3199.0),
        quarter, nq,
        d("OLDCOINUSDT", "OLDCOIN", "USDT", "PERPETUAL", "SETTLING", 0.5),
        d("NEWCOINUSDT", "NEWCOIN", "USDT", "PERPETUAL", "PENDING_TRADING", 1.0),
    ]


def new_listing(name: str, now_ms: int, price: float = 1.0) -> SymbolSpec:
    """A symbol listed at run time. Its activity share is small, like a fresh listing's."""
    base = name[:-4] if name.endswith("USDT") else name
    pdp, qdp = _precisions(price)
    return SymbolSpec(name, base, "USDT", "PERPETUAL", "TRADING", pdp, qdp, price, 0.0005, now_ms)

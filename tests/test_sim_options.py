"""`--sim-symbols` / `--sim-rate` per venue: the pure parser and the resolution of each simulator's options,
and the one-line exit-2 errors of `collector run` / `supervisor.py` for bad values."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from collector.sim_options import EVERY_VENUE, options_for, per_venue
from exchange_sim.config import DEFAULT_SYMBOLS, SimConfig

ROOT = Path(__file__).resolve().parent.parent
symbols = per_venue(int, 1, "N")
rate = per_venue(float, 0, "RATE")


def test_a_bare_number_is_every_venues_and_venue_values_override_it() -> None:
    assert symbols("496,okx=250, bybit=400") == {EVERY_VENUE: 496, "okx": 250, "bybit": 400}
    assert symbols("okx=3") == {"okx": 3}
    assert rate("0.5") == {EVERY_VENUE: 0.5}


def test_each_simulator_gets_its_own_value_else_the_default_else_its_venues_size() -> None:
    opts = {"symbols": {EVERY_VENUE: 9, "okx": 4}, "rate": {"bybit": 7.0}, "speed": 10.0, "seed": 7}
    assert options_for(opts, "okx") == {"symbols": 4, "speed": 10.0, "seed": 7, "venue": "okx"}
    assert options_for(opts, "binance") == {"symbols": 9, "speed": 10.0, "seed": 7, "venue": "binance"}
    assert options_for(opts, "bybit")["rate"] == 7.0
    # nothing given: each simulator lists its venue's real-market size
    sizes = {v: SimConfig(**options_for({"symbols": {}}, v)).symbols for v in ("binance", "okx", "bybit")}
    assert sizes == DEFAULT_SYMBOLS == {"binance": 496, "okx": 250, "bybit": 400}


@pytest.mark.parametrize(("text", "names"), [
    ("kraken=5", "unknown venue 'kraken'"),
    ("okx=5,okx=6", "okx given twice"),
    ("5,6", "a bare number given twice"),
    ("okx=many", "expected N or venue=N (e.g. 496,okx=250), got 'okx=many'"),
    ("", "got ''"),
    ("okx=0", "'okx=0': must be at least 1"),
])
def test_bad_values_say_what_is_wrong(text: str, names: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=re.escape(names)):
        symbols(text)


def test_nan_rate_is_refused() -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="must be at least 0"):
        rate("nan")


@pytest.mark.parametrize(("args", "names"), [
    (["--sim-symbols", "496,ftx=3"], "supervisor.py: error: argument --sim-symbols: unknown venue 'ftx'"),
    (["--sim-rate", "okx=-1"], "supervisor.py: error: argument --sim-rate: 'okx=-1': must be at least 0"),
])
def test_supervisor_py_bad_values_are_one_line_and_exit_2(args: list[str], names: str) -> None:
    r = subprocess.run([sys.executable, str(ROOT / "supervisor.py"), *args], capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 2 and r.stdout == "", r.stdout + r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and names in r.stderr, r.stderr

"""A small, fast simulator per test module (thread-hosted so tests can use the Python API directly)."""

from __future__ import annotations

import pytest

from exchange_sim import SimConfig, run_in_thread


@pytest.fixture
def sim():
    # speed 60: one sim minute per wall second, so klines close quickly.
    h = run_in_thread(SimConfig(port=0, symbols=40, rate=200, speed=60, seed=7, ping_interval_s=0.5,
                                pong_timeout_s=2.0))
    try:
        yield h
    finally:
        h.stop()

"""Exchange simulator on loopback: Binance USDT-M (default), OKX v5 or Bybit v5 wire format (REST + WebSocket).

Entry points: `python -m exchange_sim`, `SimConfig` + `Simulator` (async), `run_in_thread(cfg)` and
`launch_subprocess(cfg)` (see runner.py).
"""

from .config import SimConfig
from .runner import SimHandle, SimProcess, launch_subprocess, run_in_thread
from .simulator import Simulator

__all__ = ["SimConfig", "SimHandle", "SimProcess", "Simulator", "launch_subprocess", "run_in_thread"]

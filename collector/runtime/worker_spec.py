"""What the supervisor hands a worker process, and the process's entry point, without the worker's imports.

Why apart from collector.runtime.worker: the supervisor builds a `WorkerSpec` and names the process target
for every worker it starts, and must not need cryptofeed, aiohttp, uvloop, picows and the pipeline for
that (about 11 MB). It does import them once, through collector.runtime.preload, just before it forks the
forkserver (collector.runtime.forkserver), so they are pages it shares with the server and every child;
where that fork cannot be made (a second thread already running) they stay out of the supervisor. This
module only needs the config and plain types; `run_worker` imports the worker module in the child, where
the forkserver has imported it already.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Event as MpEvent
from typing import Any

from collector.config import Config
from collector.feed.endpoints import Endpoints
from collector.pipeline.tiers import TierAssignment


@dataclass
class WorkerSpec:
    index: int
    total: int
    symbols: list[str]
    config: Config
    endpoints: Endpoints
    socket_path: str  # the writer's (collector.transport.link)
    control: Queue[Any]  # from the supervisor: ("tiers", {symbol: TierAssignment}) or ("config", Config)
    stop: MpEvent
    stats_name: str | None = None  # the supervisor's shared-memory statistics block (collector.runtime.shm)
    symbol_slots: dict[str, int] = field(default_factory=dict)  # symbol -> its slot in that block
    tiers: dict[str, TierAssignment] = field(default_factory=dict)
    # True when `tiers` are the ticker/24hr estimate (no stored or live tiers yet): the worker then
    # refines each threshold from the symbol's own trades until live tiers arrive.
    tiers_provisional: bool = False
    checkpoints_name: str | None = None  # the supervisor's checkpoint block (collector.runtime.checkpoints)
    # A predecessor still collects these symbols: hold events until the supervisor says it has exited
    handover: bool = False
    rest_weight_share: float = 1.0  # of the collector's REST weight budget (without rest_budget_path)
    rest_budget_path: str | None = None  # the process tree's shared REST budget (collector.feed.rest_budget)
    dsn: str | None = None  # where the gaps table is read back (unfinished repairs to take over)
    # The one venue this worker serves (collection.exchanges; collector.runtime.venue_shards); `endpoints`
    # are that venue's, `symbols` in its own spelling.
    venue: str = "binance"



def run_worker(spec: WorkerSpec) -> None:
    """Process entry point: collector.runtime.worker.run_worker, imported here, in the child.

    An import that fails (a broken or half-updated install) is a boot error with its reason, as any failure
    before the worker has booted: the supervisor then stops with that reason in its log instead of
    restarting, for ever, a worker whose only trace was "exit code 1" and a traceback on stderr."""
    try:
        from collector.runtime.worker import run_worker as run
    except Exception as e:
        from pathlib import Path

        from collector.runtime.exitcodes import exit_boot_error

        exit_boot_error(Path(spec.socket_path).parent, f"worker-{spec.index + 1}", e)
    run(spec)

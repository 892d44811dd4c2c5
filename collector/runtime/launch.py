"""What each child process is started as: its target and what it is handed, from the supervisor's state.

Why apart from collector.runtime.arbiter: the arbiter decides when a child starts (at boot, after a death
with back-off, as a successor) and watches it; what the child receives is a different question, answered
from the bootstrap's resources and the coordinator's current shards and tiers: the writer's WriterSpec, a
worker's WorkerSpec, the read API's configuration path. The child modules are imported here, when a
process is made, not at import (collector.runtime.worker_spec says why).
"""

from __future__ import annotations

from multiprocessing.context import ForkServerContext
from multiprocessing.process import BaseProcess
from typing import TYPE_CHECKING

from collector.config import Config
from collector.runtime.children import Child

if TYPE_CHECKING:
    from collector.runtime.bootstrap import Resources
    from collector.runtime.coordinator import Coordinator


def child_process(ctx: ForkServerContext, child: Child, config_path: str, cfg: Config, res: Resources,
                  co: Coordinator) -> BaseProcess:
    """The process (not started) for `child`; sets the child's stop event, and a worker's control queue and
    symbols, which the arbiter keeps for the process's lifetime."""
    from collector.runtime.worker_spec import WorkerSpec, run_worker
    from collector.writer.main import WriterSpec, run_writer

    assert res.endpoints is not None and res.dsn is not None and res.stats is not None
    child.stop = stop = ctx.Event()
    if child.role == "api":  # stopped with SIGTERM (uvicorn's graceful shutdown), not the event
        from collector.api.serve import run_child

        return ctx.Process(target=run_child, args=(config_path, res.dsn), name="api")
    if child.role == "writer":
        wspec = WriterSpec(config=cfg, dsn=res.dsn, socket_path=res.socket_path, stop=stop,
                           stats_name=res.stats.name)
        return ctx.Process(target=run_writer, args=(wspec,), name="writer", daemon=False)
    child.control = ctx.Queue()
    symbols, tiers, provisional, slots = co.worker_inputs(child.index)
    child.symbols = symbols
    total = len(res.shards)
    venue = co.worker_venue(child.index)
    spec = WorkerSpec(index=child.index, total=total, symbols=symbols, config=cfg, venue=venue,
                      endpoints=co.endpoints_of(venue), socket_path=res.socket_path, control=child.control,
                      stop=stop, tiers=tiers, tiers_provisional=provisional, stats_name=res.stats.name,
                      symbol_slots=slots, rest_weight_share=1.0 / total,
                      rest_budget_path=res.rest_budget_path, dsn=res.dsn,
                      checkpoints_name=res.checkpoints.name if res.checkpoints else None,
                      handover=child.handover)
    return ctx.Process(target=run_worker, args=(spec,), name=f"worker-{child.index + 1}")

"""What a reloaded configuration changes (SIGHUP), decided apart from acting on it.

Why apart from the arbiter: which children a new file affects is a pure comparison of two configurations,
tested without processes; the arbiter only carries the plan out (replace workers, restart the writer or
the read API, restart the endpoints).
"""

from __future__ import annotations

from dataclasses import dataclass

from collector.config import Config


@dataclass(frozen=True)
class ReloadPlan:
    feeds: bool  # exchange or collection settings: workers are replaced one by one
    universe: bool  # the collection itself: the coordinator refreshes the universe and replaces the workers
    writer: bool  # database, writer or retention settings: the writer drains and restarts
    resolve_dsn: bool  # an external database's address is resolved again (a password may come from a file)
    embedded_switch: bool  # between the embedded and an external database: refused until a restart
    api: bool  # the read API's settings: its child restarts and reads the new file itself
    monitoring: bool  # the endpoints restart on the new address


def plan_reload(old: Config, new: Config) -> ReloadPlan:
    """The plan for replacing `old` by `new`; filter parameters, intervals and the log level apply live."""
    writer = old.database != new.database or old.writer != new.writer or old.retention != new.retention
    both_external = not new.database.embedded and not old.database.embedded
    return ReloadPlan(
        feeds=old.exchange != new.exchange or old.collection != new.collection,
        universe=old.collection != new.collection,
        writer=writer,
        resolve_dsn=writer and both_external,
        embedded_switch=writer and not both_external and new.database != old.database,
        api=old.api != new.api,
        monitoring=old.monitoring != new.monitoring,
    )

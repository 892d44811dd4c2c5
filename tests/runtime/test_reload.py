"""plan_reload: which parts a new configuration file affects (the arbiter carries the plan out)."""

from __future__ import annotations

import msgspec

from collector.config import Config, DatabaseConfig
from collector.runtime.reload import ReloadPlan, plan_reload


def _with(cfg: Config, **changes: object) -> Config:
    return msgspec.structs.replace(cfg, **changes)


def test_an_identical_file_changes_nothing() -> None:
    cfg = Config()
    assert plan_reload(cfg, Config()) == ReloadPlan(False, False, False, False, False, False, False)


def test_filter_settings_apply_live() -> None:
    old = Config()
    new = _with(old, filters=msgspec.structs.replace(old.filters, funding=msgspec.structs.replace(
        old.filters.funding, min_interval_s=old.filters.funding.min_interval_s * 2)))
    assert plan_reload(old, new) == ReloadPlan(False, False, False, False, False, False, False)


def test_a_new_collection_refreshes_the_universe_and_replaces_the_workers() -> None:
    old = Config()
    new = _with(old, collection=msgspec.structs.replace(old.collection, data_types=["trades"]))
    plan = plan_reload(old, new)
    assert plan.feeds and plan.universe and not plan.writer


def test_a_new_external_database_restarts_the_writer_on_the_new_address() -> None:
    old = _with(Config(), database=DatabaseConfig(host="db1"))
    new = _with(old, database=DatabaseConfig(host="db2"))
    plan = plan_reload(old, new)
    assert plan.writer and plan.resolve_dsn and not plan.embedded_switch and not plan.feeds


def test_switching_between_embedded_and_external_is_refused() -> None:
    old = Config()
    assert old.database.embedded
    plan = plan_reload(old, _with(old, database=DatabaseConfig(host="db2")))
    assert plan.writer and plan.embedded_switch and not plan.resolve_dsn


def test_api_and_monitoring_changes_restart_only_their_parts() -> None:
    old = Config()
    new = _with(old, api=msgspec.structs.replace(old.api, port=old.api.port + 1),
                monitoring=msgspec.structs.replace(old.monitoring, health_check_port=old.monitoring.health_check_port + 1))
    assert plan_reload(old, new) == ReloadPlan(False, False, False, False, False, True, True)

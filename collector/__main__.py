"""`python -m collector check`: the data-integrity report (exit code 1 when something is wrong, 2 when it
cannot run)."""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from collector.config import Config, ConfigError, load_config, parse_duration


def _since(value: str | None, now: float) -> datetime | None:
    """--since: an ISO 8601 time (UTC unless it says otherwise) or a duration back from now ('2h', '7d')."""
    if value is None:
        return None
    try:
        back = parse_duration(value, "--since")
    except ValueError:
        back = None
    if back is not None:
        return datetime.fromtimestamp(now, UTC) - back
    try:
        t = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"--since: expected a time like 2025-03-12T15:00 or a duration like 2h, got {value!r}"
                         ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collector")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check the stored data and print a report")
    c.add_argument("--config", default="config/main.yaml",
                   help="the collector's config: database, retention, funding interval, data types")
    c.add_argument("--dsn", help="database URL (default: database.url / host from the config)")
    c.add_argument("--embedded", action="store_true",
                   help="check the embedded database in database.embedded_dir (started if it is not running)")
    c.add_argument("--since", help="judge the span from this time (ISO 8601, UTC) or duration ago (2h, 7d); "
                                   "default: each symbol's first row within the last day")
    args = p.parse_args(argv)
    now = time.time()
    try:
        cfg = load_config(args.config)
        since = _since(args.since, now)
    except (ConfigError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.dsn:
        return _report(args.dsn, cfg, now, since)
    if args.embedded:
        from collector.db.embedded import EmbeddedPostgres

        datadir = Path(cfg.database.embedded_dir)
        if not (datadir / "PG_VERSION").exists():  # never create a cluster just to report it empty
            print(f"error: no embedded database in {datadir} (database.embedded_dir of {args.config}); "
                  "has the collector run with this config?", file=sys.stderr)
            return 2
        server = EmbeddedPostgres(datadir=datadir, database=cfg.database.database)
        dsn = server.start()  # attaches to the collector's server when it is running on that directory
        try:
            return _report(dsn, cfg, now, since)
        finally:
            server.stop()  # stops only a server this call started
    if cfg.database.embedded:
        print(f"error: {args.config} configures no database (no database.url or database.host): give --dsn, "
              f"or --embedded to check the embedded database in {cfg.database.embedded_dir}", file=sys.stderr)
        return 2
    from collector.runtime.bootstrap import database_dsn

    return _report(database_dsn(cfg), cfg, now, since)


def _report(dsn: str, cfg: Config, now: float, since: datetime | None) -> int:
    import psycopg

    from collector.db.check import NoCollectorSchema, run_check
    from collector.runtime.logs import mask_secrets

    try:
        report = run_check(dsn, None, now, retention=cfg.retention.periods(), since=since,
                           funding_interval_s=cfg.filters.funding.min_interval_s,
                           data_types=cfg.collection.data_types)
    except NoCollectorSchema as e:
        print(f"error: {e}; has the collector run against it?", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:
        print(f"error: cannot connect to the database: {mask_secrets(str(e).strip())}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

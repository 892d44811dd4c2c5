"""`python -m collector check`: the data-integrity report (exit code 1 when something is wrong)."""

from __future__ import annotations

import argparse
import sys
import time

from collector.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collector")
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("check", help="check the stored data and print a report")
    c.add_argument("--config", default="config/main.yaml")
    c.add_argument("--dsn", help="database URL (default: from the config; the embedded database must be running)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from collector.check import run_check

    if args.dsn:
        dsn = args.dsn
    elif cfg.database.embedded:
        from collector.pgserver import EmbeddedPostgres

        server = EmbeddedPostgres(datadir=cfg.database.embedded_dir, database=cfg.database.database)
        dsn = server.start()
        try:
            return _report(run_check, dsn, cfg)
        finally:
            server.stop()
    else:
        from collector.supervisor import database_dsn

        dsn = database_dsn(cfg)
    return _report(run_check, dsn, cfg)


def _report(run_check, dsn: str, cfg) -> int:  # noqa: ANN001
    import psycopg

    from collector.logs import mask_secrets

    try:
        report = run_check(dsn, None, time.time(), retention=cfg.retention.periods())
    except psycopg.errors.UndefinedTable as e:
        print(f"error: no collector tables in this database ({str(e).splitlines()[0]}); has the collector run "
              "against it?", file=sys.stderr)
        return 2
    except psycopg.OperationalError as e:
        print(f"error: cannot connect to the database: {mask_secrets(str(e).strip())}", file=sys.stderr)
        return 2
    print(report.format())
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())

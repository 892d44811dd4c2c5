"""`python -m collector api`: the read API as its own process (uvicorn serving collector.api.app).

Its own process, not a thread of the supervisor: a slow or heavy read can never stall the collector's
loop, and it can run as another OS user and database role. The rule that keeps it from leaking data is
checked here, before anything listens: bound to anything but loopback it needs a bearer token, or it
refuses to start (one line, exit 2). The token and the DSN are never logged.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from collector.config import Config, ConfigError, load_config

EXIT_USAGE = 2


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and 'localhost'; any other name or address counts as reachable from
    elsewhere (a hostname may resolve to a public address, so it is not given the benefit of the doubt)."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def token_problem(host: str, token: str | None) -> str | None:
    """The one-line refusal when `host` is off loopback and no token is configured, else None."""
    if token is None and not is_loopback(host):
        return (f"api.host {host} is not a loopback address: set api.token, api.token_file or the "
                f"environment variable named by api.token_env, or bind 127.0.0.1")
    return None


def startup_problem(cfg: Config) -> str | None:
    """Why the supervisor's --api role cannot start (one line), checked before anything is spawned."""
    import importlib.util

    if importlib.util.find_spec("fastapi") is None or importlib.util.find_spec("uvicorn") is None:
        return "--api needs the api extra: pip install -e '.[api]'"
    try:
        return token_problem(cfg.api.host, cfg.api.resolve_token())
    except ConfigError as e:
        return str(e)


def run_child(config_path: str, dsn: str) -> None:
    """The supervisor's API child (collector.runtime.arbiter): `collector api` on the collector's database.

    The DSN is passed in memory, not on a command line, where `ps` would show its password. Exit code 2
    means the configuration is wrong: the arbiter reports it and does not restart the child.
    """
    import setproctitle

    setproctitle.setproctitle("collector: api")
    raise SystemExit(main(["--config", config_path, "--dsn", dsn]))


@contextmanager
def _database(cfg: Config, config_path: str, dsn: str | None) -> Iterator[str]:
    """The DSN to read from: --dsn, api.database_url, the configured database, or the embedded one."""
    if dsn or cfg.api.database_url:
        yield dsn or cfg.api.database_url or ""
        return
    if not cfg.database.embedded:
        from collector.runtime.bootstrap import database_dsn

        yield database_dsn(cfg)
        return
    from collector.db.embedded import EmbeddedPostgres

    datadir = Path(cfg.database.embedded_dir)
    if not (datadir / "PG_VERSION").exists():  # never create a cluster just to serve it empty
        raise ConfigError(f"no embedded database in {datadir} (database.embedded_dir of {config_path}); "
                          "give --dsn or api.database_url, or run the collector first")
    server = EmbeddedPostgres(datadir=datadir, database=cfg.database.database)
    url = server.start()  # attaches to the collector's server when it is running on that directory
    try:
        yield url
    finally:
        server.stop()  # stops only a server this process started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m collector api",
                                description="Serve the read-only HTTP API (docs at /api/v1/docs).")
    p.add_argument("--config", default="config/main.yaml")
    p.add_argument("--host", help="bind address (default: api.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: api.port, 8081)")
    p.add_argument("--dsn", help="database URL (default: api.database_url, else the collector's database)")
    args = p.parse_args(argv)
    try:
        cfg = load_config(args.config)
        token = cfg.api.resolve_token()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    host = args.host or cfg.api.host
    port = cfg.api.port if args.port is None else args.port
    refusal = token_problem(host, token)
    if refusal is not None:
        print(f"error: {refusal}", file=sys.stderr)
        return EXIT_USAGE

    import uvicorn

    from collector.api.app import ApiSettings, create_app

    try:
        with _database(cfg, args.config, args.dsn) as dsn:
            settings = ApiSettings(dsn=dsn, token=token, max_rows=cfg.api.max_rows,
                                   default_rows=cfg.api.default_rows,
                                   statement_timeout_ms=cfg.api.statement_timeout_ms, pool_size=cfg.api.pool_size)
            app = create_app(settings)
            # The imports and the app (FastAPI, pydantic models, numpy, pyarrow) live as long as the process:
            # frozen, a full collection, which a large JSON page's row dicts can set off mid-request, walks
            # only the objects made since instead of the whole start-up heap (a request's latency tail).
            gc.collect()
            gc.freeze()
            uvicorn.run(app, host=host, port=port, log_level=cfg.logging.level.lower(), server_header=False)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return EXIT_USAGE
    return 0

"""First contact with the configured database: create it when it is missing, and say what went wrong.

What a user needs when the database refuses is the server's own message (`FATAL: database "collector"
does not exist`, `extension "timescaledb" must be preloaded`, ...) and, where the collector knows it, the
fix. describe() turns an error into that one line for the log, /health, /stats and the status page;
connect() creates a missing database when the configured role may (superuser or CREATEDB), from the
maintenance database `postgres`, and otherwise fails with one line naming the database and the fix.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from collector.db.mode import FIX_PRELOAD
from collector.runtime.logs import mask_secrets

log = logging.getLogger(__name__)

# Longest error text carried to /health and /stats (and the writer's shared-memory text, shm.TEXT_CAPACITY
# bytes): a server message plus its fix fits in ~300 characters; anything longer is a stack of context
# lines nobody reads on a status page.
MESSAGE_MAX_CHARS = 400
# The database every PostgreSQL cluster has, where CREATE DATABASE for a missing one is run.
MAINTENANCE_DB = "postgres"

_MISSING_DB = re.compile(r'database "(?P<name>[^"]+)" does not exist')

# (pattern in the server's or libpq's message, the fix); the first match wins.
FIXES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r'extension "timescaledb" must be preloaded'), FIX_PRELOAD),
    (_MISSING_DB, "create it, or give the collector's role CREATEDB so that it creates it at start"),
    (re.compile(r"password authentication failed"),
     "check database.password, password_env or password_file (or the password in database.url)"),
    (re.compile(r'role "[^"]+" does not exist'), "check database.user (or the user in database.url)"),
    (re.compile(r"no pg_hba\.conf entry"), "allow this client, user and database in the server's pg_hba.conf"),
    (re.compile(r"permission denied for schema public"),
     "since PostgreSQL 15 only the database owner may create tables in schema public: make the collector's "
     "role the owner of the database, or GRANT CREATE ON SCHEMA public TO it"),
    (re.compile(r"Connection refused|No such file or directory\s+Is the server running"),
     "is PostgreSQL running there? check database.url, or database.host and database.port"),
    (re.compile(r"timeout expired|could not translate host name"),
     "check database.url, or database.host: the host did not answer"),
    (re.compile(r"read-only transaction|default_transaction_read_only"),
     "the server is read-only (a standby?): point database.url at the primary"),
)


class DatabaseSetupError(psycopg.OperationalError):
    """The database is missing and cannot be created by this role; the message says what to do."""


def one_line(text: str) -> str:
    """Collapse the server's multi-line message (libpq indents its hints) into one line."""
    return " ".join(text.split())


def explain(message: str) -> str | None:
    """The fix for a known failure, or None."""
    for pattern, fix in FIXES:
        if pattern.search(message):
            return fix
    return None


def describe(error: BaseException | str) -> str:
    """One bounded line: the message verbatim (secrets masked), then the fix when one is known."""
    text = one_line(mask_secrets(str(error)))
    explained = isinstance(error, DatabaseSetupError) or isinstance(getattr(error, "__cause__", None),
                                                                       DatabaseSetupError)
    fix = None if explained else explain(text)
    if fix is not None and fix not in text:
        text = f"{text} -> fix: {fix}"
    return text if len(text) <= MESSAGE_MAX_CHARS else text[:MESSAGE_MAX_CHARS - 3] + "..."


def missing_database(message: str) -> str | None:
    """The database named in a 'database "x" does not exist' failure, else None."""
    m = _MISSING_DB.search(message)
    return m["name"] if m else None


def connect(dsn: str, **kwargs: Any) -> psycopg.Connection:
    """psycopg.connect(dsn, **kwargs), creating the database first when it is missing and the role may."""
    try:
        return psycopg.connect(dsn, **kwargs)
    except psycopg.OperationalError as exc:
        name = missing_database(str(exc))
        if name is None or name != conninfo_to_dict(dsn).get("dbname", name):
            raise
        create_database(dsn, name, first_error=exc, **kwargs)
    return psycopg.connect(dsn, **kwargs)


def create_database(dsn: str, name: str, first_error: BaseException | None = None, **kwargs: Any) -> None:
    """CREATE DATABASE `name` from the maintenance database, if the role is a superuser or has CREATEDB.

    Raises DatabaseSetupError (one line: the server's message, the role, and what an administrator must do)
    when it may not; another process creating it at the same moment is fine.
    """
    params = conninfo_to_dict(dsn)
    params["dbname"] = MAINTENANCE_DB
    why = one_line(str(first_error)) if first_error is not None else f'database "{name}" does not exist'
    kwargs = {k: v for k, v in kwargs.items() if k not in ("autocommit",)}
    try:
        with psycopg.connect(make_conninfo("", **params), autocommit=True, **kwargs) as conn:
            row = conn.execute("SELECT current_user, rolsuper OR rolcreatedb FROM pg_roles "
                               "WHERE rolname = current_user").fetchone()
            user, allowed = (row[0], bool(row[1])) if row else ("?", False)
            if not allowed:
                raise DatabaseSetupError(
                    f'{why}; role "{user}" may not create it (neither superuser nor CREATEDB): have an '
                    f'administrator run CREATE DATABASE "{name}" OWNER "{user}", or ALTER ROLE "{user}" CREATEDB')
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            except psycopg.errors.DuplicateDatabase:
                return  # created meanwhile by another process: what we wanted
    except DatabaseSetupError:
        raise
    except psycopg.Error as exc:
        raise DatabaseSetupError(f"{why}; creating it from the {MAINTENANCE_DB!r} database failed: "
                                 f"{one_line(str(exc))}") from exc
    log.info('created the missing database "%s"', name)

"""Which back-end a database gets: TimescaleDB or plain PostgreSQL, decided before anything is created.

Split in two so every combination is tested without a server: read_mode_facts asks the server and the
database what they have (catalog queries that cannot end the session), decide_mode is the pure decision
with one line naming database.mode and the fix whenever a mode is refused or TimescaleDB cannot be used.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import psycopg

from collector.db.tables import relation_exists

# database.mode as configured; "auto" resolves to one of the two back-ends.
Mode = Literal["auto", "timescaledb", "postgres"]
Backend = Literal["timescaledb", "postgres"]

# create_hypertable(..., by_range(...)), the generalized hypertable API collector.db.timescale uses, was
# introduced in TimescaleDB 2.13.0: https://docs.tigerdata.com/api/latest/hypertable/create_hypertable/
TIMESCALEDB_MIN_VERSION = (2, 13, 0)

# The fix for a TimescaleDB that is installed but not loaded; setup.py gives it for the server's own error too.
FIX_PRELOAD = "add timescaledb to shared_preload_libraries in postgresql.conf and restart PostgreSQL"
_FIX_INSTALL = ("install TimescaleDB 2.13 or newer for this PostgreSQL (e.g. the timescaledb-2-postgresql-NN "
                "package), " + FIX_PRELOAD)


@dataclass(frozen=True)
class ModeFacts:
    """What the server and database say about TimescaleDB, read before anything is created.

    Read with plain queries that cannot kill the connection: a CREATE EXTENSION of a TimescaleDB that is
    installed but not preloaded answers FATAL ("extension timescaledb must be preloaded"), which closes
    the connection, so trying it inside a savepoint is not a safe probe.
    """

    available_version: str | None  # pg_available_extensions.default_version; None = not installed on the server
    preloaded: bool  # the timescaledb library is in shared_preload_libraries
    created_version: str | None  # pg_extension.extversion in this database; None = extension not created
    stored_mode: Backend | None  # schema_version.mode; None before the first run


@dataclass(frozen=True)
class ModeDecision:
    """decide_mode's answer: a back-end (and whether to CREATE EXTENSION first), or a refusal (error)."""

    mode: Backend | None
    create_extension: bool = False
    warning: str | None = None  # one line for the log: TimescaleDB is there but cannot be used, and the fix
    error: str | None = None  # one line naming database.mode, the problem and the fix; mode is None


def parse_version(v: str) -> tuple[int, ...]:
    """'2.17.2' -> (2, 17, 2); trailing non-numeric parts ('2.14.0-dev') are ignored."""
    parts = []
    for piece in v.split("."):
        m = re.match(r"\d+", piece)
        if m is None:
            break
        parts.append(int(m.group()))
    return tuple(parts)


def preload_listed(setting: str) -> bool:
    """True when a shared_preload_libraries value lists the timescaledb loader.

    Entries may be quoted, carry a path ('$libdir/timescaledb') or a '.so' suffix.
    """
    for item in setting.split(","):
        name = item.strip().strip('"').rsplit("/", 1)[-1]
        if name.endswith(".so"):
            name = name[:-3]
        if name == "timescaledb":
            return True
    return False


def _version_text(v: tuple[int, ...]) -> str:
    return ".".join(map(str, v))


def decide_mode(requested: Mode, facts: ModeFacts) -> ModeDecision:
    """The back-end to use for `requested` given `facts`; pure, so every combination is tested directly.

    - The mode stored by the first run wins: a database's layout cannot change back-end. A stored
      TimescaleDB database needs the extension created and preloaded, else it could not be written.
    - `postgres`: plain partitions, whatever the server has.
    - `timescaledb`: refused, with the fix, unless the extension is available (or already created),
      preloaded and at least TIMESCALEDB_MIN_VERSION.
    - `auto`: TimescaleDB when it could be used; otherwise plain PostgreSQL, with one warning saying how to
      enable TimescaleDB when it is installed but not usable (not preloaded, or too old).
    """
    stored = facts.stored_mode
    if stored is not None:
        if requested not in ("auto", stored):
            return ModeDecision(None, error=f"database.mode is {requested}, but this database was created for "
                                            f"{stored}: set database.mode to {stored} or auto, or use a new database")
        if stored == "postgres":
            return ModeDecision("postgres")
        if facts.created_version is None:
            return ModeDecision(None, error="database.mode: this database was created for timescaledb but the "
                                            "timescaledb extension is missing from it: CREATE EXTENSION timescaledb")
        if not facts.preloaded:
            return ModeDecision(None, error="database.mode: this database was created for timescaledb but "
                                            f"timescaledb is not preloaded: {FIX_PRELOAD}")
        return ModeDecision("timescaledb")
    if requested == "postgres":
        return ModeDecision("postgres")
    problem = fix = None
    version = facts.created_version or facts.available_version
    if version is None:
        problem, fix = "the timescaledb extension is not installed on this PostgreSQL server", _FIX_INSTALL
    elif not facts.preloaded:
        problem, fix = f"TimescaleDB {version} is installed but not preloaded", FIX_PRELOAD
    elif parse_version(version) < TIMESCALEDB_MIN_VERSION:
        need = _version_text(TIMESCALEDB_MIN_VERSION)
        problem = f"TimescaleDB {version} is older than {need}, the oldest this collector supports"
        avail = facts.available_version
        if facts.created_version is not None and avail and parse_version(avail) >= TIMESCALEDB_MIN_VERSION:
            fix = f"run ALTER EXTENSION timescaledb UPDATE (version {avail} is installed)"
        else:
            fix = f"upgrade TimescaleDB to {need} or newer"
    if problem is None:
        return ModeDecision("timescaledb", create_extension=facts.created_version is None)
    if requested == "timescaledb":
        return ModeDecision(None, error=f"database.mode is timescaledb, but {problem}: {fix} "
                                        "(or set database.mode: auto to use plain PostgreSQL)")
    if version is None:  # auto on a server without TimescaleDB: plain PostgreSQL is simply the back-end
        return ModeDecision("postgres")
    return ModeDecision("postgres", warning=f"{problem}: using plain PostgreSQL partitions. To use TimescaleDB, "
                                            f"{fix}, before the first run against a new database (a database "
                                            "keeps the back-end it was created with)")


def read_mode_facts(conn: psycopg.Connection, stored: Backend | None) -> ModeFacts:
    """ModeFacts from catalog views and settings; nothing here can end the session.

    shared_preload_libraries is readable only by superusers and pg_read_all_settings members; for other
    roles the loader's own setting `timescaledb.disable_load` (defined only once the loader is loaded, which
    for a fresh session means preloaded) answers the same question.
    """
    row = conn.execute("SELECT default_version, installed_version FROM pg_available_extensions "
                       "WHERE name = 'timescaledb'").fetchone()
    available, created = (row[0], row[1]) if row else (None, None)
    if created is None:  # installed_version is per database; pg_extension is the authority
        ext = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
        created = ext[0] if ext else None
    preloaded = False
    try:
        with conn.transaction():  # savepoint: "permission denied" is a plain ERROR
            setting = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
        preloaded = preload_listed(setting[0] if setting else "")
    except psycopg.errors.InsufficientPrivilege:
        pass
    if not preloaded:
        loader = conn.execute("SELECT current_setting('timescaledb.disable_load', true)").fetchone()
        preloaded = bool(loader and loader[0] is not None)
    return ModeFacts(available, preloaded, created, stored)


def schema_mode(conn: psycopg.Connection) -> Backend | None:
    """The back-end the schema was created for (schema_version.mode), or None before ensure_schema ran."""
    if not relation_exists(conn, "schema_version"):
        return None
    row = conn.execute("SELECT mode FROM schema_version ORDER BY version DESC LIMIT 1").fetchone()
    return row[0] if row else None

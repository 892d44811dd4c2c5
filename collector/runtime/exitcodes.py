"""Named exit codes shared by the supervisor and its children, and how a child reports a boot failure.

Kept apart from collector.runtime.arbiter so that a child can use them without importing the supervisor's
dependencies. The supervisor decides by a child's exit code (gunicorn's arbiter does the same):
BOOT_ERROR means "this child can never start with this configuration or installation", so respawning
it would only loop; every other code is a crash, repaired by a respawn with backoff.

"Booted" means the child built everything that depends only on its configuration and installation:
a worker its filters, pipeline, REST budget, statistics slot and its cryptofeed feed with the configured
WebSocket client; the writer its statistics slot, its spool directory (created and proven writable,
left-over files indexed) and its listening socket. Nothing on the network is part of booting: an
unreachable exchange is retried for ever, and an unreachable database is an outage the writer spools
through, never a boot error.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

EXIT_OK = 0
EXIT_CONFIG = 2  # bad configuration: nothing to retry
BOOT_ERROR = 3  # a child could not boot: the supervisor stops instead of respawning it for ever

log = logging.getLogger(__name__)


def boot_error_file(run_dir: str | Path, name: str) -> Path:
    """Where child `name` ("writer", "worker-3") leaves the one-line reason it could not boot."""
    return Path(run_dir) / f"boot-error.{name}"


def exit_boot_error(run_dir: str | Path, name: str, exc: BaseException) -> None:
    """Log why this child could not boot, leave the reason for the supervisor, exit with BOOT_ERROR."""
    reason = f"{type(exc).__name__}: {exc}".splitlines()[0]
    log.critical("%s could not boot: %s", name, reason, exc_info=exc)
    print(f"{name} could not boot: {reason}", file=sys.stderr, flush=True)  # logging may be what failed
    try:
        boot_error_file(run_dir, name).write_text(reason + "\n")
    except OSError:
        pass  # the supervisor still sees the exit code and points at the child's log
    sys.exit(BOOT_ERROR)


def read_boot_error(run_dir: str | Path, name: str) -> str | None:
    """The reason child `name` left, if any (the supervisor reads it once, after the child exited)."""
    try:
        return boot_error_file(run_dir, name).read_text().strip() or None
    except OSError:
        return None

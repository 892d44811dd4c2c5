"""Per-process logging: each process writes its own rotated file, configured inside that process.

Spawned children inherit nothing from the supervisor's logging, which is what we want: one file per
process (logs/worker-3.log, logs/writer.log) means no interleaved writes and no lock shared across
processes. Records never carry secrets: connection strings are masked before they are logged.
"""

from __future__ import annotations

import logging
import logging.handlers
import re
import sys
from pathlib import Path

from collector.config import LoggingConfig

FORMAT = "%(asctime)s %(levelname)s %(processName)s %(name)s: %(message)s"
_PASSWORD_IN_URL = re.compile(r"(postgres(?:ql)?://[^:/@\s]+:)([^@\s]+)(@)")
_PASSWORD_KV = re.compile(r"(password\s*=\s*)(\S+)", re.IGNORECASE)


def mask_secrets(text: str) -> str:
    """Hide passwords in connection strings (URL and key=value forms)."""
    return _PASSWORD_KV.sub(r"\1***", _PASSWORD_IN_URL.sub(r"\1***\3", text))


class _MaskingFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return mask_secrets(super().format(record))


def setup_logging(cfg: LoggingConfig, filename: str | Path, *, stderr: bool = False) -> None:
    """Route this process's logging to a rotated file (and stderr when asked)."""
    path = Path(filename)
    path.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    fmt = _MaskingFormatter(FORMAT)
    fh = logging.handlers.RotatingFileHandler(path, maxBytes=cfg.max_bytes, backupCount=cfg.backup_count)
    fh.setFormatter(fmt)
    root.addHandler(fh)
    if stderr:
        sh = logging.StreamHandler(sys.stderr)
        sh.setFormatter(fmt)
        root.addHandler(sh)
    root.setLevel(cfg.level)
    # cryptofeed logs every connection event at INFO: keep it, but its DEBUG is a firehose.
    logging.getLogger("cryptofeed").setLevel(max(logging.INFO, logging.getLevelName(cfg.level)))


def log_dir(cfg: LoggingConfig) -> Path:
    """Children's logs go beside the supervisor's file."""
    return Path(cfg.filename).parent


def exit_with_parent() -> None:
    """Have the kernel send this child SIGTERM when the supervisor dies, even by kill -9.

    Without it, a supervisor killed hard leaves its workers and writer running as orphans, still
    holding the exchange connections and the database. Linux only (prctl PR_SET_PDEATHSIG); elsewhere
    a no-op.
    """
    import ctypes
    import signal as _signal

    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return
    PR_SET_PDEATHSIG = 1  # noqa: N806 - the kernel's name
    libc.prctl(PR_SET_PDEATHSIG, _signal.SIGTERM)
    _release_forkserver()


def _release_forkserver() -> None:
    """Under the forkserver start method (collector.runtime.arbiter) this child's parent is multiprocessing's
    fork server, not the supervisor. The server lives while any process holds its "alive" pipe, and
    multiprocessing hands every child a copy: closing ours lets the server exit when the supervisor dies,
    and its death is what PR_SET_PDEATHSIG then turns into our SIGTERM. This child never starts processes
    of its own through the server, the only use of that pipe."""
    import os
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    fd = getattr(server, "_forkserver_alive_fd", None)
    if server is not None and fd is not None:
        try:
            os.close(fd)
        except OSError:
            pass
        server._forkserver_alive_fd = None

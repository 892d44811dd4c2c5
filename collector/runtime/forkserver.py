"""Starts multiprocessing's forkserver as a fork of the supervisor, so that the two share their modules.

Why: multiprocessing starts the forkserver as a new interpreter, which imports collector.runtime.preload
(cryptofeed, psycopg, uvloop, the pipeline, the writer) into its own memory, shared with the writer and the
workers it forks; the supervisor had imported its own modules (psycopg, the coordinator, the HTTP server,
the bootstrap) into a second, private copy: ~33 MB of its ~37 MB PSS. Here the supervisor imports the
preload too (which marks every object then alive immortal: collector.runtime.immortal) and forks the server
from itself, so one set of module pages serves the supervisor, the server and every child.

A fork copies only the calling thread, and a lock another thread held would stay locked in the copy: this
runs only while the supervisor has a single thread (at the start of Supervisor.run, before the monitor,
coordinator and database threads). If the server dies later, multiprocessing starts a new one its own way
(a new interpreter preloading collector.runtime.preload), as before this module existed.

The server is multiprocessing's own (`multiprocessing.forkserver.main`, serving the same socket protocol);
what is replaced is only how it is launched (`ForkServer.ensure_running`, CPython 3.13): the listening socket
and the "alive" pipe are made the same way and recorded in the same attributes, which connect_to_new_process
and ensure_running read. In the server process every inherited file descriptor but those two and stdio is
closed, as multiprocessing's launch does (`spawnv_passfds`).
"""

from __future__ import annotations

import importlib
import os
import socket
import sys
import threading
import traceback
from multiprocessing import connection, forkserver, resource_tracker, util
from typing import Any, NoReturn

TITLE = "collector: forkserver"


def start_forkserver(preload: str) -> bool:
    """Imports `preload` here and forks multiprocessing's forkserver from this process; True if it did. False
    (no server started: multiprocessing starts its own on the first process) on another Python than 3.13
    (whose ForkServer this copies the launch of), with more than one thread, with a server already running,
    if the socket, pipe or fork fails, or if `preload` does not import (a worker then fails to boot with the
    import's error, as under multiprocessing's own server, which skips such a module)."""
    if sys.version_info[:2] != (3, 13) or threading.active_count() != 1 or not hasattr(os, "fork"):
        return False
    # The module's singleton, which its functions use (private attributes). Its lock is not taken: with one
    # thread nothing else can be in ensure_running, and a lock held across the fork would stay held in the
    # server and every child it forks.
    server: Any = forkserver._forkserver
    if server._forkserver_pid is not None:
        return False
    try:
        importlib.import_module(preload)
    except ImportError:  # as multiprocessing's server does: the child that needs the module reports it
        return False
    try:
        resource_tracker.ensure_running()  # as ensure_running does: children get its descriptor per request
        address = connection.arbitrary_address("AF_UNIX")  # type: ignore[attr-defined]
        with socket.socket(socket.AF_UNIX) as listener:
            listener.bind(address)
            if not util.is_abstract_socket_namespace(address):
                os.chmod(address, 0o600)
            listener.listen()
            alive_r, alive_w = os.pipe()  # every client holds the write end; the server stops at its EOF
            for stream in (sys.stdout, sys.stderr):  # else the server and its children inherit buffered output
                stream.flush()
            try:
                pid = os.fork()
            except OSError:
                os.close(alive_r)
                os.close(alive_w)
                raise
            if pid == 0:
                _serve(listener.fileno(), alive_r)
            os.close(alive_r)
    except OSError:  # multiprocessing will try its own way, and report what fails there
        return False
    server._forkserver_address = address
    server._forkserver_alive_fd = alive_w
    server._forkserver_pid = pid
    return True


def _serve(listener_fd: int, alive_r: int) -> NoReturn:
    """The forked server: only its own descriptors, its own title, then multiprocessing's server loop until
    the last client closes the alive pipe. Never returns, never runs the supervisor's exit handlers."""
    code = 0
    try:
        import setproctitle

        setproctitle.setproctitle(TITLE)
        keep = sorted({listener_fd, alive_r})
        low = 3
        for fd in keep:
            os.closerange(low, fd)
            low = fd + 1
        os.closerange(low, os.sysconf("SC_OPEN_MAX"))
        forkserver.main(listener_fd, alive_r, [])
    except SystemExit as e:  # main's way of stopping: the alive pipe's EOF
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        os._exit(code)

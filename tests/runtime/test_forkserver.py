"""collector.runtime.forkserver: multiprocessing's forkserver forked from the supervisor, sharing its modules.

Each case runs in a fresh interpreter standing in for the supervisor (the fork must happen while it has one
thread, and the forkserver is a per-process singleton), and checks what the children and the server are.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import psutil

SCRIPT = textwrap.dedent("""
    import json, multiprocessing as mp, os, sys, threading
    from multiprocessing import forkserver

    def probe(q):
        import collector.runtime.worker as worker
        from collector.runtime.immortal import is_immortal
        free = forkserver._forkserver._lock.acquire(timeout=5)  # not held across the fork: a child may start one
        q.put({"parent": os.getppid(), "immortal": is_immortal(worker.run_worker), "fresh": is_immortal(object()),
               "lock_free": free})

    if __name__ == "__main__":
        held = open(sys.argv[2], "w")  # a descriptor of the "supervisor" the server must not keep
        stop = threading.Event()
        if sys.argv[1] == "thread":
            threading.Thread(target=stop.wait, daemon=True).start()
        from collector.runtime.forkserver import start_forkserver
        forked = start_forkserver("collector.runtime.preload")
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["collector.runtime.preload"])
        q = ctx.Queue()
        p = ctx.Process(target=probe, args=(q,))
        p.start()
        got = q.get(timeout=60)
        p.join(60)
        server = forkserver._forkserver._forkserver_pid
        fds = [os.readlink(f"/proc/{server}/fd/{fd}") for fd in os.listdir(f"/proc/{server}/fd")]
        print(json.dumps({"forked": forked, "server": server, "child": got, "exit": p.exitcode,
                          "cmdline": open(f"/proc/{server}/cmdline", "rb").read().decode().replace("\\0", " "),
                          "server_fds": fds}))
        stop.set()
""")


def _run(tmp_path: Path, mode: str) -> dict:
    script = tmp_path / "supervisor_like.py"
    script.write_text(SCRIPT)
    held = tmp_path / "held-by-the-supervisor.txt"
    out = subprocess.run([sys.executable, str(script), mode, str(held)], capture_output=True, text=True,
                         timeout=120, check=True, cwd=tmp_path)
    result: dict = json.loads(out.stdout.strip().splitlines()[-1])
    result["held"] = str(held)
    return result


def test_the_server_is_a_fork_of_the_process_and_its_children_share_the_marked_modules(tmp_path: Path) -> None:
    r = _run(tmp_path, "single")
    assert r["forked"] is True and r["exit"] == 0
    assert r["cmdline"].startswith("collector: forkserver")
    assert r["child"] == {"parent": r["server"], "immortal": True, "fresh": False, "lock_free": True}
    assert r["held"] not in r["server_fds"]  # only stdio, its socket, its pipes and its selector
    try:  # the server stops once its last client (the script) has gone: the alive pipe's EOF
        psutil.Process(r["server"]).wait(30)
    except psutil.NoSuchProcess:
        pass


def test_with_a_second_thread_multiprocessing_starts_its_own_server(tmp_path: Path) -> None:
    r = _run(tmp_path, "thread")
    assert r["forked"] is False and r["exit"] == 0
    assert "from multiprocessing.forkserver import main" in r["cmdline"]
    assert r["child"] == {"parent": r["server"], "immortal": True, "fresh": False,  # it preloads, as before
                          "lock_free": True}

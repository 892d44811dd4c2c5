"""collector.runtime.preload imports what a worker imports lazily, so no worker holds a private copy of it.

Why: workers are forks of the forkserver that imported the preload; a module first imported after the fork
is built in each worker's private memory (8 copies). The data path imports two things lazily: the picows
connection class (collector.feed.cryptofeed_adapter.ws_connection_class, on the first connection) and the
idna codec (the first hostname lookup). And before the worker's own code runs, multiprocessing imports the
supervisor's main script again as `__mp_main__`, which imports collector.cli. A fresh interpreter stands in
for the forkserver.
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, socket, sys
import collector.runtime.preload
before = set(sys.modules)
import collector.cli  # what supervisor.py and collector/__main__.py import, run again in each child
from collector.feed.cryptofeed_adapter import ws_connection_class
ws_connection_class("auto")
socket.getaddrinfo("localhost", 80)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_the_lazily_imported_modules_of_a_worker_are_preloaded() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []

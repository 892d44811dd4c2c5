"""Imported once by the supervisor before it forks the forkserver (collector.runtime.forkserver), or by a
forkserver multiprocessing started itself, before the server forks the writer and the workers.

Why: with the `spawn` start method every child re-imports cryptofeed, uvloop, picows, msgspec, psycopg and
the collector itself into private memory (about 40 MB of PSS per process, 8 workers + the writer). The
forkserver imports them here once; each child is then a fork of that process and shares those pages
copy-on-write. collector.runtime.immortal then marks every object allocated so far immortal and freezes it
(`gc.freeze()`): neither the children's reference counting nor their garbage collections write to (and so
un-share) those pages.

Everything a worker imports belongs here, including what the data path imports lazily: a module first
imported after the fork is a private copy in each of the 8 workers. `collector.feed.websocket` is imported
by `ws_connection_class` on the first connection, `encodings.idna` (with `stringprep`) by the first
hostname lookup. And `collector.cli`: every child imports the supervisor's main script again as `__mp_main__`
(multiprocessing's spawn.prepare), and both supervisor.py and `python -m collector` import it (with argparse).
"""

import encodings.idna  # noqa: F401 - the first hostname lookup's codec

import msgspec  # noqa: F401
import picows  # noqa: F401
import psycopg  # noqa: F401
import setproctitle  # noqa: F401
import uvloop  # noqa: F401

import collector.cli  # noqa: F401 - the main script's import, run again in every child as __mp_main__
import collector.feed.websocket  # noqa: F401 - picows' connection class, imported on the first connection
import collector.runtime.worker  # noqa: F401 - pulls in cryptofeed, the feed, pipeline and filters
import collector.writer.main  # noqa: F401
from collector.runtime.immortal import immortalize_heap

immortalize_heap()

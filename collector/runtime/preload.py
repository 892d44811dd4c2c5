"""Imported once by the supervisor's forkserver, before it forks the writer and the workers.

Why: with the `spawn` start method every child re-imports cryptofeed, uvloop, picows, msgspec, psycopg and
the collector itself into private memory (about 40 MB of PSS per process, 8 workers + the writer). The
forkserver imports them here once; each child is then a fork of that process and shares those pages
copy-on-write. `gc.freeze()` moves every object allocated so far into the collector's permanent
generation, so the children's garbage collections never walk (and so never write to, un-sharing) them.

Everything a worker imports belongs here, including what the data path imports lazily: a module first
imported after the fork is a private copy in each of the 8 workers. `collector.feed.websocket` is imported
by `ws_connection_class` on the first connection, `encodings.idna` (with `stringprep`) by the first
hostname lookup.
"""

import encodings.idna  # noqa: F401 - the first hostname lookup's codec
import gc

import msgspec  # noqa: F401
import picows  # noqa: F401
import psycopg  # noqa: F401
import setproctitle  # noqa: F401
import uvloop  # noqa: F401

import collector.feed.websocket  # noqa: F401 - picows' connection class, imported on the first connection
import collector.runtime.worker  # noqa: F401 - pulls in cryptofeed, the feed, pipeline and filters
import collector.writer.main  # noqa: F401

gc.collect()
gc.freeze()

"""How the workers are split across venues, and each venue's symbols across its workers.

Why a module of its own: the supervisor's start (collector.runtime.bootstrap) and the coordinator's live
universe refresh (collector.runtime.coordinator) both need the rule, and it is pure: counts in, counts out.

The rule: a worker serves exactly one venue (one venue's connections, decoder, REST budget). Every venue
with symbols gets one worker; each further worker goes, one at a time, to the venue whose workers carry
the most symbols each (ties: the venue listed first in collection.exchanges), never beyond one worker per
symbol. That is the split that minimises the largest shard, i.e. proportional to symbol counts. With fewer
workers than venues, each venue still gets one (the collector then runs one worker per venue).
Within a venue, symbols are dealt by collector.feed.universe.shard (activity-balanced, +-1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from collector.feed.universe import shard


def allocate_workers(counts: Mapping[str, int], n_workers: int) -> dict[str, int]:
    """Workers per venue (insertion order of `counts` breaks ties); venues without symbols get none."""
    venues = [v for v, c in counts.items() if c > 0]
    seats = dict.fromkeys(venues, 1)
    for _ in range(max(0, n_workers - len(venues))):
        open_ = [v for v in venues if seats[v] < counts[v]]
        if not open_:
            break
        # the venue with the most symbols per worker; max() keeps the first of equals (listing order)
        best = max(open_, key=lambda v: counts[v] / seats[v])
        seats[best] += 1
    return seats


def shard_venues(universes: Mapping[str, Sequence[str]], n_workers: int,
                 activity: Mapping[str, Mapping[str, float]] | None = None) -> tuple[list[list[str]], list[str]]:
    """(shards, venue of each shard): each venue's symbols over its allocate_workers share, venues in order."""
    seats = allocate_workers({v: len(set(s)) for v, s in universes.items()}, n_workers)
    shards: list[list[str]] = []
    venues: list[str] = []
    for venue, n in seats.items():
        for part in shard(universes[venue], n, (activity or {}).get(venue)):
            shards.append(part)
            venues.append(venue)
    return shards, venues


def reassign_venue(shards: Sequence[Sequence[str]], venues: Sequence[str], venue: str, old: Sequence[str],
                   new: Sequence[str]) -> tuple[list[list[str]], list[str], set[str]]:
    """New shards after `venue`'s universe changed from `old` to `new`: its delisted symbols leave their
    worker, each listing goes to its least loaded worker (lowest index on a tie); other venues' workers
    are untouched. Returns (shards, listed, delisted)."""
    current = set(old)
    added = [s for s in new if s not in current]
    removed = current - set(new)
    out = [list(s) for s in shards]
    mine = [i for i, v in enumerate(venues) if v == venue]
    for i in mine:
        out[i] = [s for s in out[i] if s not in removed]
    if mine:
        for sym in added:
            target = min(mine, key=lambda i: (len(out[i]), i))
            out[target].append(sym)
    return out, added, removed

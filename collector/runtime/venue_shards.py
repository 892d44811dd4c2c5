"""How the workers are split across venues, each venue's symbols across its workers, and the supervisor's
per-symbol state across venues.

Why a module of its own: the supervisor's start (collector.runtime.bootstrap) and the coordinator's live
universe refresh (collector.runtime.coordinator) both need the rule, and it is pure: counts in, counts out.
The same holds for the per-venue split of state keyed by collector.runtime.symbol_keys (tiers ranked
within each venue, tiers and checkpoints stored per venue by the venue's own names).

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
from collector.pipeline.activity import Summary
from collector.pipeline.tiers import TierAssignment, TierParams, compute_tiers
from collector.runtime import symbol_keys


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


def reassign(shards: Sequence[Sequence[str]], universe: Sequence[str], new: Sequence[str]
             ) -> tuple[list[list[str]], list[str], set[str]]:
    """New shards after the universe changed from `universe` to `new`: delisted symbols leave their
    worker, each listing goes to the least loaded worker (lowest index on a tie). Returns (shards,
    listed, delisted); a worker whose list is unchanged keeps its order."""
    current = set(universe)
    added = [s for s in new if s not in current]
    removed = current - set(new)
    out = [[s for s in symbols if s not in removed] for symbols in shards]
    for sym in added:
        target = min(range(len(out)), key=lambda i: (len(out[i]), i))
        out[target].append(sym)
    return out, added, removed


def by_venue[T](per_key: Mapping[str, T], universes: Mapping[str, Sequence[str]]) -> dict[str, dict[str, T]]:
    """Split a mapping keyed by symbol key (collector.runtime.symbol_keys) into {venue: {its own name: value}},
    what a venue's rows take (a symbol in no universe is dropped: it was delisted, nothing is stored for it)."""
    out: dict[str, dict[str, T]] = {}
    for venue, names in universes.items():
        part = symbol_keys.of_venue(per_key, venue, names)
        if part:
            out[venue] = part
    return out


def tiers_per_venue(summaries: Mapping[str, Summary], universes: Mapping[str, Sequence[str]],
                    params: TierParams) -> dict[str, TierAssignment]:
    """Tiers ranked within each venue (a venue's quiet symbols are not pushed down by another venue's busy
    ones; activity levels differ by venue), merged into one mapping by symbol key."""
    out: dict[str, TierAssignment] = {}
    for venue, part in by_venue(summaries, universes).items():
        out.update(symbol_keys.keyed(venue, compute_tiers(part, params)))
    return out

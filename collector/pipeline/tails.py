"""The trades a symbol made while no worker was subscribed to it, at the end of its id sequence.

A worker that resumes from checkpoints (a successor after kill -9, a restart, a hand-over) continues each
symbol's aggTrade ids from the checkpoint. Ids traded in between surface as a gap when the symbol's next
live trade arrives (collector.pipeline.router); a symbol that does not trade again soon (a quiet symbol, a
paused or halted market, a delisting) does not reveal them, and they would not be stored. So once the
stream runs (CHECK_AFTER_MS after the resume, and some event received), each resumed symbol that has not
traded live since is checked once: a page of its aggTrades after the checkpoint is asked over REST
(collector.feed.backfill), and the ids traded before the newest event the stream has delivered are a gap
like any other; later ones come live. Pure bookkeeping, no I/O: the caller passes the time in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

# How long after a resume the tails are checked: by then the connections are normally open, and a symbol
# that traded since has shown its own gap (no request needed). Short against the time a repair stays
# possible, long against a reconnect's first frames.
CHECK_AFTER_MS = 2000


class TailChecks:
    """Resumed symbols whose tail is not checked yet (symbol -> the checkpoint's last aggTrade id), and when."""

    __slots__ = ("waiting", "due_ms")

    def __init__(self) -> None:
        self.waiting: dict[str, int] = {}
        self.due_ms: int | None = None

    def expect(self, last_ids: Mapping[str, int], now_ms: int) -> None:
        """Symbols just resumed with these last ids: check them CHECK_AFTER_MS from now."""
        if last_ids:
            self.waiting.update(last_ids)
            self.due_ms = now_ms + CHECK_AFTER_MS

    def take_due(self, now_ms: int, stream_seen: bool) -> dict[str, int]:
        """The symbols to check now (then forgotten): once due and the stream has delivered an event."""
        if self.due_ms is None or now_ms < self.due_ms or not stream_seen:
            return {}
        due, self.waiting, self.due_ms = self.waiting, {}, None
        return due


def tail_gap(last_id: int | None, after_id: int, trades: Iterable[tuple[int, int]],
             seen_ms: int | None) -> tuple[int, int] | None:
    """The ids missed after a checkpoint's `after_id`, from the exchange's (id, trade time) after it, or None.

    Missed: consecutive ids from after_id + 1 traded before `seen_ms`, the newest event time the stream
    has delivered (the exchange's clock); a later trade is still on its way, or shows its own gap. None
    when the symbol's last id is no longer the checkpoint's (`last_id`): a live trade arrived since, and
    any hole before it was the stream's own gap.
    """
    if last_id != after_id or seen_ms is None:
        return None
    end = after_id
    for a, t in trades:
        if a != end + 1 or t >= seen_ms:
            break
        end = a
    return (after_id + 1, end) if end > after_id else None

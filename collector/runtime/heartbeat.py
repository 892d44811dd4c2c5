"""When a child copies its statistics into shared memory: when they changed, and at least every heartbeat.

Why: the copy is what /stats, /health and /metrics read, and its `updated_ms` is the child's heartbeat
(the supervisor kills a child whose slot stops changing: monitoring.heartbeat_timeout_s; health flags a
child silent after stats_silent_ms). Copying unchanged counters every turn was most of what an idle child
did: with 8 workers and the writer that is 9 processes waking to rewrite identical bytes. This policy
skips the copy while nothing changed, but never for longer than `heartbeat_s`, so liveness and /stats'
freshness keep working on a collector that receives nothing.
"""

from __future__ import annotations

from collections.abc import Hashable


class PublishPolicy:
    """Publish when `signature` differs from the last published one, or `heartbeat_s` after the last copy.

    The signature is any cheap value that changes whenever something published changes (e.g. a tuple of
    monotonic counters); the caller computes it, this class only compares. Pure: time is passed in.
    """

    def __init__(self, heartbeat_s: float) -> None:
        if heartbeat_s <= 0:
            raise ValueError(f"heartbeat_s must be > 0, got {heartbeat_s}")
        self.heartbeat_s = heartbeat_s
        self._signature: Hashable = None
        self._at: float | None = None  # when the last copy was made (None: never)

    def due(self, now: float, signature: Hashable) -> bool:
        """True when a copy should be made now; the caller then makes it and calls `published`."""
        if self._at is None or now - self._at >= self.heartbeat_s:
            return True
        return signature != self._signature

    def published(self, now: float, signature: Hashable) -> None:
        self._signature, self._at = signature, now

    def check(self, now: float, signature: Hashable) -> bool:
        """`due`, and when it is, record the copy as made (the common case: the caller publishes at once)."""
        if not self.due(now, signature):
            return False
        self.published(now, signature)
        return True

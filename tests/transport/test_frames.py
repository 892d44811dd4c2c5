"""collector.transport.frames: the socket's frames parse back whatever the reads' boundaries, and a stream that
is not this protocol is refused."""

from __future__ import annotations

import pytest
from helpers import trades_batch

from collector.transport.frames import FrameError, FrameReader, encode_frame


def test_frames_survive_any_split() -> None:
    batches = [trades_batch(i * 10, 3) for i in range(1, 6)]
    frames = [encode_frame(i, b) for i, b in enumerate(batches, 1)]
    stream = b"".join(frames)
    for cut in (1, 7, len(frames[0]) - 1, len(frames[0]), 1000):
        r = FrameReader()
        got = []
        for i in range(0, len(stream), cut):
            got.extend(r.feed(stream[i:i + cut]))
        assert [seq for seq, _ in got] == [1, 2, 3, 4, 5]
        assert [b for _, b in got] == [
            b.__class__(b.table, b.rows, b.data, b.first_event_ms, b.last_event_ms, b.created_ms) for b in batches]
    with pytest.raises(FrameError):
        list(FrameReader().feed(b"GET / HTTP/1.1\r\n" + b"x" * 64))

"""The Binance feed's loop over one socket read's frames: decode, dispatch, count what fails.

Why a module of its own: it runs for every frame, and the feed class it belongs to (collector.feed.source's
FastBinanceFutures) derives from cryptofeed's, which mypyc cannot compile; as a function here it is compiled
with the pipeline (collector.native), and the class hands it its sink's entry points once per read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from collector.feed.wire import MarkPrice, frame_decoder

# (frame, kind, exception): a frame that could not be decoded or handled, counted and skipped by the caller.
OnBad = Callable[[str | bytes, str, BaseException], None]


def handle_frames(messages: Sequence[str | bytes], timestamp: float,
                  dispatch: dict[type, Callable[[Any, float], None]],
                  on_mark: Callable[[MarkPrice, float], None], bad: OnBad) -> None:
    """Every frame of one read, in order, with that read's receipt time: one decode, one dict lookup, one call
    per frame. Errors are passed to `bad` per frame and never raised, so a bad frame costs neither the rest of
    its read nor the connection and its hundreds of streams."""
    decode = frame_decoder.decode
    for msg in messages:
        try:
            data = decode(msg).data
        except msgspec.ValidationError as e:
            bad(msg, "unknown_event" if "Invalid value" in str(e) else "invalid_frame", e)
            continue
        except msgspec.DecodeError as e:
            bad(msg, "malformed_json", e)
            continue
        try:
            if type(data) is list:
                for m in data:
                    on_mark(m, timestamp)
            else:
                dispatch[type(data)](data, timestamp)
        except Exception as e:
            bad(msg, "handler_error", e)

"""Replays frames recorded in cryptofeed's raw capture format to WebSocket subscribers.

Format: a `<url> <-> <ts>` line opens a connection's capture, then `<receipt ts>: <frame>` lines.
Frames keep their recorded spacing divided by the replay speed (0 = as fast as the subscriber reads,
bounded by the transport's flow control).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson

from .frames import ws_text

if TYPE_CHECKING:
    from .hub import WsConn
    from .server import SimProtocol

_FRAME = re.compile(r"^(\d+(?:\.\d+)?): (.*)$")


@dataclass
class Recorded:
    ts: float
    stream: str
    frame: bytes      # complete WebSocket frame, framed once at load time


def parse_capture(path: str) -> tuple[list[str], list[Recorded]]:
    """(connection URLs, frames) of a cryptofeed raw capture file."""
    urls: list[str] = []
    out: list[Recorded] = []
    with open(path, encoding="utf-8") as fp:
        for line in fp:
            line = line.rstrip("\n")
            if not line:
                continue
            m = _FRAME.match(line)
            if m is None:
                if " <-> " in line:
                    urls.append(line.split(" <-> ")[0])
                continue
            text = m.group(2)
            try:
                stream = orjson.loads(text).get("stream", "")
            except orjson.JSONDecodeError:
                stream = ""
            out.append(Recorded(float(m.group(1)), stream, ws_text(text.encode())))
    return urls, out


class ReplaySource:
    def __init__(self, path: str, speed: float) -> None:
        self.urls, self.frames = parse_capture(path)
        self.speed = speed

    async def serve(self, proto: SimProtocol, conn: WsConn) -> None:
        wanted = set(conn.streams)
        if not self.frames:
            return
        t0 = self.frames[0].ts
        start = time.monotonic()
        for rec in self.frames:
            if wanted and rec.stream not in wanted:
                continue
            if self.speed > 0:
                delay = (rec.ts - t0) / self.speed - (time.monotonic() - start)
                if delay > 0:
                    await asyncio.sleep(delay)
            await proto.writable.wait()
            if proto.closing:
                return
            proto.transport.write(rec.frame)
            conn.sent[rec.stream] = conn.sent.get(rec.stream, 0) + 1
            conn.frames += 1
            conn.bytes += len(rec.frame)
        conn.close_reason = "replay finished"
        # Stay open like an idle exchange connection; the client decides when to leave.

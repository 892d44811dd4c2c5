"""One asyncio protocol on one port speaking HTTP/1.1 (REST, control) and RFC 6455 WebSocket.

Hand-rolled rather than aiohttp/websockets: no request-line limit (Binance URLs with 1024 streams are
20 KB+, beyond aiohttp's 8 KB default), pre-framed output written in batches, and no per-message task.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import time
from typing import TYPE_CHECKING
from urllib.parse import parse_qsl, unquote, urlsplit

from .frames import ws_header

if TYPE_CHECKING:
    from .simulator import Simulator

_WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
# Largest request head accepted: generous enough for 1024 long stream names, bounded against abuse.
MAX_HEAD = 1 << 20
# Largest client frame accepted (clients only send pings, pongs, closes and small JSON requests).
MAX_CLIENT_FRAME = 1 << 20
REASONS = {101: "Switching Protocols", 200: "OK", 400: "Bad Request", 404: "Not Found", 418: "I'm a teapot",
           429: "Too Many Requests", 500: "Internal Server Error", 503: "Service Unavailable"}


def accept_key(key: str) -> str:
    return base64.b64encode(hashlib.sha1(key.encode() + _WS_GUID).digest()).decode()


def http_response(status: int, body: bytes, headers: dict[str, str] | None = None,
                  content_type: str = "application/json") -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}", f"Content-Type: {content_type}",
             f"Content-Length: {len(body)}"]
    for k, v in (headers or {}).items():
        lines.append(f"{k}: {v}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class SimProtocol(asyncio.Protocol):
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.peer = ""
        self.ws = None            # the WsConn (or replay session) once upgraded
        self.closing = False
        self.writable = asyncio.Event()
        self.writable.set()

    # -- transport callbacks -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.peer = peer[0] if peer else "?"

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.writable.set()
        if self.ws is not None:
            self.sim.ws_closed(self, "peer closed" if exc is None else f"error: {exc}")

    def pause_writing(self) -> None:
        self.writable.clear()

    def resume_writing(self) -> None:
        self.writable.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.ws is not None:
            self._ws_frames()
            return
        while not self.closing and self.ws is None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > MAX_HEAD:
                    self._reply(400, b'{"code":-1000,"msg":"Request header too large."}', close=True)
                return
            head = self.buf[:end].decode("latin-1").split("\r\n")
            headers = {}
            for line in head[1:]:
                k, _, v = line.partition(":")
                headers[k.strip().lower()] = v.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4:end + 4 + length])
            del self.buf[:end + 4 + length]
            try:
                method, target, _ = head[0].split(" ", 2)
            except ValueError:
                self._reply(400, b'{"code":-1000,"msg":"Bad request line."}', close=True)
                return
            self._request(method, target, headers, body)
        if self.ws is not None and self.buf:
            self._ws_frames()

    # -- HTTP ----------------------------------------------------------------------------------------
    def _request(self, method: str, target: str, headers: dict, body: bytes) -> None:
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        if body and headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
            query.update(parse_qsl(body.decode(), keep_blank_values=True))
        if headers.get("upgrade", "").lower() == "websocket":
            # streams=a/b/c is kept raw: "/" separators must not be split by the query parser.
            self._upgrade(path, parts.query, headers)
            return
        result = self.sim.handle_http(self.peer, method, path, query, headers)
        if inspect.isawaitable(result):
            asyncio.ensure_future(self._reply_later(result))
        else:
            self._reply(*result)

    async def _reply_later(self, coro) -> None:
        status, body, hdrs = await coro
        if not self.closing:
            self._reply(status, body, hdrs)

    def _reply(self, status: int, body: bytes, headers: dict | None = None, close: bool = False) -> None:
        if self.transport is None or self.closing:
            return
        self.transport.write(http_response(status, body, headers))
        if close:
            self.closing = True
            self.transport.close()

    def _upgrade(self, path: str, raw_query: str, headers: dict) -> None:
        key = headers.get("sec-websocket-key")
        if not key:
            self._reply(400, b'{"code":-1000,"msg":"Missing Sec-WebSocket-Key."}', close=True)
            return
        streams: list[str] = []
        for part in raw_query.split("&"):
            k, _, v = part.partition("=")
            if k == "streams":
                streams = [s for s in unquote(v).split("/") if s]
        err = self.sim.ws_check(path, streams)
        if err is not None:
            self._reply(*err, close=True)
            return
        self.transport.write((
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Accept: {accept_key(key)}\r\n\r\n").encode())
        self.ws = self.sim.ws_opened(self, path, streams)

    # -- WebSocket -----------------------------------------------------------------------------------
    def _ws_frames(self) -> None:
        buf = self.buf
        while len(buf) >= 2 and not self.closing:
            b0, b1 = buf[0], buf[1]
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            n = b1 & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            if n > MAX_CLIENT_FRAME:
                self.close_ws(1009, "frame too large")
                return
            mask = b""
            if masked:
                if len(buf) < pos + 4:
                    return
                mask = bytes(buf[pos:pos + 4])
                pos += 4
            if len(buf) < pos + n:
                return
            payload = bytes(buf[pos:pos + n])
            del buf[:pos + n]
            if mask:
                payload = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
            self._ws_message(opcode, payload)

    def _ws_message(self, opcode: int, payload: bytes) -> None:
        if opcode == 0x9:        # ping -> pong with the same payload
            self.send_control(0xA, payload)
        elif opcode == 0xA:      # pong
            if hasattr(self.ws, "last_pong"):
                self.ws.last_pong = time.monotonic()
        elif opcode == 0x8:      # close -> echo the code and go
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1000
            self.close_ws(code, "client close")
        elif opcode in (0x1, 0x2):
            self.sim.ws_message(self, payload)

    def send_control(self, opcode: int, payload: bytes = b"") -> None:
        if self.transport is not None and not self.closing:
            self.transport.write(ws_header(len(payload), opcode) + payload)

    def close_ws(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame and drop the TCP connection (Binance does not wait for the reply)."""
        if self.closing or self.transport is None:
            return
        self.send_control(0x8, code.to_bytes(2, "big") + reason.encode()[:100])
        self.closing = True
        if self.ws is not None:
            self.sim.ws_closed(self, reason)
        self.transport.close()

    def abort(self, reason: str) -> None:
        """Cut the TCP connection without a close frame, like a network failure."""
        if self.transport is None:
            return
        if self.ws is not None and not self.closing:
            self.sim.ws_closed(self, reason)
        self.closing = True
        self.transport.abort()

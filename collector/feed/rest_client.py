"""The process's one HTTP client for REST: an aiohttp session every REST user of a worker shares.

Why one: the open-interest poller, the backfill and cryptofeed's exchangeInfo load each used to open a
client of their own (cryptofeed an aiohttp session per connection, the backfill another); one session is
one connection pool to the exchange and one place for the request timeout. aiohttp is cryptofeed's
dependency too, and declared in pyproject because it is imported here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import aiohttp

from collector.feed.pacing import PACER

# Total time per request made with get(): Binance answers in well under a second; 10 s means "broken".
REQUEST_TIMEOUT_S = 10.0

# (status, headers, body) of one GET: RestClient.get, or a fake in tests.
Fetch = Callable[[str], Awaitable[tuple[int, dict[str, str], bytes]]]


class RestClient:
    """One aiohttp session, made on first use (inside the running loop), closed by its owner."""

    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    @property
    def session(self) -> aiohttp.ClientSession:
        """The shared session (cryptofeed's HTTP connections borrow it: collector.feed.cryptofeed_adapter)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
        return self._session

    async def get(self, url: str) -> tuple[int, dict[str, str], bytes]:
        """GET `url` within REQUEST_TIMEOUT_S; transport failures raise (aiohttp.ClientError, TimeoutError).

        While it is in flight the worker does not rest between reads (collector.feed.pacing), so the answer
        reaches its caller in the few loop turns it takes, not a rest per turn."""
        PACER.requests += 1
        try:
            async with self.session.get(url, timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)) as resp:
                return resp.status, dict(resp.headers), await resp.read()
        finally:
            PACER.requests -= 1

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

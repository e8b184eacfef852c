"""A short-lived cache of public catalogue pages (micro-caching).

Storefront listings are the same for every visitor and read far more often than
products change, so each API process keeps rendered pages for a few seconds
(`MARKETPLACE_CATALOGUE_CACHE_SECONDS`; 0 turns it off) and says so in
`Cache-Control`, which lets a CDN share them too. What must be exact is never
cached: product detail (ETag), stock at checkout, anything behind a login.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from cachetools import TTLCache


class PageCache:
    def __init__(
        self, seconds: float, *, maxsize: int = 2048, timer: Callable[[], float] = time.monotonic
    ) -> None:
        self.seconds = seconds
        self._pages: TTLCache[str, bytes] | None = (
            TTLCache(maxsize=maxsize, ttl=seconds, timer=timer) if seconds > 0 else None
        )
        self._rendering: dict[str, asyncio.Future[bytes]] = {}

    async def get_or_render(self, key: str, render: Callable[[], Awaitable[bytes]]) -> bytes:
        """The cached page, or one rendering shared by every request that missed it.

        Without this, all the requests arriving as a page expires would each run the
        query (a stampede) and queue behind each other: the latency tail.
        """
        cached = self.get(key)
        if cached is not None:
            return cached
        if self._pages is None:
            return await render()
        pending = self._rendering.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        task = asyncio.ensure_future(render())
        self._rendering[key] = task
        try:
            body = await asyncio.shield(task)
        finally:
            self._rendering.pop(key, None)
        self.put(key, body)
        return body

    def get(self, key: str) -> bytes | None:
        return None if self._pages is None else self._pages.get(key)

    def put(self, key: str, body: bytes) -> None:
        if self._pages is not None:
            self._pages[key] = body

    @property
    def cache_control(self) -> str:
        return f"public, max-age={int(self.seconds)}" if self._pages is not None else "no-cache"

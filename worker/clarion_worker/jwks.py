"""Fetches a JWKS URL and keeps it fresh for the token verifier.

Keys are fetched at start-up, refreshed every ``refresh_seconds``, and on demand when
a token names an unknown key id — at most once per ``min_interval_seconds``, so a
flood of forged ``kid`` values cannot turn the worker into a JWKS-fetching loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from clarion_worker.core.auth import TokenVerifier

log = logging.getLogger("clarion.worker.jwks")


class JwksRefresher:
    def __init__(
        self,
        url: str,
        verifier: TokenVerifier,
        *,
        refresh_seconds: float = 300.0,
        min_interval_seconds: float = 10.0,
    ) -> None:
        self._url = url
        self._verifier = verifier
        self._refresh_seconds = refresh_seconds
        self._min_interval = min_interval_seconds
        self._last_fetch = float("-inf")
        self._lock = asyncio.Lock()

    async def fetch(self) -> bool:
        """Fetch and install the key set; False (logged) when the URL fails."""
        async with self._lock:
            self._last_fetch = time.monotonic()
            try:
                async with httpx.AsyncClient(timeout=5.0) as client:
                    response = await client.get(self._url)
                    response.raise_for_status()
                    keys: dict[str, Any] = response.json()
                self._verifier.replace_jwks(keys)
            except (httpx.HTTPError, ValueError) as error:
                log.warning("JWKS fetch failed", extra={"url": self._url, "error": str(error)})
                return False
            return True

    async def refresh_if_allowed(self) -> bool:
        """Refetch after an unknown key id, unless we fetched very recently."""
        if time.monotonic() - self._last_fetch < self._min_interval:
            return False
        return await self.fetch()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self._refresh_seconds)
            await self.fetch()

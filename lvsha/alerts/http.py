"""POSTing JSON for the webhook and Alertmanager sinks: one aiohttp session per sink, made
at the first POST (on the running loop) and closed with the sink."""

from __future__ import annotations

import ssl

import aiohttp

from lvsha.alerts.delivery import DeliveryError

ANSWER_EXCERPT = 200
"""Characters of a refusing server's answer quoted in the log: enough for its error message."""


class JsonPoster:
    def __init__(self, timeout: float, tls_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.tls_context = tls_context
        self._session: aiohttp.ClientSession | None = None

    async def post(self, url: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        """POST `body` as application/json; DeliveryError naming the URL unless the answer
        is 2xx. Redirects are not followed (a 3xx fails too)."""
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.tls_context or True),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
            )
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **(headers or {})},
                allow_redirects=False,
            ) as response:
                if not 200 <= response.status < 300:
                    answer = (await response.text(errors="replace"))[:ANSWER_EXCERPT].strip()
                    raise DeliveryError(
                        f"POST {url}: HTTP {response.status} {response.reason or ''}".rstrip()
                        + (f": {answer}" if answer else "")
                    )
                await response.read()
        except aiohttp.ClientError as exc:
            raise DeliveryError(f"POST {url}: {exc}") from exc

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

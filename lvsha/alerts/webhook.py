"""The webhook sink: each message is a JSON POST.

The body is `{"router_id": ..., "events": [...]}`, one object per thing the events are about
(`lvsha.alerts.digest.coalesce`): `type`, `severity`, `time` (ISO 8601 UTC), `summary`, the
event's fields (those of the latest event when several were folded together) and `count`,
the number of events it stands for (1 unless a thing changed several times meanwhile).

With `secret_file`, the POST carries `X-Lvsha-Signature: sha256=<hex>`, the HMAC-SHA256 of
the exact body bytes keyed with the file's content (its trailing line end removed), read at
each sending. A receiver recomputes it over the raw body before parsing. An answer other than
2xx fails the attempt (and is retried).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import ssl
from collections.abc import Sequence
from functools import partial
from typing import Any

from lvsha.alerts.delivery import Send
from lvsha.alerts.digest import coalesce
from lvsha.alerts.events import Event, iso_time
from lvsha.alerts.http import JsonPoster
from lvsha.alerts.secret_file import read_secret
from lvsha.config.model import WebhookSink

SIGNATURE_HEADER = "X-Lvsha-Signature"
_OWN_KEYS = frozenset({"type", "severity", "time", "summary", "count"})


def payload(router_id: str, events: Sequence[Event]) -> dict[str, Any]:
    """The JSON document for `events`."""
    documents = []
    for entry in coalesce(events):
        latest = entry.latest
        documents.append(
            {
                "type": latest.type,
                "severity": latest.severity.label,
                "time": iso_time(latest.time),
                "summary": entry.line,
                **{key: value for key, value in latest.fields.items() if key not in _OWN_KEYS},
                "count": entry.count,
            }
        )
    return {"router_id": router_id, "events": documents}


def signature(secret: bytes, body: bytes) -> str:
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


class WebhookTransport:
    def __init__(
        self,
        name: str,
        spec: WebhookSink,
        *,
        router_id: str,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.router_id = router_id
        self.poster = JsonPoster(spec.timeout, tls_context)

    def compose(self, events: Sequence[Event], now: float) -> Send | None:
        if not events:
            return None
        body = json.dumps(payload(self.router_id, events), ensure_ascii=False).encode()
        return partial(self._send, body)

    def due(self) -> float | None:
        return None

    async def aclose(self) -> None:
        await self.poster.aclose()

    async def _send(self, body: bytes) -> None:
        headers = {}
        if self.spec.secret_file is not None:
            secret = read_secret(self.spec.secret_file, "webhook secret", self.name)
            headers[SIGNATURE_HEADER] = signature(secret, body)
        await self.poster.post(self.spec.url, body, headers)

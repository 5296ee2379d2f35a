"""The SMTP sink: a plain-text mail per message, through a relay, with aiosmtplib.

One event makes a mail whose subject is its summary (`[lvsha lb-nat-1] VI_1: BACKUP ->
MASTER`); several make a digest (`[lvsha lb-nat-1] 37 events: 35 real servers down, ...`)
whose body has a block per thing they are about (`lvsha.alerts.digest`).

`tls`: auto upgrades with STARTTLS when the relay offers it, without checking its certificate
(opportunistic, like a relay's "may" level: it protects from eavesdropping, not from an active
attacker); starttls requires STARTTLS and tls speaks TLS from the start (port 465), both with
the certificate checked against the system's CAs; off sends in the clear (as keepalived
does). With `username`, the sink logs in with the password in `password_file`, read at each
sending so a new password needs no reload; an unreadable file fails the attempt with a message
naming it.
"""

from __future__ import annotations

import email.message
import email.policy
import email.utils
import ssl
from collections.abc import Sequence
from functools import partial

import aiosmtplib

from lvsha.alerts.delivery import DeliveryError, Send
from lvsha.alerts.digest import body, coalesce, subject
from lvsha.alerts.events import Event
from lvsha.alerts.secret_file import read_secret
from lvsha.config.model import SmtpSink

_WIRE_POLICY = email.policy.SMTP.clone(max_line_length=998)
"""Headers folded only past RFC 5322's hard limit: at 78, Python folds a subject that fits
on a line of its own before its first word, and some readers then show it indented."""


def _opportunistic_context() -> ssl.SSLContext:
    """TLS as mail relays use it when they may: encrypted, the certificate not checked (a
    relay that offers STARTTLS with a self-signed certificate still gets the mail, as it got
    it in the clear from keepalived). tls: starttls or tls checks it."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


class SmtpTransport:
    def __init__(
        self,
        name: str,
        spec: SmtpSink,
        *,
        router_id: str,
        hostname: str,
        tls_context: ssl.SSLContext | None = None,
    ) -> None:
        self.name = name
        self.spec = spec
        self.router_id = router_id
        self.hostname = hostname
        self.tls_context = tls_context

    def compose(self, events: Sequence[Event], now: float) -> Send | None:
        if not events:
            return None
        return partial(self._send, self.message(events).as_bytes(policy=_WIRE_POLICY))

    def message(self, events: Sequence[Event]) -> email.message.EmailMessage:
        """The mail for `events`: a summary subject, a plain-text body, and the headers a
        relay and a mail reader expect (Date, Message-ID, From, To)."""
        spec = self.spec
        entries = coalesce(events)
        message = email.message.EmailMessage()
        message["From"] = spec.sender
        message["To"] = ", ".join(spec.to)
        message["Subject"] = subject(self.router_id, events, entries)
        message["Date"] = email.utils.formatdate(max(e.time for e in events), usegmt=True)
        # a domain given: make_msgid would otherwise look the host name up in the DNS
        message["Message-ID"] = email.utils.make_msgid("lvsha", domain=self.hostname)
        message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no auto-replies to it
        message["X-Lvsha-Router-Id"] = self.router_id
        message.set_content(body(self.router_id, events, entries))
        return message

    def due(self) -> float | None:
        return None

    async def aclose(self) -> None:
        return None

    def _tls_context(self) -> ssl.SSLContext | None:
        if self.spec.tls == "auto":
            return _opportunistic_context()
        return self.tls_context  # None: aiosmtplib's, verifying against the system's CAs

    async def _send(self, message: bytes) -> None:
        spec = self.spec
        password = None
        if spec.username is not None:
            if spec.password_file is None:
                raise DeliveryError(
                    f"alert sink {self.name} has a username but no password_file to log in with"
                )
            password = read_secret(spec.password_file, "SMTP password", self.name)
        try:
            await aiosmtplib.send(
                message,
                sender=spec.sender,
                recipients=spec.to,
                hostname=spec.server,
                port=spec.port,
                username=spec.username,
                password=password,
                # given, so the EHLO does not make aiosmtplib look the host name up
                local_hostname=self.hostname,
                timeout=spec.timeout,
                use_tls=spec.tls == "tls",
                start_tls={"auto": None, "starttls": True, "tls": False, "off": False}[spec.tls],
                tls_context=self._tls_context(),
            )
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise DeliveryError(f"SMTP relay {spec.server}:{spec.port}: {exc}") from exc

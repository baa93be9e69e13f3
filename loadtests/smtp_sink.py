"""A real SMTP server (aiosmtpd) on loopback that keeps what arrives: recipients, Message-IDs,
arrival times. Used by the SendCampaign tests and `bench_send`.

`hold_mail_at=n`: once n messages have arrived, every new transaction stalls at MAIL FROM
(what arrived is settled, nothing more arrives), so a test can kill a sender of several
connections "between messages" at a known point.
`hold_data_at=n`: the (n+1)-th message is kept but its 250 is not answered (a kill then falls
inside the SMTP transaction).
`delay_data=s`: every DATA is answered only after s seconds (a slow relay; the message has
arrived by then).
`rcpt_replies[address]`: the replies to RCPT TO of that address, in turn (the last one
repeats), e.g. `["451 4.7.1 try later", "250 OK"]` (greylisting) or `["550 5.1.1 no such user"]`.
`noop_reply`: the reply to NOOP (default `250 OK`; a relay may refuse it, `502 ...`).
`login=(user, password)`: the relay requires AUTH (PLAIN or LOGIN, offered without TLS: it is
on loopback) with that login, and refuses any other with 535.
"""
from __future__ import annotations

import asyncio
import re
import threading
import time
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

__all__ = ["SmtpSink"]

_MESSAGE_ID = re.compile(rb"^Message-ID: *(<[^>]*>)", re.IGNORECASE | re.MULTILINE)


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, options):
        s = self.sink
        if s.hold_mail_at is not None and len(s.arrived) >= s.hold_mail_at:
            s.holding.set()
            while s.hold_mail_at is not None:
                await asyncio.sleep(0.05)
        envelope.mail_from = address
        return "250 OK"

    async def handle_NOOP(self, server, session, envelope, arg):
        return self.sink.noop_reply

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        replies = self.sink.rcpt_replies.get(address) or ["250 OK"]
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        if reply.startswith("250"):
            envelope.rcpt_tos.append(address)
        return reply

    async def handle_DATA(self, server, session, envelope):
        s = self.sink
        if s.keep_mails:
            mail = message_from_bytes(envelope.content, policy=policy.default)
            message_id = mail["Message-ID"]
        else:  # the bench: no MIME parsing, only the header it counts
            mail, found = None, _MESSAGE_ID.search(envelope.content)
            message_id = found.group(1).decode() if found else None
        with s.lock:
            s.arrived.append((time.monotonic(), list(envelope.rcpt_tos), message_id))
            s.mails.append(mail)
            if s.keep_mails:
                s.raw.append(envelope.original_content or envelope.content)
        if s.hold_data_at is not None and len(s.arrived) == s.hold_data_at + 1:
            s.hold_data_at = None
            s.holding.set()
            await asyncio.sleep(3600)
        if s.delay_data:
            await asyncio.sleep(s.delay_data)
        return "250 OK"


class _Authenticator:
    def __init__(self, login: tuple[str, str]):
        self.login = (login[0].encode(), login[1].encode())

    def __call__(self, server, session, envelope, mechanism, data) -> AuthResult:
        given = (data.login, data.password) if isinstance(data, LoginPassword) else None
        return AuthResult(success=given == self.login, handled=False)  # the 235 or 535 is aiosmtpd's


class SmtpSink:
    def __init__(self, port: int, hold_mail_at: int | None = None,
                 hold_data_at: int | None = None, keep_mails: bool = True,
                 delay_data: float = 0.0, login: tuple[str, str] | None = None):
        self.arrived: list[tuple[float, list[str], str]] = []
        self.mails: list = []
        self.lock = threading.Lock()
        self.hold_mail_at, self.hold_data_at = hold_mail_at, hold_data_at
        self.keep_mails, self.delay_data = keep_mails, delay_data
        self.rcpt_replies: dict[str, list[str]] = {}
        self.raw: list[bytes] = []
        """The bytes of each message as they arrived (with `keep_mails`)."""
        self.holding = threading.Event()
        self.noop_reply = "250 OK"
        auth = {} if login is None else {
            "authenticator": _Authenticator(login), "auth_required": True, "auth_require_tls": False}
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=port, **auth)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

    def release(self) -> None:
        """Stop holding (the sessions held so far are dead by then: a new sender connects)."""
        self.hold_mail_at = self.hold_data_at = None

    @property
    def message_ids(self) -> list[str]:
        with self.lock:
            return [m for _, _, m in self.arrived]

    def wait_for(self, n: int, timeout: float = 30.0) -> None:
        deadline = time.time() + timeout
        while len(self.arrived) < n:
            if time.time() > deadline:
                raise TimeoutError(f"{len(self.arrived)} of {n} messages arrived")
            time.sleep(0.01)

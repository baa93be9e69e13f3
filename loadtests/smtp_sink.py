"""A real SMTP server (aiosmtpd) on loopback that keeps what arrives: recipients, Message-IDs,
arrival times. Used by the SendCampaign tests and `bench_send`.

`hold_mail_at=n`: the (n+1)-th transaction stalls at MAIL FROM (the n messages before it have
arrived, this one has not), so a test can kill the sender "between messages" at a known point.
`hold_data_at=n`: the (n+1)-th message is kept but its 250 is not answered (a kill then falls
inside the SMTP transaction).
"""
from __future__ import annotations

import asyncio
import threading
import time
from email import message_from_bytes, policy

from aiosmtpd.controller import Controller

__all__ = ["SmtpSink"]


class _Handler:
    def __init__(self, sink: SmtpSink):
        self.sink = sink

    async def handle_MAIL(self, server, session, envelope, address, options):
        if self.sink.hold_mail_at is not None and len(self.sink.arrived) == self.sink.hold_mail_at:
            self.sink.hold_mail_at = None
            self.sink.holding.set()
            await asyncio.sleep(3600)
        envelope.mail_from = address
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        s = self.sink
        head = envelope.content.split(b"\r\n\r\n", 1)[0] if s.headers_only else envelope.content
        mail = message_from_bytes(head, policy=policy.default)
        with s.lock:
            s.arrived.append((time.monotonic(), list(envelope.rcpt_tos), mail["Message-ID"]))
            s.mails.append(mail if s.keep_mails else None)
        if s.hold_data_at is not None and len(s.arrived) == s.hold_data_at + 1:
            s.hold_data_at = None
            s.holding.set()
            await asyncio.sleep(3600)
        return "250 OK"


class SmtpSink:
    def __init__(self, port: int, hold_mail_at: int | None = None,
                 hold_data_at: int | None = None, keep_mails: bool = True):
        self.arrived: list[tuple[float, list[str], str]] = []
        self.mails: list = []
        self.lock = threading.Lock()
        self.hold_mail_at, self.hold_data_at = hold_mail_at, hold_data_at
        self.keep_mails, self.headers_only = keep_mails, not keep_mails
        self.holding = threading.Event()
        self.controller = Controller(_Handler(self), hostname="127.0.0.1", port=port)

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc) -> None:
        self.controller.stop()

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

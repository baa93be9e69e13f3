"""SendCampaign: a background job per audience that composes and delivers, and survives restarts.

A job runs two stages in its server process:

- compose: `send_compose_ahead` users at a time through `Composer.decide_and_render` (a logged
  decision, the contact policy's verdict, the rendering), then ONE write of their records:
  suppressed (by the policy's reason, or `holdout`) and failed users are settled, the others
  become `ready` with the decision id and the rendered message;
- deliver: one message at a time per job, after a token from its channel's bucket, at its
  `send_at`: a message the contact policy deferred waits in a heap (in memory; its `ready`
  record is on disk, so a restart finds it again), the others go at once. After the relay
  accepts a message the `email_sent` event is recorded (`EmailDelivery.send_email`), then the
  record is settled `sent`, before the next message starts.

Crash semantics: a record is `ready` before its message is handed to the relay, and `sent` only
after the relay said 250, so a restart sends every `ready` message again, the stored one with
the same Message-ID (`<decision id@domain>`). A kill between two messages re-sends nothing
that arrived; a kill inside an SMTP transaction after the relay kept the message but before its
record said `sent` re-sends that one message, with the same Message-ID (receivers may drop it).
"""
from __future__ import annotations

import asyncio
import heapq
import logging
import time

from ..errors import TailorError
from .compose import Composer, Message
from .delivery import EmailDelivery
from .sends import FAILED, PENDING, READY, SENT, SUPPRESSED, Recipient, SendRecords

__all__ = ["TokenBucket", "SendJob"]

logger = logging.getLogger("tailor.messages.send")

MAX_IDLE_WAIT = 60.0
"""Longest single sleep while waiting for a deferred message's send_at."""


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up: `take()` waits for one. Tokens are
    handed out on a fixed schedule (`1/rate` apart), so the achieved rate does not drift."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.interval, self.burst = 1.0 / rate, burst
        self._next = time.monotonic()

    async def take(self) -> None:
        now = time.monotonic()
        self._next = max(self._next, now - (self.burst - 1) * self.interval)
        if self._next > now:
            await asyncio.sleep(self._next - now)
        self._next += self.interval


def _message(r: Recipient, campaign_id: str) -> Message:
    m = r.message
    return Message(campaign_id, m["channel"], r.decision, send_at=r.send_at, parts=m["parts"],
                   headers=m["headers"])


class SendJob:
    def __init__(self, send_id: str, job: dict, records: SendRecords, composer: Composer,
                 delivery: EmailDelivery, ahead: int):
        self.send_id, self.job, self.records = send_id, job, records
        self.composer, self.delivery, self.ahead = composer, delivery, ahead
        self.buckets = {ch: TokenBucket(rate) for ch, rate in job["rates"].items()}

    async def run(self) -> None:
        todo = await asyncio.to_thread(self.records.open_recipients, self.send_id)
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.ahead)
        later = [(r.send_at, r.seq, r) for r in todo if r.state == READY]
        heapq.heapify(later)
        composing = asyncio.create_task(self._compose_all([r for r in todo if r.state == PENDING],
                                                          queue))
        try:
            await self._deliver_all(queue, later)
            await composing
        finally:
            composing.cancel()
        await asyncio.to_thread(self.records.finish, self.send_id)
        logger.info("send %s finished", self.send_id)

    # -- compose -----------------------------------------------------------------------------------
    async def _compose_all(self, todo: list[Recipient], queue: asyncio.Queue) -> None:
        for at in range(0, len(todo), self.ahead):
            chunk = todo[at:at + self.ahead]
            await asyncio.gather(*(self._compose(r) for r in chunk))
            await asyncio.to_thread(self.records.update, self.send_id, chunk)
            for r in chunk:
                if r.state == READY:
                    await queue.put(r)
        await queue.put(None)

    async def _compose(self, r: Recipient) -> None:
        try:
            msg, recipient = await self.composer.decide_and_render(
                self.job["campaign"], r.user, self.job["context"])
        except TailorError as err:
            r.state, r.reason = FAILED, type(err).__name__
            return
        except Exception:  # one user's failure must not stop the job; say why
            logger.exception("send %s: composing failed", self.send_id)
            r.state, r.reason = FAILED, "error"
            return
        r.decision, r.send_at = msg.decision_id, msg.send_at
        if recipient is None:
            r.state, r.reason = SUPPRESSED, msg.reason or ("holdout" if msg.holdout else "")
        elif msg.channel != "email":
            r.state, r.reason = FAILED, f"no {msg.channel} adapter"
        elif not recipient.attributes.get("email"):
            r.state, r.reason = FAILED, "no email address"
        else:
            r.state = READY
            r.message = {"channel": msg.channel, "to": recipient.attributes["email"],
                         "parts": msg.parts, "headers": msg.headers}

    # -- deliver -----------------------------------------------------------------------------------
    async def _deliver_all(self, queue: asyncio.Queue, later: list) -> None:
        composing = True
        while composing or later:
            if later and later[0][0] <= time.time():
                await self._deliver(heapq.heappop(later)[2])
                continue
            wait = min(later[0][0] - time.time(), MAX_IDLE_WAIT) if later else None
            if not composing:
                await asyncio.sleep(wait)
                continue
            try:
                r = await asyncio.wait_for(queue.get(), wait)
            except TimeoutError:
                continue
            if r is None:
                composing = False
            elif r.send_at > time.time():
                heapq.heappush(later, (r.send_at, r.seq, r))
            else:
                await self._deliver(r)

    async def _deliver(self, r: Recipient) -> None:
        channel = r.message["channel"]
        await self.buckets[channel].take()
        try:
            await self.delivery.send_email(_message(r, self.job["campaign"]), r.user,
                                           r.message["to"])
            r.state = SENT
        except TailorError as err:
            r.state, r.reason = FAILED, f"relay: {type(err).__name__}"
        await asyncio.to_thread(self.records.update, self.send_id, [r])

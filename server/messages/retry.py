"""Retries with exponential backoff for delivery adapters (SMTP and the webhooks).

An adapter call raises `Transient` (worth another try) or `Permanent` (not). `Retry.run` tries
at most `attempts` times, sleeping `base * 2**(n-1)` seconds (at most `cap`) after the n-th
transient failure, and turns the outcome into a domain error: `DeliveryRefused` at the first
permanent failure, `DeliveryUnavailable` when every attempt failed transiently. Bounded on both
sides (`Settings.delivery_attempts`, `delivery_backoff_seconds`, `delivery_backoff_max_seconds`),
so a SendCampaign lane stalls at most the sum of the delays for one message.

A backoff can last minutes (up to `delivery_backoff_max_seconds` each), and meanwhile the user
may opt out, be erased, or have their address suppressed, the campaign be archived, or the
marketer cancel the send: `still` (the caller's check) is asked again before every attempt
after the first, and a reason it gives ends the retries with `NoLongerAllowed(reason)`
(nothing more is attempted, the attempt in progress is never cut short). A change with an
event to wait on (a send job's cancel: `unless`) ends the wait early, so `still` is asked at
once rather than at the backoff's end; the caller's `still` says `cancelled` then. One
exception, one outcome: before, a cancel raised a `DeliveryStopped` of its own (counted failed
`cancelled`), an opt-out `NoLongerAllowed` (counted suppressed).
"""
from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

from .errors import DeliveryRefused, DeliveryUnavailable, NoLongerAllowed, Permanent, Transient
from .logging import logger

__all__ = ["Retry"]


class Retry:
    def __init__(self, attempts: int = 4, base: float = 0.5, cap: float = 30.0):
        self.attempts, self.base, self.cap = attempts, base, cap

    @classmethod
    def from_settings(cls, s) -> Retry:
        return cls(s.delivery_attempts, s.delivery_backoff_seconds, s.delivery_backoff_max_seconds)

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the `attempt`-th (1-based) transient failure."""
        return min(self.cap, self.base * 2 ** (attempt - 1))

    async def run(self, channel: str, call: Callable[[], Awaitable[None]],
                  unless: asyncio.Event | None = None,
                  still: Callable[[], Awaitable[str | None]] | None = None) -> int:
        """Call until it succeeds; the number of attempts it took. `still`: asked before each
        attempt after the first; a reason from it raises `NoLongerAllowed`. `unless`: set, it
        ends the wait between attempts (then `still` is asked)."""
        for attempt in range(1, self.attempts + 1):
            if attempt > 1 and still is not None and (refused := await still()) is not None:
                raise NoLongerAllowed(refused, attempt - 1)
            try:
                await call()
                return attempt
            except Permanent as err:
                raise DeliveryRefused(channel, err.reason, attempt, err.bounced,
                                      err.opted_out) from None
            except Transient as err:
                if attempt == self.attempts:
                    raise DeliveryUnavailable(channel, err.reason, attempt) from None
                logger.info("%s delivery attempt %d failed (%s); retrying in %.2fs", channel,
                            attempt, err.reason, self.delay(attempt))
                await self._wait(self.delay(attempt), unless)
        raise AssertionError("unreachable: attempts >= 1")

    @staticmethod
    async def _wait(seconds: float, unless: asyncio.Event | None) -> None:
        """Sleep `seconds`, or less once `unless` is set."""
        if unless is None:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(unless.wait(), seconds)

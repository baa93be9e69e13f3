"""Failed authentication in the audit log, collapsed per (peer, reason) and interval.

Anyone who reaches the port can fail authentication, so one audit line per failure let a
client with no credentials fill the disk the store lives on (and cost a flock and file I/O per
call on the event loop). Now the first failure of a (peer, reason) pair in an interval is
audited at once, as any failure was; that pair's further failures in the interval become one
line when it ends, with `count` = how many. At most `max_pairs` pairs are tracked per interval:
failures of any further pair share the pair ("*", "*"). Lines go to the audit hook from a worker
thread (an async hook is awaited), never as file I/O on the event loop.
"""
from __future__ import annotations

import asyncio
import inspect
from dataclasses import dataclass

from .logging import logger

__all__ = ["FailedAuthDigest", "OVERFLOW", "peer_host"]

OVERFLOW = ("*", "*")
"""The pair that failures of pairs beyond `max_pairs` are counted under."""
PRINCIPAL, STATUS = "unauthenticated", "UNAUTHENTICATED"


def peer_host(peer: str) -> str:
    """The caller's address without its port (`ipv4:10.0.0.7:53422` -> `ipv4:10.0.0.7`): each
    connection has its own port, the pair is per client."""
    kind, _, rest = (peer or "").partition(":")
    if kind in ("ipv4", "ipv6") and ":" in rest:
        return f"{kind}:{rest.rsplit(':', 1)[0]}"
    return peer or "unknown"


@dataclass
class _Pending:
    method: str
    more: int = 0
    """Failures after the first (the one already audited) in this interval."""


class FailedAuthDigest:
    """Counts failed authentication per (peer, reason) and writes it to `audit` (its
    `record(principal, method, target, status, request_id, **details)`, sync or async)."""

    def __init__(self, audit, interval: float, max_pairs: int):
        self.audit, self.interval, self.max_pairs = audit, interval, max_pairs
        self._pairs: dict[tuple[str, str], _Pending] = {}
        self._flusher: asyncio.Task | None = None

    async def failed(self, peer: str, method: str, reason: str, request_id: str) -> None:
        """One failed authentication: audited now if it is its pair's first in the interval."""
        pair = (peer_host(peer), reason)
        if pair not in self._pairs and len(self._pairs) >= self.max_pairs:
            pair = OVERFLOW
        pending = self._pairs.get(pair)
        if pending is not None:
            pending.more += 1
            pending.method = method if pending.method in ("", method) else "*"
            return
        self._pairs[pair] = _Pending("")
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_after(self.interval))
        await self._write(pair, method, request_id, 1)

    async def flush(self) -> None:
        """Write one line per pair that failed again since its first line; start a new interval."""
        pairs, self._pairs = self._pairs, {}
        for pair, pending in pairs.items():
            if pending.more:
                await self._write(pair, pending.method, "", pending.more)

    async def close(self) -> None:
        """Stop the timer and write what is counted (server stop)."""
        if self._flusher is not None:
            self._flusher.cancel()
        await self.flush()

    async def _flush_after(self, delay: float) -> None:
        """The interval's timer; it runs on while pairs are counted (failures that came while
        a flush was writing began the next interval's pairs, with no timer of their own)."""
        while True:
            await asyncio.sleep(delay)
            await self.flush()
            if not self._pairs:  # no await from here to the task's end: the next failure
                return           # sees this timer done and starts one

    async def _write(self, pair: tuple[str, str], method: str, request_id: str, count: int) -> None:
        peer, reason = pair
        args = (PRINCIPAL, method, "", STATUS, request_id)
        details = {"peer": peer, "reason": reason, "count": count}
        try:
            if inspect.iscoroutinefunction(self.audit.record):
                await self.audit.record(*args, **details)
            else:
                await asyncio.to_thread(self.audit.record, *args, **details)
        except Exception:  # the audit log failing must not change the call's answer; say so
            logger.exception("audit record failed for %s", method)

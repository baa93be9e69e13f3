"""`Bulk`: a writer child's batch function that gives way to the others.

A writer process serves interactive callers (ChooseVariant waits for its decision's commit)
and bulk ones (PlanCampaign's slices of an audience) through one child, one transaction at a
time. `Waiting` holds the frames the child has read and picks each call's: frames of a `Bulk`
function run when no other function's frame waits, or once other calls have passed them over
`PASSED_OVER` times in a row (steady rewards or sends cannot hold a plan up for good), and at
most `per_call` queries a call (a larger frame runs whole, alone), or `per_call_alone` when no
other frame has arrived for `QUIET_SECONDS` (bigger transactions cost less a query). The child
reads the pipe again before every call, so an interactive frame that arrives behind queued bulk
ones waits for the bulk call already running, not for everything queued before it.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bulk", "PASSED_OVER", "QUIET_SECONDS", "Waiting"]

PASSED_OVER = 4
"""Calls of other functions that may run, in a row, while a `Bulk` frame waits."""
QUIET_SECONDS = 1.0
"""Bulk calls take `per_call_alone` queries once no other frame has arrived for this long."""


@dataclass(frozen=True)
class Bulk:
    """A batch function for `WriterProcess`'s factory dict that gives way to the others, run
    `per_call` queries (at least one whole frame) a call while other frames come, up to
    `per_call_alone` (default: `per_call`) when they have not for `QUIET_SECONDS`."""

    fn: Callable[[Sequence], Sequence]
    per_call: int = 1
    per_call_alone: int = 0

    def __post_init__(self):
        if self.per_call < 1:
            raise ValueError(f"per_call must be >= 1, got {self.per_call}")
        if self.per_call_alone < self.per_call:
            object.__setattr__(self, "per_call_alone", self.per_call)

    def __call__(self, queries: Sequence) -> Sequence:
        return self.fn(queries)


class Waiting:
    """The frames `(seq, function, queries)` a writer child holds, in arrival order; `take()`
    removes and returns the next call's. Order is kept within a function, not across."""

    def __init__(self, functions: dict, passed_over: int = PASSED_OVER,
                 quiet: float = QUIET_SECONDS, clock: Callable[[], float] = time.monotonic):
        self.functions = functions
        self.passed_over, self.quiet, self.clock = passed_over, quiet, clock
        self.frames: list = []
        self.skipped = 0
        """Calls of other functions run in a row while a bulk frame waited."""
        self.last_other = float("-inf")
        """When a frame of a function that is not `Bulk` last arrived (`clock`)."""

    def __bool__(self) -> bool:
        return bool(self.frames)

    def add(self, frames: list) -> None:
        if any(self._bulk(f[1]) is None for f in frames):
            self.last_other = self.clock()
        self.frames += frames

    def take(self) -> list:
        """The next call's frames: the first frame of a function that is not `Bulk` with the
        frames of that function following it among those (their queries in one call); else,
        or when bulk frames were passed over `passed_over` times, the first bulk frame with
        those of its function following it among the bulk ones, up to its `per_call` (its
        `per_call_alone` when no other frame has arrived for `quiet` seconds)."""
        bulk, urgent = [], []
        for f in self.frames:
            (urgent if self._bulk(f[1]) is None else bulk).append(f)
        if urgent and not (bulk and self.skipped >= self.passed_over):
            run = _leading(urgent)
            self.skipped = self.skipped + 1 if bulk else 0
        else:
            fn = self._bulk(bulk[0][1])
            alone = self.clock() - self.last_other >= self.quiet
            run = _leading(bulk, fn.per_call_alone if alone else fn.per_call)
            self.skipped = 0
        if run[-1] is self.frames[len(run) - 1]:  # the usual case: the run leads the list
            del self.frames[:len(run)]
        else:
            taken = {id(f) for f in run}
            self.frames = [f for f in self.frames if id(f) not in taken]
        return run

    def _bulk(self, function: str) -> Bulk | None:
        fn = self.functions.get(function)
        return fn if isinstance(fn, Bulk) else None


def _leading(frames: list, limit: int | None = None) -> list:
    """The first frame and the ones right after it for the same function, while their queries
    add up to at most `limit` (any number without one)."""
    run, total = [frames[0]], len(frames[0][2])
    for f in frames[1:]:
        if f[1] != run[0][1] or (limit is not None and total + len(f[2]) > limit):
            break
        run.append(f)
        total += len(f[2])
    return run

"""`Bulk`: a writer child's batch function that gives way to the others.

A writer process serves interactive callers (ChooseVariant waits for its decision's commit)
and bulk ones (PlanCampaign's slices of an audience) through one child, one transaction at a
time. Frames of a `Bulk` function run only when no other function's frame is waiting, and at
most `per_call` queries a transaction (whole frames), the pipe read again between calls: an
interactive frame that arrives behind queued bulk ones waits for at most the bulk call already
running, not for everything queued before it.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Bulk", "next_run"]


@dataclass(frozen=True)
class Bulk:
    """A batch function for `WriterProcess`'s factory dict, run after every waiting frame of
    the others, `per_call` queries (at least one whole frame) a call."""

    fn: Callable[[Sequence], Sequence]
    per_call: int = 1

    def __call__(self, queries: Sequence) -> Sequence:
        return self.fn(queries)


def next_run(frames: list, functions: dict) -> tuple[list, list]:
    """(the frames the next call runs, the frames left waiting), from the waiting `frames`
    `(seq, function, queries)` in arrival order.

    The next call runs the first frame of another function than a `Bulk` one, with the frames
    of the same function that follow it among those (a reward between two decisions splits
    them: order is kept within a function, not across). With only bulk frames waiting, it runs
    the first one and those of its function right after it, up to its `per_call` queries."""
    urgent = [f for f in frames if not isinstance(functions.get(f[1]), Bulk)]
    if urgent:
        run = _leading(urgent, lambda f, total: True)
        taken = {id(f) for f in run}
        return run, [f for f in frames if id(f) not in taken]
    limit = functions[frames[0][1]].per_call
    run = _leading(frames, lambda f, total: total + len(f[2]) <= limit)
    return run, frames[len(run):]


def _leading(frames: list, fits: Callable[[tuple, int], bool]) -> list:
    """The first frame and the ones right after it for the same function while `fits(frame,
    queries so far)`."""
    run, total = [frames[0]], len(frames[0][2])
    for f in frames[1:]:
        if f[1] != run[0][1] or not fits(f, total):
            break
        run.append(f)
        total += len(f[2])
    return run

"""The canary guardrails as a background task of every worker process.

Every `interval` seconds each worker writes its own Recommend tally (`tally.Tally`, tagged with
the canary id) to the store, sums every worker's tally of the running canary, asks the
`guardrails.Guardrails` for a verdict and acts on it: promote or abort go through
`ModelRegistry.end_canary`, one write transaction that refuses a canary already ended, so when
two workers decide at once only one acts, logs it and writes the audit line.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import FailedPrecondition
from .canary import CanarySplit
from .guardrails import ABORT, PROMOTE, GuardrailPolicy, Guardrails, Verdict
from .registry import ModelRegistry
from .tally import Counts, Tally

__all__ = ["AUDIT_PRINCIPAL", "CanaryMonitor", "Outcomes", "VersionFigures"]

logger = logging.getLogger("tailor.models.monitor")

Outcomes = Callable[[str], tuple[int, int]]
"""model version -> (impressions, impressions with a click), from the impression log."""

ShownBetween = Callable[[str, float, float], tuple[int, int]]
"""(model version, start, end) -> (impressions shown from start to end, those clicked so far)."""

AUDIT_PRINCIPAL = "tailor/canary-guardrails"
"""The principal of the audit lines the automatic policy writes."""


@dataclass(frozen=True, slots=True)
class VersionFigures:
    """One serving version: its share of users and what the guardrails count of it."""

    version: str
    share: float
    counts: Counts
    impressions: int = 0
    clicks: int = 0
    """Impressions and clicked impressions since the canary started (`CanarySplit.since_start`)."""
    matured: tuple[int, int] | None = None
    """(impressions, clicked) of those shown since the start whose click window has passed:
    what the CTR test judges (None: the counts above)."""


class CanaryMonitor:
    """Checks the running canary on `check()` (the server's pass every `interval` seconds).

    Parameters
    ----------
    registry : ModelRegistry
    tally : Tally
        This worker's counts (the Recommender's).
    policy : GuardrailPolicy
    interval : float
        Seconds between checks.
    audit : object with ``record(principal, method, target, status, request_id)``, optional
    outcomes : Outcomes, optional
        Online outcomes per version; without it only the error and latency guardrails and the
        minimum sample decide. May be set after construction (`monitor.outcomes = ...`).
    shown_between : ShownBetween, optional
        Outcomes by showing time (`ModelStats.shown_between`): the CTR test then counts the
        impressions shown since the canary started and at least `click_window` seconds ago,
        with their clicks (a click comes after its impression: counted at once, a version's
        CTR reads low early, and the test keeps its smallest p-value). Without it the test
        counts `outcomes` since the start, clicks on earlier impressions included.
    click_window : float
        Seconds after its showing an impression counts in the CTR test.
    """

    def __init__(self, registry: ModelRegistry, tally: Tally, policy: GuardrailPolicy,
                 interval: float = 5.0, audit=None, outcomes: Outcomes | None = None,
                 shown_between: ShownBetween | None = None, click_window: float = 60.0,
                 clock: Callable[[], float] = time.time):
        self.registry = registry
        self.tally = tally
        self.guardrails = Guardrails(policy)
        self.interval = interval
        self.audit = audit
        self.outcomes = outcomes
        self.shown_between = shown_between
        self.click_window = click_window
        self.clock = clock
        self.last: tuple[str, Verdict] | None = None
        """(canary id, verdict) of this worker's latest check."""

    async def check(self) -> Verdict | None:
        """Publish this worker's tally, judge the running canary on every worker's, and act."""
        canary = self.registry.canary
        if canary is None:
            return None
        split = canary.split
        self.publish()
        figures = self.figures(split)
        outcomes = None
        if self.outcomes is not None:
            outcomes = tuple(f.matured or (f.impressions, f.clicks) for f in figures)
        verdict = self.guardrails.judge(split.id, figures[0].counts, figures[1].counts, outcomes)
        self.last = (split.id, verdict)
        if verdict.action in (ABORT, PROMOTE):
            await self._act(split, verdict)
        return verdict

    def publish(self) -> None:
        """Write this worker's tally of the running canary to the store (every check does, and
        a stopping server before its registry retires it)."""
        canary = self.registry.canary
        if canary is not None and self.tally.canary_id == canary.split.id:
            self.registry.canaries.report(self.tally.encode())

    def figures(self, split: CanarySplit | None = None) -> list[VersionFigures]:
        """Active version first, then the canary (when one runs): shares, counts summed over
        workers since the canary started, and outcomes when the impression log reports them."""
        split = split or (self.registry.canary.split if self.registry.canary else None)
        if split is None:
            active = self.registry.active
            return [VersionFigures(active.version, 1.0, Counts())] if active else []
        # this worker's live tally, the others' last reports
        raws = self.registry.canaries.tallies(skip_pid=os.getpid())
        counts = Tally.merge([*raws, self.tally.encode()], split.id)
        out, until = [], self.clock() - self.click_window
        for version, share in ((split.stable, 1.0 - split.share), (split.version, split.share)):
            shown = (split.since_start(version, self.outcomes(version))
                     if self.outcomes is not None else (0, 0))
            matured = (self.shown_between(version, split.started, until)
                       if self.outcomes is not None and self.shown_between is not None else None)
            out.append(VersionFigures(version, share, counts.get(version, Counts()), *shown,
                                      matured))
        return out

    def verdict_text(self) -> str:
        canary = self.registry.canary
        if canary is None:
            return ""
        if self.last is None or self.last[0] != canary.split.id:
            return "waiting for the first check"
        return f"{self.last[1].action}: {self.last[1].reason}"

    async def _act(self, split: CanarySplit, verdict: Verdict) -> None:
        try:
            await self.registry.end_canary(promote=verdict.action == PROMOTE, canary_id=split.id)
        except FailedPrecondition:  # another worker or an operator ended it first
            return
        log = logger.warning if verdict.action == ABORT else logger.info
        log("guardrails: canary %s %s: %s", split.version,
            "aborted" if verdict.action == ABORT else "promoted", verdict.reason)
        if self.audit is not None:
            await asyncio.to_thread(self.audit.record, AUDIT_PRINCIPAL, f"canary/{verdict.action}",
                                    "", f"{split.version}: {verdict.reason}", "")

"""Transport-agnostic attribution: validate, run the kernels off the event loop, report."""
from __future__ import annotations

import asyncio
import dataclasses
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import grpc

from kernels.attribution import Attribution, BudgetExceeded, Paths, attribute

from ..errors import InvalidArgument, ResourceExhausted, TailorError
from ..limits import DEFAULT_LIMITS, Limits
from .errors import from_kernel
from .journeys import JourneyQuery, journeys_from_store
from .logging import logger
from .paths import PathSet
from .spec import ModelSpec
from .wire_size import credits_bytes, matrix_bytes, per_touch_bytes

__all__ = ["Attributor", "AttributionResult", "DeadlineExceeded"]


class DeadlineExceeded(TailorError):
    """The caller's deadline passed before the attribution finished."""

    status = grpc.StatusCode.DEADLINE_EXCEEDED


@dataclass
class AttributionResult:
    """Kernel credits with the paths they came from.

    Attributes
    ----------
    spec : ModelSpec
    paths : Paths or None
        None when stored events held no journey (then `credits` is None too).
    credits : kernels.attribution.Attribution or None
    unattributed_conversions, unattributed_value : float
        Stored conversions with no touch in their window.
    stored : bool
        The paths were built from stored events (the response may carry them).
    """

    spec: ModelSpec
    paths: Paths | None
    credits: Attribution | None
    unattributed_conversions: float = 0.0
    unattributed_value: float = 0.0
    stored: bool = False


class Attributor:
    """Attribution of given paths, or of journeys built from stored events.

    Parameters
    ----------
    export : callable
        ``export(start, end, check)`` yields lists of stored raw events (tailor.v1.Event bytes),
        user by user (`ProfileRepository.export`), calling ``check()`` as it scans (it raises
        past the deadline).
    known_event_types : iterable of str
        Event types a touchpoint may have.
    concurrency : int
        Attributions computed at once (each in its own thread); the rest wait their turn.
    limits : Limits
        `attribution_seconds` bounds the computation of one request (with the call's deadline,
        whichever is sooner) and `attribution_touches` the paths of one request.
    max_message_bytes : int
        The transport's message limit (Settings `grpc_max_message_bytes`): per-touch credits
        that cannot fit one answer are refused before they are computed.
    """

    def __init__(self, export: Callable[..., Iterable[bytes]],
                 known_event_types: Iterable[str], concurrency: int = 2,
                 limits: Limits = DEFAULT_LIMITS, max_message_bytes: int = 64 << 20):
        self.export = export
        self.known_event_types = tuple(known_event_types)
        self.concurrency = concurrency
        self.limits = limits
        self.max_message_bytes = max_message_bytes
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created inside the running loop
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    def path_set(self) -> PathSet:
        """An empty PathSet bounded by `Limits.attribution_touches`."""
        return PathSet(self.limits.attribution_touches, self.limits.attribution_count_max)

    async def attribute(self, spec: ModelSpec, paths: PathSet,
                        time_remaining: float | None = None) -> AttributionResult:
        """`time_remaining`: seconds left of the call's deadline (None: no deadline)."""
        spec.check()
        async with self.slots:
            deadline = self._deadline(time_remaining)
            return await self._within(deadline, asyncio.to_thread(self._attribute, spec, paths,
                                                                  deadline[0]))

    async def attribute_stored(self, spec: ModelSpec, query: JourneyQuery,
                               time_remaining: float | None = None) -> AttributionResult:
        spec.check()
        query.check(self.known_event_types, self.limits.latest_timestamp)
        query = dataclasses.replace(query, timestamps=spec.model == "time_decay")
        async with self.slots:
            deadline = self._deadline(time_remaining)
            return await self._within(deadline, asyncio.to_thread(
                self._attribute_stored, spec, query, deadline[0]))

    def _deadline(self, time_remaining: float | None) -> tuple[float, bool]:
        """(time.monotonic() deadline, True when the caller's deadline is the sooner)."""
        budget = self.limits.attribution_seconds
        caller = math.inf if time_remaining is None else max(time_remaining, 0.0)
        return time.monotonic() + min(budget, caller), caller < budget

    async def _within(self, deadline: tuple[float, bool], work):
        try:
            return await work
        except BudgetExceeded:
            if deadline[1]:
                raise DeadlineExceeded("attribution: the call's deadline passed") from None
            raise ResourceExhausted(
                f"attribution: the computation exceeded its budget of "
                f"{self.limits.attribution_seconds:g}s (Limits.attribution_seconds, "
                "TAILOR_LIMITS__ATTRIBUTION_SECONDS): fewer paths or channels, or a lower "
                "Markov order") from None

    def _attribute(self, spec: ModelSpec, path_set: PathSet,
                   deadline: float | None = None) -> AttributionResult:
        paths = path_set.build()
        return AttributionResult(spec, paths, self._run(spec, paths, path_set.untimed, deadline))

    def _attribute_stored(self, spec: ModelSpec, query: JourneyQuery,
                          deadline: float | None = None) -> AttributionResult:
        journeys = journeys_from_store(self.export, query, deadline)
        logger.info("stored journeys %s..%s by %s: %d paths from %d users, %g unattributed",
                    query.start, query.end, query.by,
                    0 if journeys.paths is None else journeys.paths.n_paths, journeys.users,
                    journeys.unattributed_conversions)
        credits = None if journeys.paths is None else self._run(spec, journeys.paths, None,
                                                                deadline, stored=True)
        return AttributionResult(spec, journeys.paths, credits, journeys.unattributed_conversions,
                                 journeys.unattributed_value, stored=True)

    @staticmethod
    def _credits_bytes(spec: ModelSpec, paths: Paths, stored: bool) -> int:
        """The bytes of the answer's per-touch credits (`path_credits`), and, for `stored`
        journeys, of the journeys too (`stored_paths`): `wire_size.per_touch_bytes`, exact;
        0 without `path_credits`."""
        return per_touch_bytes(paths, stored) if spec.path_credits else 0

    def _check_fits(self, field: str, least: int, what: str, instead: str) -> None:
        """Refuse an answer of at least `least` bytes past the message limit: computed, such
        answers failed to send, RESOURCE_EXHAUSTED naming nothing."""
        if least > self.max_message_bytes:
            raise InvalidArgument(field, f"{what} take at least {least / 2**20:.1f} MiB "
                                  f"({least:,} bytes), past the "
                                  f"{self.max_message_bytes / 2**20:g} MiB message limit "
                                  f"(grpc_max_message_bytes): ask {instead}")

    def _run(self, spec: ModelSpec, paths: Paths, untimed: int | None,
             deadline: float | None = None, stored: bool = False) -> Attribution:
        """The kernel's credits; an answer that cannot fit one message is refused: per-touch
        credits before they are computed, a transition matrix or ORDERED credits by rank once
        they are (their sizes are known then), counted with the channels' credits."""
        spec.check_paths(paths, untimed)
        least = self._credits_bytes(spec, paths, stored)
        fewer = "for a shorter time range" if stored else "for fewer paths at a time"
        self._check_fits("spec.path_credits", least, f"per-touch credits of "
                         f"{len(paths.indices)} touches", f"without path_credits, or {fewer}")
        if deadline is not None and time.monotonic() > deadline:
            raise BudgetExceeded("the deadline passed before the computation started")
        try:
            result = attribute(paths, spec.model, deadline=deadline,
                               max_rank_cells=self.limits.attribution_rank_cells,
                               **spec.kernel_kwargs())
        except ValueError as err:
            raise from_kernel(err) from None
        d, with_credits = result.details, " with the per-touch credits" if least else ""
        least += credits_bytes(result)
        if spec.transition_matrix:
            self._check_fits("spec.transition_matrix",
                             least + matrix_bytes(d["states"], d["transition_matrix"]),
                             f"the transition matrix's {len(d['states'])} states and "
                             f"{d['transition_matrix'].nnz} transitions{with_credits}",
                             f"without transition_matrix, or {fewer}")
        if "rank_conversions" in d:
            channels, ranks = d["rank_conversions"].shape
            self._check_fits("spec.shapley_form", least,
                             f"the ORDERED credits by rank ({channels} channels x {ranks} "
                             f"ranks){with_credits}", "in the COUNTS form, or for paths of "
                             "fewer distinct channels")
        return result


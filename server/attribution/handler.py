"""Transport-agnostic attribution: validate, run the kernels off the event loop, report."""
from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kernels.attribution import Attribution, Paths, attribute

from .errors import from_kernel
from .journeys import JourneyQuery, journeys_from_store
from .logging import logger
from .paths import PathSet
from .spec import ModelSpec

__all__ = ["Attributor", "AttributionResult"]


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
        ``export(start, end)`` yields stored raw events (tailor.v1.Event bytes) user by user
        (`ProfileRepository.export`).
    known_event_types : iterable of str
        Event types a touchpoint may have.
    concurrency : int
        Attributions computed at once (each in its own thread); the rest wait their turn.
    """

    def __init__(self, export: Callable[[float, float], Iterable[bytes]],
                 known_event_types: Iterable[str], concurrency: int = 2):
        self.export = export
        self.known_event_types = tuple(known_event_types)
        self.concurrency = concurrency
        self._slots: asyncio.Semaphore | None = None

    @property
    def slots(self) -> asyncio.Semaphore:
        if self._slots is None:  # created inside the running loop
            self._slots = asyncio.Semaphore(self.concurrency)
        return self._slots

    async def attribute(self, spec: ModelSpec, paths: PathSet) -> AttributionResult:
        spec.check()
        async with self.slots:
            return await asyncio.to_thread(self._attribute, spec, paths)

    async def attribute_stored(self, spec: ModelSpec, query: JourneyQuery) -> AttributionResult:
        spec.check()
        query.check(self.known_event_types)
        query = dataclasses.replace(query, timestamps=spec.model == "time_decay")
        async with self.slots:
            return await asyncio.to_thread(self._attribute_stored, spec, query)

    def _attribute(self, spec: ModelSpec, path_set: PathSet) -> AttributionResult:
        paths = path_set.build()
        return AttributionResult(spec, paths, self._run(spec, paths, path_set.untimed))

    def _attribute_stored(self, spec: ModelSpec, query: JourneyQuery) -> AttributionResult:
        journeys = journeys_from_store(self.export, query)
        logger.info("stored journeys %s..%s by %s: %d paths from %d users, %g unattributed",
                    query.start, query.end, query.by,
                    0 if journeys.paths is None else journeys.paths.n_paths, journeys.users,
                    journeys.unattributed_conversions)
        credits = None if journeys.paths is None else self._run(spec, journeys.paths, None)
        return AttributionResult(spec, journeys.paths, credits, journeys.unattributed_conversions,
                                 journeys.unattributed_value, stored=True)

    @staticmethod
    def _run(spec: ModelSpec, paths: Paths, untimed: int | None) -> Attribution:
        spec.check_paths(paths, untimed)
        try:
            return attribute(paths, spec.model, **spec.kernel_kwargs())
        except ValueError as err:
            raise from_kernel(err) from None

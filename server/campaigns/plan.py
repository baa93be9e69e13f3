"""PlanCampaign: a campaign's decisions for a whole audience, batch by batch.

A stream of `PlanRequest`s (the first names the campaign and the context of every decision,
which later messages leave empty or repeat; each carries a batch of user ids) is answered by one
`PlanBatch` per batch, in order (an empty batch by an empty one). A batch is decided
`DECIDE_SLICE` users at a time (other calls run in between), each slice with one read of the
live campaign (the worker's cached snapshot: see Archiving), one profile read (feature states
and meta records, `ProfileStates.states_and_meta`, when the contact policy or the campaign's
context needs them), one `ContactPolicy.verdicts` call, one bandit draw
(`DecisionMaker.decide_batch`) and one decision-log call (the campaigns writer process,
function "decision_batches", through its own `AdaptiveBatcher`, a slice a frame; the frequency
caps are enforced there as for ChooseVariant).
That function is `Bulk`: the writer commits up to `repository.PLAN_SLICES_A_COMMIT` slices a
transaction (`PLAN_SLICES_ALONE` when no other batch comes), after any other batch waiting (a
ChooseVariant beside a plan waits for at most the slice being committed). A batch is answered
only once all its decisions are committed, so whatever a client has received is in the decision
log, even if the stream then breaks. Decisions the caller never received (their batch was not
yet answered when the stream was cancelled or failed, a batch whose slice failed included) are
withdrawn once their slices are committed (`Campaigns.withdraw`): stored as suppressed with the
reason `records.WITHDRAWN`, they take no reward, count toward no frequency cap or decision
count, and no default reward closes them (which would teach the policy from a variant nobody
saw). A batch counts as answered once it is handed to the transport (the servicer says so,
`PlanBatch.handed`, once it is converted), so one being written when the stream breaks is kept,
and one being converted is withdrawn.

Reading runs ahead of answering by at most `limits.plan_read_ahead_users` users (a task reads
and decides while the stream writes answers), so deciding the next batches overlaps logging this
one when batches are small beside that bound. A batch that does not fit beside those already
held waits until they are answered (larger than the bound, it is read alone); within a batch,
the writer starts on each slice while the next is decided.

Contact policy: `apply_verdicts` is the one place where a batch's `Verdict`s (whom, on which
channel, when) meet its decisions; users it suppresses are not drawn for and are logged as
suppressed.

Archiving: each slice reads the live campaign (the worker's snapshot, at most
`campaign_state_refresh_seconds` old; the worker that archived drops it at once), so a
campaign archived while a stream runs ends it with FAILED_PRECONDITION at the next slice: the
batches answered before stand, the slices of its batch already logged are withdrawn, and at
most the batches decided ahead (`plan_read_ahead_users`), decided before the archive, are still
answered before the error.

Idleness: a stream holds one of its worker's `limits.plan_streams` places. Once every message
read is answered and the answer taken, the client owes the next message (or the stream's end):
past `limits.plan_idle_seconds` of that, the stream ends `PlanStreamIdle` (RESOURCE_EXHAUSTED;
the batches answered stand). Deciding, committing and a client slow to read its answers do not
count (`_Idle`). A client that stopped reading is bounded by the rpc layer instead: an answer
the transport cannot take within `limits.plan_unread_seconds` ends the call `RepliesUnread`
(RESOURCE_EXHAUSTED; `server.rpc.RpcInterceptor`), which closes this stream as a cancel does:
the answer being written is kept (the client may still get it), later batches are withdrawn.
A stream refused because the worker serves `plan_streams` already is read to its end (its
messages dropped) before the refusal is sent, as every refused stream of requests is
(`server.rpc`, `DRAIN_SECONDS`).

A user the stream named before (in the same message or an earlier one: an audience file listing
them twice) is answered suppressed with the reason `DUPLICATE` there (logged so, like any
suppressed user): one decision drawn, counted and capped for them, one contact (`_Named`).
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

import numpy as np

from ..contact import Verdict
from ..contact.consent import TRANSACTIONAL
from ..errors import InvalidArgument
from ..profiles.damage import PROFILE_DAMAGED
from ..validation import check_count, check_id
from .choice import report_refused
from .decision_ids import decision_ids
from .errors import PlanStreamIdle, PlanStreamsBusy, PlanStreamTooLong
from .records import DUPLICATE, NO_ARM, PENDING, SUPPRESSED, Fallback

if TYPE_CHECKING:
    from .handler import Campaigns

__all__ = ["PlanRequest", "PlanBatch", "Planner", "DECIDE_SLICE", "apply_verdicts",
           "damaged_verdicts"]

DECIDE_SLICE = 250
"""Users of a message decided between two turns of the event loop and logged together. A message
may carry `limits.plan_batch_users`; decided at once (~16 us a user on the worker), 2,500 of them
held every other call of the worker up for ~40 ms, and logged at once, the writer's transaction
(and LMDB's write lock, which every other writer waits for) for ~75 ms (~30 us a user)."""


@dataclass(frozen=True)
class PlanRequest:
    """One message of a PlanCampaign stream."""

    campaign_id: str = ""
    user_ids: Sequence[str] = ()
    context: Mapping[str, float] = field(default_factory=dict)


@dataclass
class PlanBatch:
    """One batch's decisions, column by column (index i: the batch's i-th user). `arms` holds
    HOLDOUT for the holdout and NO_ARM for suppressed users; `reasons` is "" for users not
    suppressed."""

    user_ids: Sequence[str]
    decision_ids: list[str]
    arms: list[int]
    propensities: list[float]
    variant_ids: list[str]
    channels: list[str]
    send_at: list[float]
    reasons: list[str]
    channel_propensities: list[float] | None = None
    """Per user, the probability the contact policy had of its channel (None: 1 for all)."""
    send_at_propensities: list[float] | None = None
    """Per user, the probability the contact policy had of its send-time slot (None: 1)."""
    handed: Callable[[], None] | None = field(default=None, repr=False, compare=False)
    """Set on a batch `Planner.plan` yields: the caller calls it once it gave the batch to the
    transport (the batch is then kept whatever happens next); a caller that asks for the next
    batch has taken this one too. A stream closed before either withdraws it."""

    def __len__(self) -> int:
        return len(self.user_ids)

    @classmethod
    def concat(cls, batches: Sequence[PlanBatch]) -> PlanBatch:
        """The batches as one, in order (a per-user probability a batch lacks counts as 1)."""
        if len(batches) == 1:
            return batches[0]
        columns = {}
        for f in fields(cls):
            parts = [getattr(b, f.name) for b in batches]
            if all(p is None for p in parts):
                columns[f.name] = None
            else:
                columns[f.name] = [x for b, p in zip(batches, parts)
                                   for x in (p if p is not None else [1.0] * len(b))]
        return cls(**columns)


class _ReadAhead:
    """Users of a stream decided but not yet answered: `take` waits while `most` would be
    exceeded (a batch larger than `most` goes alone, once nothing else is held)."""

    def __init__(self, most: int):
        self.most, self.held = most, 0
        self._freed = asyncio.Event()

    async def take(self, n: int) -> None:
        await asyncio.sleep(0)  # other calls run between a batch's check and its decisions
        while self.held and self.held + n > self.most:
            self._freed.clear()
            await self._freed.wait()
        self.held += n

    def release(self, n: int) -> None:
        self.held -= n
        self._freed.set()


class _Idle:
    """A stream's no-progress clock (`limits.plan_idle_seconds`): it runs only while every
    message read has been answered and the answer taken (the client then owes the next
    message), from the latest of those; deciding, committing and a client slow to read
    answers stop it."""

    def __init__(self, most: float):
        self.most, self.owed, self.since = most, 0, time.monotonic()

    def answered(self) -> None:
        self.owed -= 1
        self.since = time.monotonic()

    async def next(self, messages) -> PlanRequest | None:
        """The client's next message (None after the last); `PlanStreamIdle` once it owed one
        for `most` seconds. The read's outcome is retrieved however the wait ends: a client's
        cancel ends its stream in the turn its reader is cancelled, and asyncio logged that
        end (StopAsyncIteration) at ERROR, once per cancelled stream."""
        waiting = asyncio.ensure_future(anext(messages))
        try:
            while True:
                owed_for = 0.0 if self.owed else time.monotonic() - self.since
                done, _ = await asyncio.wait({waiting}, timeout=self.most - owed_for)
                if done:
                    break
                if not self.owed and time.monotonic() - self.since >= self.most:
                    raise PlanStreamIdle(self.most)
        finally:
            if not waiting.done():
                waiting.cancel()
            elif not waiting.cancelled():
                waiting.exception()  # retrieved, however this wait ends (see above)
        try:
            req = waiting.result()
        except StopAsyncIteration:
            return None
        self.owed += 1
        self.since = time.monotonic()
        return req


class _Named:
    """The users a stream named so far, as 64-bit hashes (8 bytes a user: 80 MB for a stream of
    `plan_stream_users`' default 10M), in sorted runs merged as they grow (each user is looked
    up in a few runs, each merge touches a user O(log n) times). Two distinct ids share a hash
    with a chance of about n^2 / 2^65 per stream (3e-6 for 10M users, 1e-9 for 200k): the later
    one would be answered `DUPLICATE`."""

    def __init__(self):
        self._runs: list[np.ndarray] = []

    def again(self, user_ids: Sequence[str]) -> frozenset[int]:
        """Indexes of `user_ids` named before (earlier in it, or in an earlier call); the
        others are remembered."""
        seen: dict[str, int] = {}
        again = {i for i, u in enumerate(user_ids) if seen.setdefault(u, i) != i}
        first = list(seen)
        h = np.fromiter(map(hash, first), np.int64, len(first))
        order = np.argsort(h)
        h = h[order]  # sorted: searchsorted walks each run once
        old = np.zeros(len(first), bool)
        for run in self._runs:
            at = np.minimum(np.searchsorted(run, h), len(run) - 1)
            old |= run[at] == h
        if old.any():
            again.update(seen[first[k]] for k in order[old].tolist())
        new = h[~old]
        if len(new):
            self._runs.append(new)
        while len(self._runs) > 1 and len(self._runs[-2]) <= 2 * len(self._runs[-1]):
            last = self._runs.pop()  # disjoint sorted runs: timsort merges them in one pass
            self._runs[-1] = np.sort(np.concatenate((self._runs[-1], last)), kind="stable")
        return frozenset(again)


def apply_verdicts(verdicts: Sequence[Verdict] | None, n: int) -> np.ndarray:
    """Indexes of the users a batch's contact verdicts let through (all when there are none:
    the campaign has nothing for the policy to check).

    The seam with the contact policy (`ContactPolicy.verdicts(campaign, contacts, now)`, one
    `Verdict` per user): suppressed users get no draw and no variant.
    """
    if verdicts is None:
        return np.arange(n)
    return np.array([i for i, v in enumerate(verdicts) if not v.suppressed], np.int64)


def _same_context(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    """Whether two messages' contexts hold the same keys and values, a NaN matching a NaN (a
    key the campaign does not read may hold one, as ChooseVariant's may: a client repeating
    the first message's context was refused, NaN being unequal to itself)."""
    return a.keys() == b.keys() and all(
        x == y or (math.isnan(x) and math.isnan(y)) for x, y in ((a[k], b[k]) for k in a))


class Planner:
    """Decides and logs PlanCampaign batches for `Campaigns` (which owns the pieces); `log`
    takes a batch's decision-log rows (`DecisionRecord` tuples) and answers once committed;
    `withdraw` (`Campaigns._withdraw_after`) takes the (pending decision ids, commit future)
    of the slices nobody received when a stream ends."""

    def __init__(self, campaigns: Campaigns, log, withdraw):
        self.campaigns = campaigns
        self.limits = campaigns.limits
        self._log, self._withdraw = log, withdraw
        self._streams = 0
        """Streams being served (`plan`)."""

    async def plan(self, requests: AsyncIterable[PlanRequest]) -> AsyncIterator[PlanBatch]:
        """One `PlanBatch` per request batch, in order, each once its decisions are committed;
        `PlanStreamsBusy` while `limits.plan_streams` streams are served already."""
        if self._streams >= self.limits.plan_streams:
            raise PlanStreamsBusy(self.limits.plan_streams)
        queue: asyncio.Queue = asyncio.Queue()
        ahead = _ReadAhead(self.limits.plan_read_ahead_users)
        idle = _Idle(self.limits.plan_idle_seconds)
        unanswered: collections.deque = collections.deque()  # (pending ids, slice future)
        reader = asyncio.create_task(self._read(requests, queue, ahead, unanswered, idle))
        self._streams += 1
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise item
                planned, slices = item
                outcome = self._outcome(planned, await _all_logged(slices))
                ahead.release(len(planned))
                outcome.handed = _handing(unanswered, len(slices))
                yield outcome
                outcome.handed()  # the caller took it, and asks for the next
                idle.answered()
        finally:
            self._streams -= 1
            # The reader, suspended here, adds no slice once cancelled: `unanswered` is final.
            reader.cancel()
            if unanswered:
                self._withdraw(list(unanswered))

    async def _read(self, requests: AsyncIterable[PlanRequest], queue: asyncio.Queue,
                    ahead: _ReadAhead, unanswered: collections.deque, idle: _Idle) -> None:
        """Reads, checks and decides each batch, hands it to the writer and queues it (once
        `ahead` has room for its users); every slice handed to the writer goes to `unanswered`
        at once. A client that owes the next message for `idle.most` seconds ends the stream
        (`_Idle`)."""
        first, total, named = None, 0, _Named()
        messages = aiter(requests)
        try:
            while (req := await idle.next(messages)) is not None:
                if first is None:
                    first = self._first(req)
                elif req.campaign_id and req.campaign_id != first.campaign_id:
                    raise InvalidArgument("campaign_id", "must be empty or the first message's "
                                          "after the first message")
                elif req.context and not _same_context(req.context, first.context):
                    raise InvalidArgument("context", "is the first message's for the whole "
                                          "stream: later messages leave it empty (or repeat it)")
                total += len(req.user_ids)
                self._check_users(req.user_ids, total)
                if req.user_ids:
                    await ahead.take(len(req.user_ids))  # other calls run here too
                    again = named.again(req.user_ids)
                    await queue.put(await self._decide_and_log(first, req.user_ids, unanswered,
                                                               again))
                else:  # answered too, in its turn (one answer a message), with no decisions
                    await queue.put((PlanBatch([], [], [], [], [], [], [], []), []))
            await queue.put(None)
        except Exception as err:  # noqa: BLE001 - raised by `plan`, after the batches before it
            await queue.put(err)

    def _first(self, req: PlanRequest) -> PlanRequest:
        if not req.campaign_id:
            raise InvalidArgument("campaign_id", "is required on the first message")
        check_id("campaign_id", req.campaign_id, self.limits.id_bytes)
        check_count("context", len(req.context), self.limits.context_entries)
        self.campaigns.live(req.campaign_id)  # NOT_FOUND / FAILED_PRECONDITION now
        return req

    def _check_users(self, user_ids: Sequence[str], total: int) -> None:
        lim = self.limits
        check_count("user_ids", len(user_ids), lim.plan_batch_users)
        if total > lim.plan_stream_users:
            raise PlanStreamTooLong(lim.plan_stream_users)
        for i, user_id in enumerate(user_ids):
            check_id("user_id", user_id, lim.id_bytes, f"user_ids[{i}].")

    async def _decide_and_log(self, first: PlanRequest, user_ids: Sequence[str],
                              unanswered: collections.deque, again: frozenset[int] = frozenset()
                              ) -> tuple[PlanBatch, list[asyncio.Future]]:
        """A message's decisions, `DECIDE_SLICE` users at a time with other calls running in
        between, each slice handed to the decision log as soon as it is decided (the writer
        starts on it while the next is decided, and its transactions stay small); returns the
        batch and the futures of its slices' suppression reasons. Each slice goes to
        `unanswered` (its decision ids logged pending, its future) as it is handed over.
        `again`: the indexes of users the stream named before (answered `DUPLICATE`).
        Each slice reads the live campaign (`Campaigns.live`, a cached snapshot): one archived
        meanwhile raises `CampaignArchived` there, so the rest of the message is not decided
        and the slices handed over are withdrawn, never answered."""
        now = time.time()
        batches, logged = [], []
        for lo in range(0, len(user_ids), DECIDE_SLICE):
            if lo:
                await asyncio.sleep(0)
            live = self.campaigns.live(first.campaign_id)
            part = frozenset(i - lo for i in again if lo <= i < lo + DECIDE_SLICE)
            batch, rows = self._decide(first, live, user_ids[lo:lo + DECIDE_SLICE], now, part)
            batches.append(batch)
            logged.append(self._log.enqueue(rows))
            # every row's id, aligned with the commit's reasons (one a row); `withdraw` leaves
            # the rows the planner or the writer suppressed as they are
            unanswered.append(([r[0] for r in rows], logged[-1]))
        return PlanBatch.concat(batches), logged

    def _decide(self, first: PlanRequest, live: tuple, user_ids: Sequence[str],
                now: float, again: frozenset[int] = frozenset()) -> tuple[PlanBatch, list[tuple]]:
        """A slice's decisions and their decision-log rows under `live` (`Campaigns.live`: the
        campaign's entry and posterior): one profile read (feature states and, when the contact
        policy checks anything, meta records), one call of the policy, one bandit draw for the
        users it lets through; the users at `again` (named before) are suppressed `DUPLICATE`."""
        c, n = self.campaigns, len(user_ids)
        entry, blob = live
        spec = entry.campaign.spec
        states, verdicts, contacts = self._profiles(entry, user_ids, now)
        if again:
            verdicts = list(verdicts or [Verdict(False, "", entry.channels[0], 0.0)] * n)
            for i in again:
                verdicts[i] = Verdict(True, DUPLICATE, verdicts[i].channel, 0.0)
        allowed = apply_verdicts(verdicts, n)
        contexts = entry.context.build_batch(states, first.context, now)
        arms, props = np.full(n, NO_ARM, np.int64), np.zeros(n)
        drawn = c.decider.decide_batch(spec, blob, [user_ids[i] for i in allowed],
                                       [contexts[i] for i in allowed])
        arms[allowed], props[allowed] = drawn.arms, drawn.propensities
        names = {a: v.id for a, v in enumerate(spec.variants)}
        batch = PlanBatch(user_ids, decision_ids(n, now), arms.tolist(), props.tolist(),
                          [names.get(a, "") for a in arms.tolist()],
                          [entry.channels[0]] * n,
                          [0.0] * n, [""] * n)
        if verdicts is not None:
            batch.channels = [v.channel for v in verdicts]
            batch.send_at = [v.send_at for v in verdicts]
            batch.reasons = [v.reason if v.suppressed else "" for v in verdicts]
            batch.channel_propensities = [v.channel_propensity for v in verdicts]
            batch.send_at_propensities = [v.send_at_propensity for v in verdicts]
        choices = rechecks = None
        if verdicts is not None:
            choices = [entry.choices(v) for v in verdicts]
        if contacts is not None:  # the policy read them (else it checks nothing to recheck)
            rechecks = [() if v.suppressed else c.recheck(entry, contact, v.channel, fb)
                        for v, contact, fb in zip(verdicts, contacts, choices)]
        return batch, _rows(spec, entry.caps, batch, contexts, now, choices, rechecks)

    def _profiles(self, entry, user_ids: Sequence[str],
                  now: float) -> tuple[list, Sequence[Verdict] | None, Sequence | None]:
        """(feature states, contact verdicts and what they read, or None when the policy has
        nothing to check) from one profile read."""
        c = self.campaigns
        if not entry.reads_profile:
            return c.profile_states(user_ids, entry.with_states), None, None
        states, contacts, damaged = c.read_contacts(entry, user_ids)
        verdicts = c.contact.verdicts(entry.campaign.spec, contacts, now)
        return states, damaged_verdicts(list(verdicts), damaged), contacts

    @staticmethod
    def _outcome(batch: PlanBatch, reasons: Sequence) -> PlanBatch:
        """The batch as logged: the writer suppresses the decisions over a frequency cap (or
        whose user's contact history is damaged: reported), or logs them on a fallback channel
        with room (its answer is each one's reason, a `Fallback`, or "" when logged as
        decided)."""
        for i, reason in enumerate(reasons):
            if reason.__class__ is Fallback:
                if batch.channel_propensities is None:
                    batch.channel_propensities = [1.0] * len(batch)
                batch.channels[i], batch.channel_propensities[i] = reason
            elif reason and not batch.reasons[i]:
                batch.arms[i], batch.propensities[i], batch.variant_ids[i] = NO_ARM, 0.0, ""
                batch.reasons[i] = reason
                report_refused(reason, batch.user_ids[i])
        return batch


def _handing(unanswered: collections.deque, slices: int) -> Callable[[], None]:
    """`PlanBatch.handed` of a batch of `slices` slices, the oldest in `unanswered` (batches
    are answered in order): takes them out, once (then they are kept whatever happens)."""
    left = [slices]

    def handed() -> None:
        while left[0]:
            unanswered.popleft()
            left[0] -= 1
    return handed


async def _all_logged(parts: Sequence[asyncio.Future]) -> list[str]:
    """The suppression reasons of a message's slices, in order, once all are committed (a
    caller cancelled meanwhile leaves them running: `Campaigns._withdraw_after` waits for them)."""
    return [reason for part in parts for reason in await asyncio.shield(part)]


def _rows(spec, caps: Mapping[str, tuple], batch: PlanBatch, contexts: Sequence[list[float]],
          now: float, choices: Sequence[tuple] | None = None,
          rechecks: Sequence[tuple] | None = None) -> list[tuple]:
    """The decision-log rows of a batch (`DecisionRecord` fields, as ChooseVariant logs them,
    with the caps the writer enforces and the channels it may fall back on, `choices`, one
    tuple a user or None for none, and what it checks again of the contact policy,
    `rechecks`, likewise; the reward window runs from the send time); a suppressed
    user's row is what `DecisionRecord.suppressed` makes of it: no arm, variant, propensity,
    window or context."""
    cid, window, linear = spec.campaign_id, spec.reward_window_seconds, spec.dim > 0
    ones, tx = [1.0] * len(batch), spec.purpose == TRANSACTIONAL
    return [(d, cid, u, now, a, p, None, ctx, 0, v, PENDING, max(t, now) + window, linear, ch, t,
             "", caps[ch], pc, pt, tx, b"", fb, rc)
            if not r else (d, cid, u, now, NO_ARM, 0.0, None, [], 0, "", SUPPRESSED, now, False,
                           ch, t, r, (), pc, pt, tx, b"", (), ())
            for d, u, a, p, v, ch, t, r, ctx, pc, pt, fb, rc in zip(
                batch.decision_ids, batch.user_ids, batch.arms, batch.propensities,
                batch.variant_ids, batch.channels, batch.send_at, batch.reasons, contexts,
                batch.channel_propensities or ones, batch.send_at_propensities or ones,
                choices or itertools.repeat(()), rechecks or itertools.repeat(()))]


def damaged_verdicts(verdicts: list[Verdict], damaged: Sequence[int]) -> list[Verdict]:
    """`verdicts` with those at the positions `damaged` (users whose profile record does not
    open or decode: `read_contacts`) suppressed `PROFILE_DAMAGED`: their consent and
    addresses cannot be read, so nobody knows whether they may be contacted."""
    for i in damaged:
        verdicts[i] = Verdict(True, PROFILE_DAMAGED, verdicts[i].channel, 0.0)
    return verdicts

"""Transport-agnostic campaign operations: definitions, decisions, rewards, stats, export.

Decisions are logged (group commit: concurrent ChooseVariant calls share one write
transaction) before the reply, so a reward may follow at once from any worker process.
Rewards (explicit and from tracked events) are a second group-commit writer. Both run in the
campaigns writer process (`server.batching.WriterProcess`), which shares no GIL with the event
loop.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np

from kernels import bandits as B
from kernels.bandit_stats import campaign_stats, stats_view

from .. import metrics
from ..batching import AdaptiveBatcher, WriterProcess
from ..contact import Contact, ContactPolicy, Verdict
from ..contact.consent import MARKETING, TRANSACTIONAL
from ..contact.damage import SEND, report_damaged
from ..interfaces import ErasedUsers, ProfileStates, SuppressedAddresses
from ..limits import DEFAULT_LIMITS, Limits
from ..profiles.damage import DECISION, report_found
from ..profiles.errors import ProfileDamaged
from ..store import Store
from ..store.damaged import DAMAGED
from ..store.outbox import Batch
from ..validation import check_count, check_id, check_not_negative, check_stored_id, check_window
from .cache import CampaignCache, Entry
from .choice import Choice, PendingChoice
from .context import UNREAD, pii_positions
from .decision_ids import TimedIds, fixed_decision_id
from .errors import CampaignArchived, CampaignNotFound
from .logging import logger
from .plan import PlanBatch, Planner, PlanRequest, damaged_verdicts
from .policy import DecisionMaker
from .power import (
    SampleSizeAnswer,
    SampleSizeQuery,
    sample_size,
    seconds_to_significance,
)
from .recheck import digest as stamp_of
from .recheck import recheck_of
from .records import (
    NO_ARM,
    PENDING,
    SUPPRESSED,
    DecisionRecord,
    Fallback,
    RewardOutcome,
    RewardRequest,
    logged_pending,
)
from .repository import (
    DECISION_DAMAGED,
    ERASURE_SECRETS_ENV,
    OUTBOX_TAG,
    PLAN_SLICES_ALONE,
    CampaignRepository,
    split_counts,
)
from .requests import RequestDigests
from .spec import Campaign, CampaignSpec

if TYPE_CHECKING:
    from collections.abc import AsyncIterable, AsyncIterator

    from ..profiles import TrackedEvent

__all__ = ["Campaigns", "Choice", "PendingChoice"]

_decision_id = TimedIds()


_NONE: frozenset[str] = frozenset()

HOLD_WARNING_S = 30.0
"""How long the reward-window sweep may be held back by a campaigns outbox entry (a batch whose
rewards wait for their replay: `CampaignRepository.held_since`) before it says so: longer than
any batch in flight (`server.profiles.outbox.REPLAY_AFTER_S`)."""


class Campaigns:
    """Reads profile states through `ProfileStates`; is an `EventListener` (rewards from tracked
    events), a `UserEraser` (its decision indexes) and a `UserExporter` (decisions, contacts) for
    the profiles domain (`server.app`). Campaign reads on the decision path: `cache`."""

    def __init__(self, store: Store, profiles: ProfileStates, *, propensity_refresh_s: float = 0.25,
                 state_refresh_s: float = 0.1, sweep_seconds: float = 1.0,
                 limits: Limits = DEFAULT_LIMITS, contact: ContactPolicy | None = None,
                 suppressions: SuppressedAddresses | None = None,
                 group_commit: tuple[float, int] = (0.0, 1),
                 erasures: ErasedUsers | None = None, erasure_secrets: str | None = None):
        self.repo = CampaignRepository(store, limits)
        self._digests = RequestDigests(limits.request_id_window_seconds)
        """A request id's digests (the unkeyed one only in the first window: `requests`)."""
        self._store = store
        self.limits = limits
        self.contact = contact or ContactPolicy()
        self._suppressions = suppressions
        self._erasures = erasures
        """Which users were erased (None: not told, as in bare test setups)."""
        self._profiles = profiles
        self.sweep_seconds = sweep_seconds
        self._hold_told: float | None = None
        """The hold `sweep_due` last warned about (once per entry holding the sweep)."""
        self._cache = CampaignCache(self.repo, profiles, self.contact, suppressions,
                                    state_refresh_s, limits.context_value_max)
        # Decisions use one generator owned by the event-loop thread (the native Rng is not
        # thread-safe); stats seed one of their own from the posterior (`stats`).
        self.decider = DecisionMaker(B.new_rng(int.from_bytes(os.urandom(8), "little")),
                                     propensity_refresh_s, limits.lints_propensity_samples)
        # The writer's limits (how many and how old contacts the caps count, reward bounds) are
        # this server's, which may come from a config file the child does not read.
        # `erasure_secrets`: where the writer finds the `erasure` keyring ("" for the
        # environment), to refuse decisions of users erased while they were in flight.
        env = {"TAILOR_LIMITS": limits.model_dump_json()}
        if erasure_secrets is not None:
            env[ERASURE_SECRETS_ENV] = erasure_secrets
        self._writer = WriterProcess("server.campaigns.repository:writer_functions", store,
                                     name="campaigns", env=env)
        # One decision batch in flight: the calls that arrive while it commits all go into the
        # next (two in flight split them into a big and a small batch, each with its commit
        # and fsync: the commit's CPU, mostly the kernel's, is the writer's largest cost).
        # `group_commit` (seconds, decisions): under load a batch also waits a little for more.
        # ReportReward's rewards, which close decision records, commit the same way. Rewards
        # from tracked events come a group at a time (one ingestion batch's) and wait for no
        # company: they go through a batcher of their own, with the sends the same events count
        # as contacts and the clearing of their batch's outbox entry (`event_effects`: one
        # request a batch, applied in one transaction; at most as many a call as the ingestion
        # commits batches a transaction, so a call is no bigger than an ingestion's).
        linger, linger_from = group_commit
        self._log, self._rewards = (
            AdaptiveBatcher(runner=self._writer.runner(function, concurrency=1), max_size=512,
                            max_wait=0.0, linger=linger, linger_from=linger_from, name=function,
                            shed_after=limits.batch_queue_seconds)
            for function in ("decisions", "rewards"))
        self._event_effects = AdaptiveBatcher(runner=self._writer.runner("event_effects"),
                                              max_size=64, max_wait=0.0, name="event_effects")
        # PlanCampaign slices, one a frame: the writer child commits up to `PLAN_SLICES_A_COMMIT`
        # (`PLAN_SLICES_ALONE` when nothing else comes) a transaction, giving way to other
        # batches (`Bulk`); one more in flight keeps it busy.
        self._plan_log = AdaptiveBatcher(
            runner=self._writer.runner("decision_batches", concurrency=PLAN_SLICES_ALONE + 1),
            max_size=1, max_wait=0.0, name="plan_decisions")
        # Withdrawals of logged decisions nobody received (`records.WITHDRAWN`).
        self._withdrawals = AdaptiveBatcher(runner=self._writer.runner("withdrawals"),
                                            max_size=64, max_wait=0.0, name="plan_withdrawals")
        self._withdrawing: set[asyncio.Task] = set()
        self._planner = Planner(self, self._plan_log, self._withdraw_after)
        self._decision_counters: dict[tuple[str, str], object] = {}

    async def start(self) -> None:
        """Wait for the writer process (raises if it cannot start); fit the contact prior."""
        await self._writer.ready()
        await asyncio.to_thread(self.contact.refresh_prior, time.time())

    # -- definitions --------------------------------------------------------------------------
    async def create(self, spec: CampaignSpec) -> Campaign:
        spec = spec.validated(self.limits)
        now = time.time()
        campaign = Campaign(spec, created_at=now, updated_at=now)
        return await self._changing(asyncio.to_thread(self.repo.create, campaign, spec.new_state()))

    async def update(self, spec: CampaignSpec) -> Campaign:
        spec = spec.validated(self.limits, new=False)  # its salt: the stored one's (immutable)

        def change(old: Campaign, state: B.BanditState):
            spec.check_update_of(old.spec)
            return (replace(old, spec=spec, updated_at=time.time(), revision=old.revision + 1),
                    spec.restate(state))
        return await self._changing(asyncio.to_thread(self.repo.update, spec.campaign_id, change))

    async def archive(self, campaign_id: str) -> Campaign:
        """Archive the campaign. An id stored before C1 and bidirectional controls were refused
        is taken (`check_stored_id`), as by `get`: such a campaign can still be retired."""
        check_stored_id("campaign_id", campaign_id, self.limits.id_bytes)

        def change(old: Campaign, state):
            if old.archived:
                return old, state
            return replace(old, archived=True, updated_at=time.time(),
                           revision=old.revision + 1), state
        return await self._changing(asyncio.to_thread(self.repo.update, campaign_id, change))

    async def get(self, campaign_id: str) -> Campaign:
        check_stored_id("campaign_id", campaign_id, self.limits.id_bytes)
        campaign = self.repo.get(campaign_id)
        if campaign is None:
            raise CampaignNotFound(campaign_id)
        return campaign

    def stored(self, campaign_id: str) -> bool:
        """Whether a campaign is stored under `campaign_id`, archived or not (none is ever
        deleted): an unsubscribe event may name one stored under an id refused since, and
        only then (`Profiles.campaign_stored`)."""
        return self.repo.get(campaign_id) is not None

    def pii_positions(self, campaign_id: str, is_pii: Callable[[str], bool]) -> range | list[int]:
        """`context.pii_positions` of the campaign's context features; every position when the
        campaign cannot be read (gone): a caller without `pii-reader` reads none of them."""
        campaign = self.repo.get(campaign_id)
        if campaign is None:
            return range(1 << 16)
        return pii_positions(campaign.spec.context_features, is_pii)

    def mask_decisions(self, decisions: Sequence[dict], is_pii: Callable[[str], bool]) -> None:
        """An access export's decision records (`export_user`) as a caller without
        `pii-reader` reads them, in place: each context value under a PII key is None, as
        ExportDecisions hides it (a role the auth config widens to ExportProfile read the
        logged `request.phone` in full)."""
        positions: dict[str, range | list[int]] = {}
        for rec in decisions:
            context = rec.get("context")
            if not context:
                continue
            if rec["campaign_id"] not in positions:
                positions[rec["campaign_id"]] = self.pii_positions(rec["campaign_id"], is_pii)
            for i in positions[rec["campaign_id"]]:
                if i >= len(context):
                    break
                context[i] = None

    async def list(self, include_archived: bool = False, page_size: int = 0,
                   page_token: str = "") -> tuple[list[Campaign], str]:
        """A page of campaigns in id order and the token of the next ("" after the last). The
        token is the last campaign id listed: one stored before C1 and bidirectional controls
        were refused is taken (`check_stored_id`), or no campaign after it could be listed."""
        most = min(check_not_negative("page_size", page_size) or self.limits.campaigns_page,
                   self.limits.campaigns_page)
        if page_token:
            check_stored_id("page_token", page_token, self.limits.id_bytes)
        return await asyncio.to_thread(self.repo.page, page_token, most,
                                       self.limits.campaigns_page_bytes, include_archived)

    # -- decisions ------------------------------------------------------------------------------
    async def _changing(self, write):
        """Await a write to campaigns or posteriors, then drop the cached snapshots."""
        try:
            return await write
        finally:
            self._cache.clear()

    def live(self, campaign_id: str) -> tuple[Entry, bytes]:
        """A campaign that takes decisions (its entry and posterior bytes), else the error."""
        raw, blob = self._cache.snapshot(campaign_id)
        if raw is None:
            raise CampaignNotFound(campaign_id)
        entry = self._cache.entry(campaign_id, raw)
        if entry.campaign.archived:
            raise CampaignArchived(campaign_id)
        return entry, blob

    def read_contacts(self, entry: Entry, user_ids: Sequence[str], with_states: bool = False,
                      with_seen: bool = False, reachable: frozenset[str] | None = None,
                      addressed: bool = False) -> tuple[list, list[Contact], tuple[int, ...]]:
        """(feature states, the contact policy's inputs) of a batch of users from one read
        snapshot: feature states (None unless the campaign's decisions read them, or
        `with_states`), meta records, and the campaign's channels whose address (email, phone)
        is on the suppression list; with `with_seen` (and `with_states`), the live seen-sets
        too (`Contact.seen`); the contact histories when the campaign chooses among channels
        some of which are capped (`Entry.reads_contacts`); which users without a profile were
        erased, when the campaign's consent tells them from new ones (`Entry.reads_erasures`);
        `reachable`, `addressed`: the channels the caller's message may go on, and whether it
        goes to the profile's addresses (`Contact.reachable`, `Contact.addressed`). Last, the
        positions of the users whose profile record is damaged (`ProfileDamaged`: reported;
        read as without a profile, their verdicts are to be `damaged_verdicts`')."""
        sup, channels = self._suppressions, entry.channels
        purpose = TRANSACTIONAL if entry.transactional else MARKETING  # a keep-out: marketing
        with self._store.read() as txn:
            try:
                damaged: tuple[int, ...] = ()
                read = self._profiles.states_and_meta(
                    user_ids, entry.with_states or with_states, txn, with_seen=with_seen,
                    with_stored=True)
            except ProfileDamaged as err:
                read, damaged = err.read, err.damaged
                report_found(err.found, user_ids, DECISION)
            histories = (self.repo.contacts.histories(txn, user_ids) if entry.reads_contacts
                         else None)
            erased = self._erased(user_ids, read, txn) if entry.reads_erasures else _NONE
            return [r[0] for r in read], [
                Contact(u, r[1], r[0], histories[u] if histories else None, _NONE if sup is None
                        else sup.suppressed_channels(r[1], channels, txn, purpose),
                        r[2] if with_seen else None, u in erased, reachable,
                        addressed, stamp_of(r[-1]))
                for u, r in zip(user_ids, read)], damaged

    def recheck(self, entry: Entry, contact: Contact, channel: str, choices: tuple) -> tuple:
        """What the writer checks again of the policy's verdict on `contact` (logged on
        `channel`, or one of `choices`) at the commit (`recheck.recheck_of`)."""
        return recheck_of(contact.stamp, contact.meta, [c[0] for c in choices] or (channel,),
                          entry.needs, self._suppressions)

    def _erased(self, user_ids: Sequence[str], read: Sequence[tuple], txn) -> frozenset[str]:
        """Those of `user_ids` without a profile (`read`: their (state, meta) as read in
        `txn`) who were erased and did not come back (no feature state since): one HMAC and
        one read per user without a meta record while any tombstone exists (none: nothing
        hashed), never the whole list (`Tombstones.find`)."""
        bare = [u for u, r in zip(user_ids, read) if r[1] is None and r[0] is None]
        if not bare or self._erasures is None:
            return _NONE
        gone = [u for u, t in zip(bare, self._erasures.find(txn, bare)) if t is not None]
        if gone:  # back through events alone: a feature state, no meta record
            try:
                back = self._profiles.states_and_meta(gone, True, txn)
            except ProfileDamaged as err:  # (a damaged one: not erased, suppressed anyway)
                back = [(True, None) if i in err.damaged else r for i, r in enumerate(err.read)]
            gone = [u for u, r in zip(gone, back) if r[0] is None]
        return frozenset(gone)

    def profile_states(self, user_ids: Sequence[str], with_states: bool) -> list:
        """Feature states of a batch of users (None where there is none or none was asked for)."""
        return self._profiles.states(user_ids) if with_states else [None] * len(user_ids)

    def _verdict(self, entry: Entry, user_id: str, now: float, profile: bool = False,
                 seen: bool = False, reachable: frozenset[str] | None = None,
                 addressed: bool = False):
        """(contact verdict, feature state or `UNREAD`, (state, meta, seen-set if `seen` else
        None) if `profile` else None, the contact read): one read snapshot for the profile and
        the suppression list when the policy reads the profile; none when it has nothing to
        check (the profile and the contact are then None too)."""
        if not entry.reads_profile:
            return Verdict(False, "", entry.channels[0], 0.0), UNREAD, None, None
        states, contacts, damaged = self.read_contacts(entry, [user_id], profile,
                                                       profile and seen, reachable, addressed)
        verdict = damaged_verdicts(list(self.contact.verdicts(entry.campaign.spec, contacts,
                                                              now)), damaged)[0]
        read = (contacts[0].state, contacts[0].meta, contacts[0].seen) if profile else None
        return verdict, states[0] if entry.with_states else UNREAD, read, contacts[0]

    async def choose(self, campaign_id: str, user_id: str, context: Mapping[str, float],
                     now: float | None = None, request_id: str = "", caller: str = "") -> Choice:
        """One decision, logged before it returns; `now` (unix s) is the decision time (tests
        fix it to check quiet hours; default: the clock). A caller cancelled before the answer
        (a deadline) never received the decision: once committed, it is withdrawn (unless a
        repeat of its `request_id` was answered it meanwhile: `requests`). A repeat of a
        request answered before its campaign was archived is answered that decision
        (`answered_before`)."""
        try:
            pending = self.decide(campaign_id, user_id, context, now, request_id=request_id,
                                  caller=caller, fallback=True)
        except CampaignArchived:
            answered = self.answered_before(campaign_id, user_id, request_id, caller)
            if answered is None:
                raise
            return answered[0]
        return await pending.logged(on_cancel=lambda _: self.abandon(pending))

    def abandon(self, pending: PendingChoice) -> None:
        """The caller gave up after `pending` was queued (its deadline: a ChooseVariant, a
        ComposeMessage rendering): once its commit settles, the decision is withdrawn if it was
        logged pending (nobody received it: it would count toward the caps and take the
        default reward), unless a repeat of its request was answered it. The commit is not
        cancelled: one the writer took already would be logged unseen."""
        decision_id = pending.choice.decision_id
        if pending.request:
            decision_id = (decision_id, pending.request)
        self._withdraw_after([([decision_id], pending.committed)])

    def answered_before(self, campaign_id: str, user_id: str, request_id: str,
                        caller: str) -> tuple[Choice, bytes] | None:
        """(the decision logged for a request of an archived campaign, the request's digest)
        (a client's retry of a call whose answer was lost, the campaign archived meanwhile),
        None if there is none: no request id, none remembered within the window, or its
        decision withdrawn. An archived campaign logs nothing more, so a read of the log is
        the whole answer (ChooseVariant's and ComposeMessage's, which then answers the first
        call's delivery from the digest's entry: `messages.once`)."""
        if not request_id:
            return None
        now = time.time()
        digest = self._digests(caller, campaign_id, user_id, request_id, now)
        rec = self.repo.answered(digest, now)
        if rec is None or rec["campaign_id"] != campaign_id or rec["user_id"] != user_id:
            return None
        campaign = self.repo.get(campaign_id)
        return _logged_choice(rec, {} if campaign is None else _contents(campaign.spec)), digest

    def _withdraw_after(self, logged: Sequence[tuple[Sequence[str], asyncio.Future]]) -> None:
        """Withdraw decisions nobody received, once their commits settle: (decision ids of every
        row of a commit, future of their suppression reasons, one a row, or of the one reason of
        a single decision) pairs; those the commit logged pending go (all of a failed commit's:
        none were logged)."""
        async def run():
            ids = []
            for pending, future in logged:
                await asyncio.wait([future])
                reasons = None if future.cancelled() or future.exception() else future.result()
                if isinstance(reasons, (str, Fallback)):  # one decision's (ChooseVariant)
                    reasons = [reasons]
                elif isinstance(reasons, dict):  # a repeated request's: nothing was logged
                    continue
                ids += pending if reasons is None else [
                    d for d, r in zip(pending, reasons) if logged_pending(r)]
            if ids:
                try:
                    await self.withdraw(ids)
                except Exception:  # noqa: BLE001 - nobody waits for it; say why
                    logger.exception("withdrawing %d unanswered decisions failed", len(ids))
        task = asyncio.get_running_loop().create_task(run())
        self._withdrawing.add(task)
        task.add_done_callback(self._withdrawing.discard)

    def decide(self, campaign_id: str, user_id: str, context: Mapping[str, float],
               now: float | None = None, profile: bool = False, seen: bool = False,
               decision_id: str = "", request_id: str = "", caller: str = "",
               reachable: frozenset[str] | None = None, addressed: bool = False,
               fallback: bool = False) -> PendingChoice:
        """One decision, its record queued for the decision log: the caller awaits
        `logged()` (the commit, which may find it over a frequency cap) before it answers.
        `profile`: the contact policy's read takes the user's feature state too, and the
        pending choice carries (state, meta, None) of that snapshot (`PendingChoice.profile`)
        for a caller that renders from the profile (ComposeMessage), so it need not read it
        again; `seen`: the live seen-set in the third place, for a caller that recommends for
        the user on the loop from the same read; `decision_id`: the id the caller fixed in
        advance (`fixed_decision_id`; default: a new one); `request_id`: the caller's id of the
        request (with `caller`, the principal's name), answered with the decision logged for it
        if it was logged before (`requests`); the pending choice's `logged()` then gives that
        decision; `reachable`: the channels the caller's message may go on (None: any),
        `addressed`: it goes to the profile's addresses (`Contact.reachable`,
        `Contact.addressed`: ComposeMessage, SendCampaign); `fallback`: the writer may log the
        decision on another channel the contact policy allowed when the caps refuse the one
        chosen at the commit (`DecisionRecord.choices`; ChooseVariant, whose answer names the
        channel: a message rendered for its channel while the commit runs is suppressed)."""
        lim = self.limits
        check_id("campaign_id", campaign_id, lim.id_bytes)
        check_id("user_id", user_id, lim.id_bytes)
        if len(context) > lim.context_entries:  # compared inline: the hot path
            check_count("context", len(context), lim.context_entries)
        now = time.time() if now is None else now
        request = b""
        if request_id:
            check_id("request_id", request_id, lim.request_id_bytes)
            request = self._digests(caller, campaign_id, user_id, request_id, now)
        entry, blob = self.live(campaign_id)
        spec = entry.campaign.spec
        verdict, state, read, contact = self._verdict(entry, user_id, now, profile, seen,
                                                      reachable, addressed)
        decision_id = decision_id or _decision_id(now)
        if verdict.suppressed:
            return self._log_suppressed(spec, user_id, now, verdict, decision_id, request)
        ctx = entry.context.build(user_id, context, state)
        decision = self.decider.decide(spec, blob, user_id, ctx)
        variant = spec.variants[decision.arm] if decision.arm != B.HOLDOUT else None
        # Fields by position and sent as a plain tuple: as cheap as a dict (see records.py).
        # The reward window runs from the send (quiet hours or a send window may defer it).
        choices = entry.choices(verdict) if fallback else ()
        committed = self._log.enqueue(tuple(DecisionRecord(
            decision_id, campaign_id, user_id, now, decision.arm, decision.propensity, None, ctx,
            0, variant.id if variant else "", PENDING,
            max(verdict.send_at, now) + spec.reward_window_seconds,
            spec.dim > 0, verdict.channel, verdict.send_at, "", entry.caps[verdict.channel],
            verdict.channel_propensity, verdict.send_at_propensity, entry.transactional,
            request, choices, () if contact is None
            else self.recheck(entry, contact, verdict.channel, choices))))
        return PendingChoice(campaign_id, Choice(
            decision_id, decision.arm, decision.propensity, variant.id if variant else "",
            dict(variant.content) if variant else {}, False, "", verdict.channel,
            verdict.send_at), committed, "variant" if variant else "holdout", self._counted,
            read, request, _replayer(spec) if request else None, user_id)

    def _counted(self, campaign_id: str, outcome: str) -> None:
        """Count a decision (`metrics.CAMPAIGN_DECISIONS`); the label children are kept per
        campaign and outcome (`labels()` costs more than `inc()`; only live campaigns get here)."""
        counter = self._decision_counters.get((campaign_id, outcome))
        if counter is None:
            counter = self._decision_counters[campaign_id, outcome] = \
                metrics.CAMPAIGN_DECISIONS.labels(campaign_id, outcome)
        counter.inc()

    def _log_suppressed(self, spec: CampaignSpec, user_id: str, now: float,
                        verdict: Verdict, decision_id: str, request: bytes = b"") -> PendingChoice:
        """Log a decision the contact policy refused before any variant was chosen."""
        rec = DecisionRecord(decision_id, spec.campaign_id, user_id, now, B.HOLDOUT, 0.0, None,
                             [], 0, "", PENDING, now, False, verdict.channel, verdict.send_at,
                             request=request)
        committed = self._log.enqueue(tuple(rec.suppressed(verdict.reason)))
        return PendingChoice(spec.campaign_id, Choice(
            decision_id, NO_ARM, 0.0, "", {}, True, verdict.reason, verdict.channel,
            verdict.send_at), committed, "suppressed", self._counted, None, request,
            _replayer(spec) if request else None)

    @staticmethod
    def fixed_decision_id(started: float, key: str) -> str:
        """The decision id a job started at `started` gives the decision it makes for `key`
        (a send id and a recipient's position): the same every time (`decision_ids`)."""
        return fixed_decision_id(started, key)

    async def claim_delivery(self, request: bytes, decision_id: str, until: float
                             ) -> dict | None:
        """The delivery of a request's message claimed for the caller (None), or its state
        (`requests.RequestIds.claim_delivery`); `request`: the digest `PendingChoice.request`."""
        return await asyncio.to_thread(self.repo.claim_delivery, request, decision_id, until)

    async def renew_delivery(self, request: bytes, decision_id: str, until: float) -> bool:
        """Extend the caller's claim of a request's delivery to `until` while it is being
        made (`requests.RequestIds.renew_delivery`)."""
        return await asyncio.to_thread(self.repo.renew_delivery, request, decision_id, until)

    async def settle_delivery(self, request: bytes, decision_id: str, state: dict) -> None:
        """The outcome of the delivery `claim_delivery` gave the caller."""
        await asyncio.to_thread(self.repo.settle_delivery, request, decision_id, state)

    def logged_decisions(self, campaign_id: str, wanted: Sequence[tuple[str, str]]
                         ) -> dict[str, Choice]:
        """{decision id: the decision as logged} of those of `wanted` ((user id, decision id)
        pairs) logged for that user in this campaign, from one read snapshot (blocking: call it
        in a thread). A job resumed after a crash reuses them: deciding again would log a second
        contact, which the frequency caps would count against the first. One whose record is
        damaged is answered suppressed `DECISION_DAMAGED`, as a repeat of its request would
        be: its first message may have gone."""
        campaign = self.repo.get(campaign_id)
        content = {} if campaign is None else _contents(campaign.spec)
        found = self.repo.log.by_ids(wanted)
        return {d: _damaged_choice(d) if rec is DAMAGED else _logged_choice(rec, content)
                for (u, d), rec in zip(wanted, found)
                if rec is not None and (rec is DAMAGED or rec["campaign_id"] == campaign_id)}

    def plan(self, requests: AsyncIterable[PlanRequest]) -> AsyncIterator[PlanBatch]:
        """PlanCampaign: one `PlanBatch` of logged decisions per batch of user ids (`plan.Planner`)."""
        return self._planner.plan(requests)

    async def withdraw(self, decision_ids: Sequence[str]) -> int:
        """Withdraw logged decisions their caller never received (`records.WITHDRAWN`; those no
        longer pending are left as they are); returns how many were withdrawn."""
        return await self._changing(self._withdrawals.submit(list(decision_ids)))

    # -- rewards ----------------------------------------------------------------------------------
    async def report(self, decision_id: str, reward: float) -> RewardOutcome:
        check_id("decision_id", decision_id, self.limits.id_bytes)
        return await self._changing(self._rewards.submit(RewardRequest(decision_id, float(reward))))

    outbox = OUTBOX_TAG
    """The tag of this listener's outbox entries (`server.profiles.outbox`)."""

    def follows(self, events: Sequence[TrackedEvent]) -> list[int]:
        """`EventListener`: the events `on_events` acts on (their batch gets an outbox entry).
        Not an unsubscribe taken for a profile stored under an id refused since
        (`TrackedEvent.stored_only`): it opts its user out, and its decision's reward would be
        behaviour recorded under such an id, which no other event of it may add
        (docs/privacy.md); the decision closes at its window's end as one no event rewarded."""
        return [i for i, ev in enumerate(events)
                if ev.type.endswith("_sent") or (ev.attributes and ev.attributes.get("decision_id")
                                                 and not ev.stored_only)]

    async def on_events(self, events: Sequence[TrackedEvent], batch: Batch) -> None:
        """`EventListener`: of the events `follows` picks, those carrying
        attributes["decision_id"] reward that decision; `<channel>_sent` events count as
        contacts (frequency caps). Both, and the clearing of
        the batch's outbox entry, are one request to the writer process, applied in one of its
        transactions (`CampaignRepository.apply_event_effects`): applied once, replayed or not."""
        items = [(key, *_effects(ev)) for ev, key in zip(events, batch.event_keys)]
        try:
            damaged = await self._changing(self._event_effects.submit((batch.entry, items)))
        except Exception:  # never fail ingestion for a reward; say why (the outbox keeps them)
            logger.exception("applying %d tracked events to campaigns (rewards, contacts) failed",
                             len(items))
            return
        report_damaged(damaged, SEND)

    def before_write(self) -> bool:
        """`EventListener`: ready for `in_write` in every ingestion's write (nothing to flush)."""
        return True

    def in_write(self, txn, pairs: Sequence[tuple], entry: bytes) -> int | None:
        """`EventListener`'s part in the ingestion's write transaction `txn`, for a batch whose
        followed events are all sends (no reward): their contacts counted there
        (`ContactLog.add_sends`, as the writer process would), so the batch writes no outbox
        entry and the writer process gets no request, no transaction and no fsync of its own
        for it. The contacts added; None, nothing written: the batch holds a reward (the
        writer process applies rewards and sends together, `on_events`), or reading the
        histories failed (logged); its entry is then written as before. A user whose history
        is damaged has their sends left out (`report_damaged`), the others' counted."""
        sends = []
        for ev, _ in pairs:
            req, send = _effects(ev)
            if req is not None:
                return None
            sends.append(send)
        contacts = self.repo.contacts
        try:  # (a failed write is the ingestion's: the transaction cannot go on)
            histories, added, damaged = contacts.with_sends(txn, sends)
        except Exception:
            logger.exception("counting %d sent events as contacts in their write failed (the "
                             "writer process counts them after it)", len(sends))
            return None
        contacts.save(txn, histories, time.time())
        report_damaged(damaged, SEND)
        return added

    async def after_write(self, done: int, entry: bytes) -> None:
        """`EventListener`: the ingestion whose sends `in_write` counted has committed (nothing
        more to do: contacts are no campaign snapshot's)."""

    def erase_ahead(self, user_id: str) -> int:
        """`UserEraser.erase_ahead`: the user's decisions, in bounded transactions of their own
        before the erasure's last one (`CampaignRepository.erase_ahead`)."""
        return self.repo.erase_ahead(user_id)

    def erase_user(self, txn, user_id: str) -> int:
        """`UserEraser`: the index entries of the user's decisions (the records themselves
        are keyed `<user>␟...` and go with the profile's erasure)."""
        return self.repo.erase_user(txn, user_id)

    async def decision_owner(self, decision_id: str) -> tuple[str, str] | None:
        """`DecisionOwners`: (user id, campaign id) of a logged decision, or None."""
        return await asyncio.to_thread(self.repo.log.owner, decision_id)

    async def drop_expired_decisions(self, cutoff: float) -> int:
        """Retention: decision records closed and made before `cutoff` go (their counters stay)."""
        return await asyncio.to_thread(self.repo.log.drop_before, cutoff)

    def export_user(self, user_id: str) -> dict[str, object]:
        """`UserExporter`: the user's decisions, each with its campaign, variant and status,
        and their recent contacts (the frequency caps' `ContactHistory`, which the campaigns
        writer keeps)."""
        return {"decisions": self.repo.log.of_user(user_id),
                "contacts": self.repo.contacts_of(user_id)}

    async def sweep_due(self) -> None:
        """Give the default (or best event) reward to decisions whose window closed, and refit
        a stale contact prior (the server's pass every `sweep_seconds`: `server.background`)."""
        now = time.time()
        if self.repo.has_due(now):
            closed = await self._changing(asyncio.to_thread(self.repo.sweep, now))
            logger.debug("closed %d reward windows", closed)
            self._tell_hold(now)
        if self.contact.prior is not None and self.contact.prior.stale(now):
            await asyncio.to_thread(self.contact.refresh_prior, now)

    def _tell_hold(self, now: float) -> None:
        """Warn once per outbox entry that has held the sweep `HOLD_WARNING_S` or more: every
        campaign's windows that ended since stay open (pending, no default reward) until its
        replay applies it or drops it after its last try (counts and times only: no user)."""
        held = self.repo.held_since
        if held is None or now - held < HOLD_WARNING_S or held == self._hold_told:
            return
        self._hold_told = held
        logger.warning("reward windows of every campaign that ended in the last %.0f s stay open: "
                       "a tracked batch's campaign effects wait in the outbox for a replay (the "
                       "campaigns write failed or a worker died), the sweep closes them once it "
                       "is applied or dropped", now - held)

    # -- stats and export -------------------------------------------------------------------------
    async def stats(self, campaign_id: str) -> tuple[Campaign, dict, dict]:
        """A campaign's stats; an id stored before C1 and bidirectional controls were refused
        is taken (`check_stored_id`), as by `get`."""
        check_stored_id("campaign_id", campaign_id, self.limits.id_bytes)
        campaign, state, counters = await asyncio.to_thread(self.repo.stats_snapshot, campaign_id)

        def compute():
            view = stats_view(state)  # the reward model the stats take (time to significance too)
            # the split check's counts: the decisions made under the current split
            assigned, since = split_counts(counters, state.n_arms, campaign.created_at)
            # Seeded by the posterior: every worker, before and after a restart, gives the
            # same Monte Carlo answer about the same state.
            seed = int.from_bytes(hashlib.blake2b(state.to_bytes(), digest_size=8).digest(),
                                  "little")
            st = campaign_stats(state, B.new_rng(seed), n_mc=20000, assigned=assigned)
            now = time.time()
            elapsed = now - campaign.created_at
            made = sum(counters["decisions"]) + counters["holdout"]
            st["decisions_per_second"] = made / elapsed if elapsed > 0 else 0.0
            for row in st.get("ab", []):
                row["seconds_to_significance"] = seconds_to_significance(
                    row, view, assigned, now - since)
            return st
        return campaign, await asyncio.to_thread(compute), counters

    async def sample_size(self, query: SampleSizeQuery) -> SampleSizeAnswer:
        """Observations per arm of an A/B/n test (`power.sample_size`; no campaign needed)."""
        return await asyncio.to_thread(sample_size, query, self.limits.campaign_variants)

    def export(self, campaign_id: str = "", start: float = 0.0, end: float = 0.0,
               include_pending: bool = False, include_suppressed: bool = False):
        """The decision log's records, a chunk at a time; a campaign id stored before C1 and
        bidirectional controls were refused is taken (`check_stored_id`), as by `get`."""
        if campaign_id:
            check_stored_id("campaign_id", campaign_id, self.limits.id_bytes)
            if self.repo.get(campaign_id) is None:  # campaigns are archived, never deleted
                raise CampaignNotFound(campaign_id)
        check_window(start, end, self.limits.latest_timestamp)
        for chunk in self.repo.log.export(campaign_id, start, end, include_pending,
                                          include_suppressed):
            for rec in chunk:
                if rec["reward"] is None:
                    rec["reward"] = float(np.nan)
            yield chunk

    async def close(self) -> None:
        while self._withdrawing:  # withdrawals of decisions nobody received, before the writer
            await asyncio.wait(list(self._withdrawing))
        await self._log.close()
        await self._plan_log.close()
        await self._withdrawals.close()
        await self._rewards.close()
        await self._event_effects.close()
        await self._writer.close()


def _replayer(spec: CampaignSpec):
    """A logged record (a repeated request's decision) as its `Choice`, under `spec`; the
    variants' contents are gathered only when a repeat is answered (rare), not per call."""
    return lambda rec: _logged_choice(rec, _contents(spec))


def _contents(spec: CampaignSpec) -> dict[str, Mapping[str, str]]:
    """The campaign's variants' contents, by variant id."""
    return {v.id: v.content for v in spec.variants}


def _logged_choice(rec: dict, content: Mapping[str, Mapping[str, str]]) -> Choice:
    """A stored decision record as the `Choice` it was answered with (`content`: the campaign's
    variants' contents, by variant id)."""
    if rec["status"] == SUPPRESSED:
        return Choice(rec["decision_id"], NO_ARM, 0.0, "", {}, True, rec.get("reason", ""),
                      rec.get("channel", ""), rec.get("send_at", 0.0))
    variant = rec["variant_id"]
    return Choice(rec["decision_id"], rec["arm"], rec["propensity"], variant,
                  dict(content.get(variant, {})), False, "", rec.get("channel", ""),
                  rec.get("send_at", 0.0))


def _damaged_choice(decision_id: str) -> Choice:
    """A logged decision whose record does not open or decode, as answered: suppressed
    `DECISION_DAMAGED` (its variant and channel unknown)."""
    return Choice(decision_id, NO_ARM, 0.0, "", {}, True, DECISION_DAMAGED)


def _effects(ev: TrackedEvent) -> tuple[RewardRequest | None, tuple | None]:
    """(the reward of the decision named by the event's attributes["decision_id"], or None;
    its contact `(user, channel, time, decision id or "")` if it is a `<channel>_sent` event,
    else None): what a followed event does to campaigns."""
    decision = ev.attributes.get("decision_id", "") if ev.attributes else ""
    req = RewardRequest(decision, user_id=ev.user_id, event_type=ev.type,
                        event_value=ev.value) if decision else None
    send = (ev.user_id, ev.type[:-5], ev.timestamp, decision) if ev.type.endswith("_sent") else None
    return req, send

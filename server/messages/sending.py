"""SendCampaign: a background job per audience that composes and delivers, and survives restarts.

A job runs two stages in its server process:

- compose: `send_compose_ahead` users at a time through `Composer.decide_and_render` (a logged
  decision, the contact policy's verdict, the rendering), then ONE write of their records:
  suppressed (by the policy's reason, or `holdout`) and failed users are settled, the others
  become `ready` with the decision id and the rendered message (an email, or a webhook body);
- deliver: `send_connections` lanes, each one message at a time (email on the lane's own SMTP
  connection, SMS and push through the webhook; transient failures retried with backoff, a
  message that does not go becomes a dead letter), after a token from the channel's bucket
  (shared by the lanes), at the message's `send_at`: a message the contact policy deferred
  waits in a heap (in memory, bounded by the audience, without its body: its `ready` record
  on disk holds it, read back when it is due, and a restart finds it again), the others go at
  once. A settled recipient keeps no body either: the job holds one message body per lane and
  per recipient being composed, not one per deferred or sent recipient (quiet hours over a
  large audience held ~1 GB). After the adapter accepts a message its
  record is settled `sent` before that lane's next message starts (the lanes' records settled
  meanwhile share one transaction: `settling.Settler`); the `<channel>_sent` events
  (event id `tailor:sent-<decision id>`) are recorded in batches of `send_compose_ahead`, and again for
  every `sent` record when a job resumes (recording is idempotent by event id), so a crash
  loses none.

Consent and the suppression list: the contact policy is asked again just before each delivery
and before each retry, by one check (`SendJob._still`: the job's cancel, then `Delivery.still`):
a user who opted out, or whose address was listed, since their message was composed is settled
suppressed with that reason, and nothing goes. So is every message of a campaign archived
since (`Delivery.archived`): archiving stops a job's stored messages, a deferred
ComposeMessage's included, and a recipient not yet composed is settled so too.

The catalog: a `ready` record keeps the ids of the items its message shows; one of them removed
since (RemoveItems) is caught before delivery, and the logged decision is rendered again
(`_render_again`) and stored before it goes: a message composed ahead, deferred, or resumed
never carries an item taken out of the catalog meanwhile.

Erasure: DeleteProfile settles the user's records at once (`SendRecords.erase_user`); the job
re-reads its recipients' records before composing a batch, before each delivery and before
recording events, and skips the erased ones.

Crash semantics: each recipient's decision id is fixed by the job (its start time, its send id
and the recipient's position: `VariantChooser.fixed_decision_id`), and before composing a batch
the job reads which of them are logged already: a kill after a batch's decisions were logged but
before its records were written leaves them `pending`, and the resumed job renders those
decisions as logged (their variant, channel, send_at, or suppression) instead of deciding again,
which would log a second contact that the frequency caps count against the first.

A record is `ready` before its message is handed to the relay, and `sent` only
after the relay said 250, so a restart sends every `ready` message again, the stored one with
the same Message-ID (`<decision id@domain>`). A kill while no lane is inside an SMTP
transaction re-sends nothing that arrived; a kill inside a transaction after the relay kept the
message but before its record said `sent` re-sends that message (at most one per lane), with
the same Message-ID (receivers may drop it). A stop (`stop`, SIGTERM) is no kill: no message
starts, and those inside their transaction get the relay's timeout to be accepted and settled.
CancelSend (`cancelling`) stops a job the same way, then settles what is left `cancelled`.
"""
from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import time

from ..batching import exempt
from ..campaigns.errors import CampaignArchived
from ..errors import TailorError
from .breaker import BounceBreaker
from .cancelling import Cancellation, withdrawal
from .channels import MESSAGE_CHANNELS
from .compose import Composer
from .delivery import (
    BOUNCING_CHANNELS,
    MISSING_ADDRESS,
    NOT_LISTED,
    UNDELIVERED,
    Delivery,
    address_of,
    sent_event,
)
from .errors import BadAddress, BadLink, NoLongerAllowed, OverChannelLimit, RenderFailed
from .sends import (
    ARCHIVED,
    BOUNCE_BREAKER,
    FAILED,
    PENDING,
    READY,
    SENT,
    SUPPRESSED,
    Recipient,
    SendRecords,
    stopped_by,
)
from .settling import Settler

__all__ = ["TokenBucket", "SendJob", "failure"]

logger = logging.getLogger("tailor.messages.send")

DEFAULT_RATE = 50.0
"""Emails per second when neither the request nor `send_rate_per_second` names email."""
BURST_SECONDS = 0.5
"""Tokens saved up while a job falls behind (a stall: GC, a slow relay reply, a busy CPU), in
seconds of its rate: it catches up, so the rate over a minute holds."""
MAX_IDLE_WAIT = 60.0
"""Longest single sleep while waiting for a deferred message's send_at."""


def failure(err: TailorError) -> str:
    """A recipient's failure reason (GetSendProgress counts by it): a bad address's; a
    template that failed for them, with its message (variant, part, line, the error kind
    and the name: `RenderFailed: variant 'v1', part 'subject', line 1: UndefinedError:
    'first_name' is undefined`; a link part that rendered to no link a client may open, with
    the rule it broke; a part over its channel's limit, with the limit; never the user's data,
    and no more of them than the template has names and lines), so a marketer sees what to
    fix; otherwise the error's class."""
    if isinstance(err, BadAddress):
        return err.reason
    if isinstance(err, (RenderFailed, BadLink)):
        return f"{type(err).__name__}: {err}"
    if isinstance(err, OverChannelLimit):  # not its measure: one user's, a reason per user
        return f"OverChannelLimit: {err.reason}"
    return type(err).__name__


class TokenBucket:
    """`rate` tokens a second, at most `burst` saved up: `take()` waits for one. Tokens are
    handed out on a fixed schedule (`1/rate` apart), so the achieved rate does not drift."""

    def __init__(self, rate: float, burst: float = 1.0):
        self.interval, self.burst = 1.0 / rate, burst
        self._next: float | None = None  # the first take starts the schedule (no saved burst)

    async def take(self, unless: asyncio.Event | None = None) -> None:
        """Wait for a token; `unless`: stop waiting once it is set (a cancelled job's lanes
        start nothing: each waited its turn at the rate, 10 recipients at 0.5/s took 18 s to
        be settled `cancelled`)."""
        now = time.monotonic()
        start = now if self._next is None else self._next
        at = self._next = max(start, now - (self.burst - 1) * self.interval)
        self._next += self.interval  # reserved before sleeping: concurrent takers queue up
        if at > now and unless is None:
            await asyncio.sleep(at - now)
        elif at > now:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(unless.wait(), at - now)


class SendJob:
    def __init__(self, send_id: str, job: dict, records: SendRecords, composer: Composer,
                 delivery: Delivery, ahead: int, lanes: int = 1,
                 bounce_bound: tuple[float, int] = (1.0, 0)):
        """`ahead`: users composed at once; `lanes`: messages delivering at once (each lane
        with its own SMTP connection); `bounce_bound`: (share, over how many) of a channel's
        hard bounces that stops the job (`breaker.BounceBreaker`, one per channel with an
        address list: a misconfigured relay, or SMS provider; (1.0, 0): never)."""
        self.send_id, self.job, self.records = send_id, job, records
        self.composer, self.delivery, self.ahead, self.lanes = composer, delivery, ahead, lanes
        rates = {ch: job["rates"].get(ch, DEFAULT_RATE) for ch in MESSAGE_CHANNELS}
        self.buckets = {ch: TokenBucket(r, burst=max(1.0, r * BURST_SECONDS))
                        for ch, r in rates.items()}
        """One per channel, shared by the lanes."""
        self._sent: list[Recipient] = []
        """Settled `sent`, their events not yet recorded."""
        self.settler = Settler(lambda done: records.update(send_id, done))
        """Writes the lanes' settled records, in groups."""
        self.purpose = ""
        """The campaign's purpose (consent is asked for it again before each delivery)."""
        self._stopping = False
        self._handing = 0
        """Messages being handed over now (from the send to their settled record)."""
        self._handed = asyncio.Event()
        self._handed.set()
        self.cancelling = Cancellation(records, send_id, lanes, self.cancel)
        self.breakers = {ch: BounceBreaker(*bounce_bound) for ch in BOUNCING_CHANNELS}
        """CancelSend: `requested` once nothing more is composed or starts going (`cancel`)."""

    def cancel(self) -> None:
        """CancelSend (its record says so already): compose no more, start no message; those
        being handed over end as they end, the rest are settled suppressed `cancelled`
        (`_settle_cancelled`) before the job finishes."""
        self._stopping = True
        self.cancelling.requested.set()

    async def stop(self, wait: float) -> None:
        """Start no message from now; give those being handed over `wait` seconds to be
        accepted and settled (the caller cancels the job then: it resumes at the next start).
        A transaction cancelled while the relay held the message would leave its record
        `ready`, and the resumed job would send it again."""
        self._stopping = True
        try:
            await asyncio.wait_for(self._handed.wait(), wait)
        except TimeoutError:
            pass
        await self._flush_bounces()  # the bound not judged on them: listed

    async def run(self) -> None:
        # An accepted job, `ahead` at a time: its decisions, recommendations and sent events
        # are never shed (one refused stopped the job until the next start).
        with exempt(counted=False):
            await self._run()

    async def _run(self) -> None:
        todo = await asyncio.to_thread(self.records.recipients, self.send_id, False)
        self.purpose = await self.delivery.purpose(self.job["campaign"])
        # A resumed job records them again (not those erased since: their user id is gone).
        self._sent = [r for r in todo if r.state == SENT and r.user]
        await self._record_sent()
        queue: asyncio.Queue = asyncio.Queue(maxsize=2 * self.ahead)
        due: asyncio.Queue = asyncio.Queue(maxsize=self.lanes)
        later = [(r.send_at, r.seq, r) for r in todo if r.state == READY]
        heapq.heapify(later)
        if self.job.get("cancelled"):  # before it ran here (its owner had gone): settle it,
            self.cancelling.reason = stopped_by(self.job)  # as its stop said (its breaker's)
            self.cancel()
        # One task failing (a store write, a bug) cancels the others and ends the job with its
        # error (it resumes at the next start), rather than leaving the rest waiting forever.
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._compose_all([r for r in todo if r.state == PENDING],
                                                    queue))
                tasks.create_task(self._deliver_all(queue, later, due))
                for _ in range(self.lanes):
                    tasks.create_task(self._lane(due))
                tasks.create_task(self.cancelling.watch())
            await self._record_sent()
        finally:  # the bound not judged on them: listed, also when the job ends with an error
            await self._flush_bounces()  # (its resume sends no bounced message again)
        if self.cancelling.requested.is_set():
            await self._settle_cancelled()
        await asyncio.to_thread(self.records.finish, self.send_id)
        logger.info("send %s finished (deliveries settled: %d records in %d transactions)",
                    self.send_id, self.settler.settled, self.settler.writes)

    # -- compose -----------------------------------------------------------------------------------
    async def _settle_cancelled(self) -> None:
        """`Cancellation.settle` of every recipient still pending or ready. A pending one's
        decision may be logged (a kill mid-batch before a resume): read."""
        rest = [r for r in await asyncio.to_thread(self.records.recipients, self.send_id, False)
                if r.state in (PENDING, READY)]
        logged = await self._logged([r for r in rest if r.state == PENDING])
        for r in rest:
            if not r.decision and self._decision_id(r) in logged:
                r.decision = self._decision_id(r)
        await self.cancelling.settle(rest, self._withdraw)

    async def _compose_all(self, todo: list[Recipient], queue: asyncio.Queue) -> None:
        for at in range(0, len(todo), self.ahead):
            if self.cancelling.requested.is_set():
                break  # the rest stay pending: `_settle_cancelled`
            chunk = await self._not_erased(todo[at:at + self.ahead])
            logged = await self._logged(chunk)
            rendered: dict[int, object] = {}
            await asyncio.gather(*(self._compose(r, logged.get(self._decision_id(r)), rendered)
                                   for r in chunk))
            await asyncio.to_thread(self.records.update, self.send_id, chunk)
            await self._withdraw([r.decision for r in chunk if r.state == FAILED and r.decision])
            for r in chunk:
                if r.state == READY:  # stored to go (not erased meanwhile: `update`)
                    self.composer.record_shown(rendered[r.seq])  # its items (impressions)
                    await queue.put(r)
        await queue.put(None)

    async def _withdraw(self, decisions: list) -> None:
        """Withdraw the decisions of messages that failed before anything was sent (no
        address, one the adapter cannot carry, no adapter, a render error) or were refused
        just before (opted out, address listed since): nobody received them, so they count
        toward no frequency cap, stats or default reward (as ComposeMessage's:
        `Composer._withdraw`). After their records are settled: a crash between the two leaves
        them pending, as before."""
        await self.withdraw(self.composer, self.send_id, decisions)

    @staticmethod
    async def withdraw(composer: Composer, send_id: str, decisions: list) -> None:
        """`_withdraw` of job `send_id`'s `decisions` (also CancelSend's: `jobs`); a failure
        is logged (the messages are settled either way)."""
        if not decisions:
            return
        try:
            await composer.campaigns.withdraw(decisions)
        except TailorError as err:
            logger.warning("send %s: withdrawing %d messages' decisions failed: %s",
                           send_id, len(decisions), type(err).__name__)

    async def _not_erased(self, recipients: list[Recipient]) -> list[Recipient]:
        """Those whose profile was not deleted since the job read them (DeleteProfile settled
        the others' records; composing would log a decision for an erased user again)."""
        gone = await asyncio.to_thread(self.records.erased, self.send_id,
                                       [r.seq for r in recipients])
        return [r for r in recipients if r.seq not in gone]

    def _decision_id(self, r: Recipient) -> str:
        """The id of the decision for `r`, fixed by the job (the same after a restart)."""
        return self.composer.campaigns.fixed_decision_id(self.job["started"],
                                                         f"{self.send_id}:{r.seq}")

    async def _logged(self, recipients: list[Recipient]) -> dict:
        """{decision id: decision} of those already decided (a kill after their decisions were
        logged, before their records said `ready`; a message to render again), under the id
        their record holds, else the one the job fixes (a deferred ComposeMessage's is its
        own): one read snapshot."""
        return await asyncio.to_thread(
            self.composer.campaigns.logged_decisions, self.job["campaign"],
            [(r.user, r.decision or self._decision_id(r)) for r in recipients])

    async def _compose(self, r: Recipient, logged, rendered: dict) -> None:
        """Settle `r` (suppressed, failed with the reason) or make it `ready` with its message
        (kept in `rendered` by seq, its impressions logged once it is stored), from a new
        decision or the one `logged` before a crash; one user's failure never stops the job."""
        try:
            if logged is None:
                msg, recipient = await self.composer.decide_and_render(
                    self.job["campaign"], r.user, self.job["context"],
                    decision_id=self._decision_id(r), delivered=True)
            else:
                msg, recipient = await self.composer.render_logged(self.job["campaign"], r.user,
                                                                   logged)
            r.decision, r.send_at, r.channel = msg.decision_id, msg.send_at, msg.channel
            if recipient is None:
                r.state, r.reason = SUPPRESSED, msg.reason or ("holdout" if msg.holdout else "")
            elif not self.delivery.has_adapter(msg.channel):
                r.state, r.reason = FAILED, f"no {msg.channel} adapter"
            elif not (to := address_of(msg.channel, recipient.attributes)):
                r.state, r.reason = FAILED, MISSING_ADDRESS[msg.channel]
            else:
                r.message = {"to": to, "raw": self.delivery.flatten(msg, to).decode("latin-1")}
                r.state, r.items = READY, self.composer.shown_items(msg)
                rendered[r.seq] = msg
        except CampaignArchived:  # since the job started: it decides nothing more
            r.state, r.reason = SUPPRESSED, ARCHIVED
        except TailorError as err:
            r.state, r.reason = FAILED, failure(err)
        except Exception as err:  # noqa: BLE001 - settled with a reason; the text may hold PII
            logger.error("send %s: composing failed: %s", self.send_id, type(err).__name__)
            r.state, r.reason = FAILED, "error"

    # -- deliver -----------------------------------------------------------------------------------
    async def _deliver_all(self, queue: asyncio.Queue, later: list, due: asyncio.Queue) -> None:
        """Due messages to the lanes (each on its own SMTP connection), then their end."""
        await self._dispatch(queue, later, due)
        for _ in range(self.lanes):
            await due.put(None)

    async def _dispatch(self, queue: asyncio.Queue, later: list, due: asyncio.Queue) -> None:
        """Composed messages to the lanes now, or to the heap until their send_at. Once
        cancelled, none: the composed ones are drained (their records stay `ready`)."""
        composing = True
        while composing or later:
            if self.cancelling.requested.is_set():
                while composing:
                    composing = await queue.get() is not None
                return
            if later and later[0][0] <= time.time():
                await due.put(heapq.heappop(later)[2])
                continue
            wait = min(later[0][0] - time.time(), MAX_IDLE_WAIT) if later else None
            if not composing:
                with contextlib.suppress(TimeoutError):  # woken by a cancel
                    await asyncio.wait_for(self.cancelling.requested.wait(), wait)
                continue
            try:  # (no deferred message: no timer per message)
                r = await (queue.get() if wait is None else asyncio.wait_for(queue.get(), wait))
            except TimeoutError:
                continue
            if r is None:
                composing = False
            elif r.send_at > time.time():
                r.shed()  # its record holds the body until it is due
                heapq.heappush(later, (r.send_at, r.seq, r))
            else:
                await due.put(r)

    async def _lane(self, due: asyncio.Queue) -> None:
        smtp = self.delivery.connection() if self.delivery.has_adapter("email") else None
        try:
            while True:
                if due.empty() or len(self._sent) >= self.ahead:
                    await self._record_sent()  # idle this instant, or a batch is full
                r = await due.get()
                if r is None:
                    return
                await self._deliver(r, smtp)
        finally:
            self.cancelling.lane_ended()
            if smtp is not None:
                await smtp.close()

    async def _deliver(self, r: Recipient, smtp) -> None:
        """Hand over (retrying transient failures; a message that does not go becomes a dead
        letter), then settle the record (before this lane's next message starts). Once the
        job is stopping, nothing starts going (`stop`), and a cancel ends the wait for a
        token."""
        await self.buckets[r.channel].take(unless=self.cancelling.requested)
        if self._stopping:
            return  # shutting down: it stays ready, for the resumed job
        # One read snapshot, µs: on the loop. Deleted meanwhile: nothing goes, the record is
        # settled already. A message that waited (or was resumed) is read back from its record.
        if ("raw" in r.message and self.records.erased(self.send_id, [r.seq])
                or "raw" not in r.message and not self.records.body(self.send_id, r)):
            return
        self._handing += 1
        self._handed.clear()
        try:
            await self._hand_over(r, smtp)
        finally:
            self._handing -= 1
            if not self._handing:
                self._handed.set()

    async def _hand_over(self, r: Recipient, smtp) -> None:
        """`_deliver` once it is `r`'s turn: the send (or its refusal) and the settled record.
        The decision of a message nobody received (refused, or failed before it was handed
        over: a render at its turn, no adapter) is withdrawn; not one that failed in the
        transport (a dead letter may still carry it), nor one whose fate is unknown."""
        refused, kept, asked = None, False, time.time()  # (a bounce's event time: `send_or_bury`)
        bounced = False
        try:
            refused = await self._still(r)
            if refused is None and r.items and self.composer.unavailable(r.items):
                await self._render_again(r)  # an item left the catalog (else: settled failed)
            if refused is not None:  # cancelled, archived, opted out or suppressed since
                r.state, r.reason = SUPPRESSED, refused
            elif r.state == READY:
                kept = True  # from here, a failure may have gone out or be a dead letter
                await self.delivery.send_or_bury(
                    r.channel, r.message["to"], r.message["raw"].encode("latin-1"),
                    campaign=self.job["campaign"], decision=r.decision, user=r.user, at=asked,
                    via=smtp,
                    unless=self.cancelling.requested, still=lambda: self._still(r),
                    breaker=self.breakers.get(r.channel))
                r.state, r.sent_at = SENT, time.time()
        except UNDELIVERED as err:
            r.state, r.reason, bounced = FAILED, err.reason, getattr(err, "bounced", False)
        except NoLongerAllowed as err:  # cancelled, opted out, erased, ... in a retry's backoff:
            r.state, r.reason = SUPPRESSED, err.reason  # not sent again; a failed attempt may
            # have reached the relay, so its decision is kept
        except TailorError as err:  # no adapter any more (a restart with other settings)
            r.state, r.reason, kept = FAILED, f"no {r.channel} adapter: {type(err).__name__}", False
        except Exception as err:  # noqa: BLE001 - one record never stops the job; no PII logged
            logger.error("send %s: delivering failed: %s", self.send_id, type(err).__name__)
            r.state, r.reason = FAILED, "error"
        r.shed()  # settled: its record no longer holds the body either (`Recipient.encode`)
        await self.settler.settle(r)
        if r.state == SENT:
            self._sent.append(r)
        elif refused is not None or (r.state == FAILED and not kept):  # nobody received it
            await self._withdraw([withdrawal(r.decision, refused or "")])
        breaker = self.breakers.get(r.channel)
        if kept and breaker is not None and r.state in (SENT, FAILED) \
                and await breaker.count(bounced):
            await self._tripped(r.channel, breaker)

    async def _flush_bounces(self) -> None:
        for breaker in self.breakers.values():
            await breaker.flush()

    async def _tripped(self, channel: str, b: BounceBreaker) -> None:
        """The relay (the SMS provider) hard-bounced more of the job's `channel` messages than
        its breaker's bound: misconfigured, most likely, not that many dead addresses (an SMS
        adapter that mangles numbers gets 21211 for each). The job stops as a CancelSend
        stops it (its record stamped `cancelled`, with `stopped_by` `bounce_breaker`, so a
        resume after a crash settles it too, under that reason: before, `cancelled`), the
        recipients left settled suppressed `bounce_breaker`; the bounced ones' addresses stay unlisted
        (their messages are dead letters, to retry once the relay is fixed). Counts only in
        the log. A job cancelled before (CancelSend; its last messages being handed over
        tripped it) stays the operator's cancel: its recipients left are `cancelled` (before,
        renamed `bounce_breaker`); only the listings are dropped."""
        if self.cancelling.requested.is_set():
            logger.warning("send %s (cancelled): its breaker tripped on the messages being "
                           "handed over (%d of %d %s messages hard-bounced); %s", self.send_id,
                           b.bounced, b.handed, channel, NOT_LISTED[channel])
            return
        logger.error("send %s stopped: more than %.0f%% of the last %d %s messages handed over "
                     "hard-bounced (send_bounce_breaker_share, send_bounce_breaker_min; %d of "
                     "%d in the job); %s, those messages are dead letters, the rest is settled "
                     "suppressed %s", self.send_id, 100 * b.share, b.minimum, channel, b.bounced,
                     b.handed, NOT_LISTED[channel], BOUNCE_BREAKER)
        job, _ = await asyncio.to_thread(self.records.cancel, self.send_id, BOUNCE_BREAKER)
        self.cancelling.reason = stopped_by(job) if job is not None else BOUNCE_BREAKER
        self.cancel()

    async def _still(self, r: Recipient) -> str | None:
        """Why `r`'s message may not go now: `cancelled` once the job is (CancelSend), else
        `Delivery.still` (archived, the contact policy, its address) for the campaign's purpose
        read once per job. Asked just before it is handed over and before each retry (a cancel
        ends the backoff at once: `unless`); a reason from either settles it suppressed."""
        if self.cancelling.requested.is_set():
            return self.cancelling.reason
        return await self.delivery.still(self.job["campaign"], r.user, r.channel,
                                         r.message["to"], self.purpose)

    async def _render_again(self, r: Recipient) -> None:
        """Render `r`'s logged decision again (an item its message shows left the catalog since
        it was composed) and store the new message before it goes, so a restart sends this one
        (same decision, so the same Message-ID); `r` failed with the reason when it cannot be,
        suppressed with the logged reason when the decision reads suppressed now."""
        try:
            choice = (await self._logged([r])).get(r.decision)
            if choice is None:
                raise LookupError("the logged decision is gone")
            msg, recipient = await self.composer.render_logged(self.job["campaign"], r.user,
                                                               choice)
            if recipient is None and msg.suppressed:  # (its record damaged since: logged as
                r.state, r.reason = SUPPRESSED, msg.reason  # `decision_record_damaged`): not sent
                return
            if recipient is None:
                raise LookupError("the logged decision renders nothing")
            r.message["raw"] = self.delivery.flatten(msg, r.message["to"]).decode("latin-1")
            r.items = self.composer.shown_items(msg)
            await asyncio.to_thread(self.records.update, self.send_id, [r])
            if r.state == READY:  # not erased meanwhile (`update`): its items (impressions)
                self.composer.record_shown(msg)
        except TailorError as err:
            r.state, r.reason = FAILED, failure(err)
        except Exception as err:  # noqa: BLE001 - settled with a reason; the text may hold PII
            logger.error("send %s: rendering again failed: %s", self.send_id, type(err).__name__)
            r.state, r.reason = FAILED, "error"

    async def _record_sent(self) -> None:
        if self._sent:
            done, self._sent = self._sent, []
            done = await self._not_erased(done)
            await self.delivery.record_sent(
                [sent_event(r.channel, self.job["campaign"], r.decision, r.user, r.sent_at)
                 for r in done],
                self.ahead)

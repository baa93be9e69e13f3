"""SendCampaign's jobs in this process: start (validated), progress, resume after a restart.

A job is run by the process that created it (`owner`, a pid in its record). On start every
server process calls `resume()`: it claims each unfinished job whose owner is no longer
alive (one transaction per `CLAIMS` jobs, so of several workers one wins each) and runs it
from its records (`sending.SendJob`).

A ComposeMessage with `deliver` whose decision the contact policy deferred (`send_at` ahead:
quiet hours, a send window's hour) is handed to the same machinery (`schedule`): a job of one
recipient, stored `ready` with its message, started when it is due (a timer per job, not a
task: a night of quiet hours may defer many; at most `send_connections` of them run at once:
quiet hours end for a whole zone at once), which re-checks consent, the suppression list,
erasure and the catalog before it goes, as every job does. A restart resumes it like any job.
Its record is kept a while after it ended (`SendRecords.finish`), so GetSendProgress and a
repeat of its request say how it ended.

`cancel` (CancelSend) stops a job of any process: its record says so (`SendRecords.cancel`),
and the runner, here or in the process running it (`SendJob.cancel`, `cancelling`),
settles what is left.
"""
from __future__ import annotations

import asyncio
import collections
import hashlib
import json
import logging
import os
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ..campaigns.errors import CampaignArchived
from ..campaigns.requests import unkeyed_digest
from ..config import Settings
from ..errors import FailedPrecondition, InvalidArgument, NotFound, TailorError
from ..processes import owner_alive
from ..store.keys import SEP_CHAR
from ..store.tokens import keyed_digest
from ..validation import (
    check_count,
    check_finite,
    check_id,
    check_known,
    check_range,
    refused_since,
    shown,
)
from .cancelling import withdrawal
from .channels import MESSAGE_CHANNELS
from .compose import Composer
from .delivery import Delivery
from .errors import RelayRefused
from .once import Once
from .sending import SendJob
from .sends import CANCELLED, FAILED, READY, SUPPRESSED, Recipient, SendRecords
from .sends import stopped_by as why_stopped

__all__ = ["SendJobs", "SendProgress", "scheduled_id"]

logger = logging.getLogger("tailor.messages.send")

CLAIMS = 500
"""Unfinished jobs a resume claims in one write transaction."""


@dataclass
class SendProgress:
    send_id: str
    campaign_id: str
    total: int
    sent: int
    suppressed: dict[str, int] = field(default_factory=dict)
    failed: dict[str, int] = field(default_factory=dict)
    started_at: float = 0.0
    finished_at: float = 0.0
    cancelled_at: float = 0.0
    stopped_by: str = ""
    """What stopped the job (`sends.stopped_by`: `cancelled`, `bounce_breaker`); "" while it
    was not stopped."""

    @property
    def pending(self) -> int:
        return self.total - self.sent - sum(self.suppressed.values()) - sum(self.failed.values())

    @classmethod
    def of(cls, send_id: str, job: dict) -> SendProgress:
        cancelled = job.get("cancelled", 0.0)
        return cls(send_id, job["campaign"], job["total"], job["sent"], dict(job[SUPPRESSED]),
                   dict(job[FAILED]), job["started"], job["finished"], cancelled,
                   why_stopped(job) if cancelled else "")



def scheduled_id(decision_id: str) -> str:
    """The send id of a deferred ComposeMessage's job: its decision's (GetSendProgress)."""
    return f"send-{decision_id}"


class SendJobs:
    def __init__(self, settings: Settings, records: SendRecords, composer: Composer,
                 delivery: Delivery):
        self.settings, self.limits = settings, settings.limits
        self.records, self.composer, self.delivery = records, composer, delivery
        self._running: dict[str, tuple[SendJob, asyncio.Task]] = {}
        self._waiting: dict[str, asyncio.TimerHandle] = {}
        """Jobs of deferred ComposeMessages not due yet: their start's timer (`_start`)."""
        self._queued: collections.deque[str] = collections.deque()
        """Jobs of deferred ComposeMessages due, waiting for one of those running to end."""
        self._composed = 0
        """Jobs of deferred ComposeMessages running (at most `send_connections`)."""
        self._scheduling: set[asyncio.Task] = set()
        """Jobs being stored (`schedule`, `start`: their callers may have given up): `close` waits
        for them."""

    # -- checks ------------------------------------------------------------------------------------
    def _users(self, user_ids: Sequence[str]) -> list[str]:
        if not user_ids:
            raise InvalidArgument("user_ids", "the audience is empty")
        check_count("user_ids", len(user_ids), self.limits.send_audience)
        seen: dict[str, int] = {}
        for i, u in enumerate(user_ids):
            check_id(f"user_ids[{i}]", u, self.limits.id_bytes)
            if u in seen:  # by position: the failed call's log line carries the message
                raise InvalidArgument(f"user_ids[{i}]", f"names the user of user_ids[{seen[u]}] again")
            seen[u] = i
        return list(user_ids)

    def _rates(self, asked: Mapping[str, float]) -> dict[str, float]:
        """The rates asked for, checked (the server's `send_rate_per_second` fills in the
        channels not named: `start`)."""
        rates = {}
        for channel, rate in asked.items():
            check_known("rate_per_second", channel, MESSAGE_CHANNELS)
            check_finite(f"rate_per_second[{channel}]", rate)
            check_range(f"rate_per_second[{channel}]", rate, 1e-3, self.limits.send_rate_per_second)
            rates[channel] = float(rate)
        return rates

    # -- the RPCs ----------------------------------------------------------------------------------
    async def start(self, campaign_id: str, user_ids: Sequence[str],
                    rates: Mapping[str, float], context: Mapping[str, float],
                    request_id: str = "", caller: str = "") -> SendProgress:
        """Start a send job. With a `request_id`, the job's id is the digest of (`caller`,
        campaign, id): a repeat asking the same is answered the job's progress and starts
        nothing (the campaign archived since included); one asking otherwise is
        FAILED_PRECONDITION. An archived campaign starts no job (it makes no decisions: every
        recipient would fail), nor does one stored under an id refused since (`refused_since`:
        INVALID_ARGUMENT, as ChooseVariant; before, every recipient failed "InvalidArgument")."""
        campaign = await self.composer.message_campaign(campaign_id)  # NOT_FOUND / not a message one
        users, asked = self._users(user_ids), self._rates(rates)
        rates = {**self.settings.send_rate_per_second, **asked}
        check_count("context", len(context), self.limits.context_entries)
        most = self.limits.context_value_max
        context = {k: check_range(f"context[{shown(k)}]", check_finite(f"context[{shown(k)}]", v),
                                  -most, most) for k, v in context.items()}
        self.delivery.check_adapters(campaign.spec.message_channels)  # FAILED_PRECONDITION
        # without one for any of its channels
        if request_id:
            check_id("request_id", request_id, self.limits.request_id_bytes)
            # unkeyed as ever: it names no user, and a repeat from before keeps its job's id
            send_id = "send-" + unkeyed_digest(caller, campaign_id, "", request_id)[:16].decode()
            # a hash over the whole audience (up to limits.send_audience ids): off the loop;
            # of the rates asked, not the server's defaults (a repeat after a deploy that
            # changed them asks the same)
            terms = await asyncio.to_thread(_terms, users, asked, context)
        else:
            send_id, terms = "send-" + secrets.token_hex(8), ""
        refused = refused_since(campaign_id, self.limits.id_bytes)
        if campaign.archived or refused:  # only a repeat of a job started before is answered
            job = await asyncio.to_thread(self.records.job, send_id) if request_id else None
            if job is None:  # an id refused since: the campaign decides nothing (ChooseVariant)
                raise CampaignArchived(campaign_id) if campaign.archived else InvalidArgument(
                    "campaign_id", f"{refused} (a campaign stored before such ids were refused "
                    "takes no new decisions)")
            return await _repeated(send_id, job, campaign_id, terms, request_id,
                                   (users, rates, context))
        if not (request_id and await asyncio.to_thread(self.records.job, send_id)):
            await self.delivery.check_relay(campaign.spec.message_channels)  # a repeat: answered
        job, created = await self._shielded(send_id, self._create(send_id, campaign_id, users,
                                                                   rates, context, terms))
        if not created:
            return await _repeated(send_id, job, campaign_id, terms, request_id,
                                   (users, rates, context))
        return SendProgress.of(send_id, job)

    async def _create(self, send_id: str, campaign_id: str, users: list[str],
                      rates: dict[str, float], context: dict[str, float],
                      terms: str) -> tuple[dict, bool]:
        """Store a new job and run it (`records.create`: the stored one, and whether it was
        this call's)."""
        job, created = await asyncio.to_thread(self.records.create, send_id, campaign_id, users,
                                               rates, context, os.getpid(), terms)
        if created:
            self._run(send_id, job)
        return job, created

    async def _shielded(self, send_id: str, coro):
        """Await `coro` as a task its caller giving up (its deadline) does not stop: a job it
        stores is started and kept all the same (a live process's job is no other's to start;
        before, a SendCampaign whose deadline passed while its job was stored left it pending
        until a restart). `close` waits for these first. Its error goes to the caller while it
        waits (a full store: RESOURCE_EXHAUSTED); once the caller gave up, to the log
        (`_unanswered`)."""
        task = asyncio.ensure_future(coro)
        self._scheduling.add(task)
        task.add_done_callback(self._scheduling.discard)
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(lambda t: _unanswered(send_id, t))
            raise

    async def schedule(self, message, user_id: str, to: str, data: bytes, items: list[str],
                       once: Once | None = None, stored=None) -> SendProgress:
        """Store a ComposeMessage's `message` (flattened: `data`, to `to`; showing `items`)
        that the contact policy deferred to its send_at as a job of its own, `ready`, and start
        it when it is due; the job's progress (`scheduled_id`: its send id; a repeat's says
        how it ended, while it is kept). `once`: the request's delivery claim; a repeat of
        the request is answered from it and schedules nothing (nor does a second call of one
        decision: the job's id is the decision's); `stored()`: called once this call stored
        the job (the message's impressions: `Composer.record_shown`). Shielded: a caller giving up meanwhile
        (its deadline) leaves the job stored by then, so it is started and kept `scheduled`
        all the same (a live process's job is no other's to start); once stored, it stands
        even if keeping the request's state fails (a repeat then finds its claim lapsed: in
        doubt), rather than being answered an error and its decision withdrawn."""
        return await self._shielded(scheduled_id(message.decision_id), self._schedule(
            message, user_id, to, data, items, once, stored))

    async def _schedule(self, message, user_id: str, to: str, data: bytes, items: list[str],
                        once: Once | None, stored) -> SendProgress:
        send_id = scheduled_id(message.decision_id)
        if once is not None and await once.claim(time.time() + self.delivery.claim_seconds) \
                is not None:  # the request's first call scheduled it: how is it doing?
            job = await asyncio.to_thread(self.records.job, send_id)
            return SendProgress.of(send_id, job) if job is not None else SendProgress(
                send_id, message.campaign_id, 1, 0)  # gone: erased, or kept past its time
        r = Recipient(0, user_id, READY, message.decision_id, "", message.send_at,
                      {"to": to, "raw": data.decode("latin-1")}, 0.0, message.channel, items)
        try:
            job, created = await asyncio.to_thread(
                self.records.create, send_id, message.campaign_id, [r],
                dict(self.settings.send_rate_per_second), {}, os.getpid(), due=message.send_at)
        except BaseException as err:
            if once is not None:
                await once.settle(None, err)
            raise
        if created:
            self._start(send_id, job)
            if stored is not None:
                stored()
        if once is not None:
            try:
                await once.scheduled(message.send_at)
            except TailorError as err:  # stored: it goes; a repeat finds the claim lapsed (doubt)
                logger.warning("send %s: keeping its request's state failed: %s", send_id,
                               type(err).__name__)
        return SendProgress.of(send_id, job)

    async def cancel(self, send_id: str) -> SendProgress:
        """CancelSend: stop a send job, a SendCampaign's or a deferred ComposeMessage's (its
        send id: `scheduled_id`), from any process: nothing more of it goes; what is not
        settled yet is counted suppressed `cancelled` and its decisions withdrawn. Answered
        its progress: a deferred message's settled at once unless it is due (`SendRecords.
        cancel`); any other by its runner (at once in this process; within
        `cancelling.CANCEL_POLL` in another; one waiting here for its send_at or a slot runs
        then and settles it; a job whose owner is gone is claimed and started here), which
        lets a message already being handed to the relay end as it ends. A job that ended is
        answered as it ended."""
        check_id("send_id", send_id, self.limits.id_bytes)
        job, decision = await asyncio.to_thread(self.records.cancel, send_id)
        if job is None:
            raise NotFound("send", send_id)
        if decision:  # a repeat of its request is answered it, suppressed `cancelled`
            await SendJob.withdraw(self.composer, send_id, [withdrawal(decision, CANCELLED)])
        running = self._running.get(send_id)
        if job["finished"]:
            timer = self._waiting.pop(send_id, None)
            if timer is not None:  # a deferred message's, settled: its start is not needed
                timer.cancel()
        elif running is not None:
            running[0].cancel()
        elif send_id not in self._waiting and send_id not in self._queued:
            claimed = await asyncio.to_thread(self.records.claim, [send_id], os.getpid(),
                                              owner_alive)
            if send_id in claimed:  # its owner is gone: settled here, not at the next start
                self._start(send_id, claimed[send_id])
        return SendProgress.of(send_id, job)

    async def progress(self, send_id: str) -> SendProgress:
        check_id("send_id", send_id, self.limits.id_bytes)
        job = await asyncio.to_thread(self.records.job, send_id)
        if job is None:
            raise NotFound("send", send_id)
        return SendProgress.of(send_id, job)

    # -- running -----------------------------------------------------------------------------------
    def _start(self, send_id: str, job: dict) -> None:
        """Run the job now, or (a deferred ComposeMessage's) once it is due (`_due`)."""
        if "due" not in job:
            self._run(send_id, job)
            return
        wait = job["due"] - time.time()
        if wait <= 0:
            self._due(send_id)
        else:
            self._waiting[send_id] = asyncio.get_running_loop().call_later(
                wait, self._due, send_id)

    def _due(self, send_id: str) -> None:
        """A deferred ComposeMessage's job is due: it runs once fewer than `send_connections`
        of them run (each its own SMTP connection; quiet hours end for a whole zone at once)."""
        self._waiting.pop(send_id, None)
        self._queued.append(send_id)
        self._next_due()

    def _next_due(self) -> None:
        """Run queued due jobs, as stored (one read each, µs, on the loop), up to the bound."""
        while self._queued and self._composed < self.settings.send_connections:
            send_id = self._queued.popleft()
            job = self.records.job(send_id)
            if job is not None and not job["finished"]:
                self._composed += 1
                self._run(send_id, job)

    def _run(self, send_id: str, job: dict) -> None:
        runner = SendJob(send_id, job, self.records, self.composer, self.delivery,
                         self.settings.send_compose_ahead,
                         min(self.settings.send_connections, job["total"]),
                         (self.settings.send_bounce_breaker_share,
                          self.settings.send_bounce_breaker_min))
        task = asyncio.create_task(runner.run())
        self._running[send_id] = runner, task
        task.add_done_callback(lambda t: self._done(send_id, t))

    def _done(self, send_id: str, task: asyncio.Task) -> None:
        runner, _ = self._running.pop(send_id, (None, None))
        if runner is not None and "due" in runner.job:
            self._composed -= 1
            self._next_due()
        if not task.cancelled() and task.exception() is not None:
            logger.error("send %s stopped: %s (resumes at the next start)", send_id,
                         _kinds(task.exception()))

    async def resume(self) -> list[str]:
        """Run every unfinished job no live process runs; their send ids. Those a relay
        refusing Tailor's session would make dead letters are left to the next start
        (`_relay_refuses`)."""
        resumed, unfinished = [], await asyncio.to_thread(self.records.unfinished)
        refused = await self._relay_refuses(unfinished)
        unfinished = [s for s in unfinished if s not in refused]
        for at in range(0, len(unfinished), CLAIMS):
            claimed = await asyncio.to_thread(self.records.claim, unfinished[at:at + CLAIMS],
                                              os.getpid(), owner_alive)
            for send_id, job in claimed.items():
                self._start(send_id, job)
                resumed.append(send_id)
        if resumed:
            logger.info("resumed %d send job(s)", len(resumed))
        return resumed

    async def _relay_refuses(self, send_ids: list[str]) -> set[str]:
        """Of the unfinished `send_ids`, the SendCampaign jobs of a dead owner that would mail
        (an email campaign's) when the relay refuses Tailor's session: checked once, by the
        check `start` makes of a new job (`Delivery.check_relay`). Before, a job resumed after
        a crash or restart was not checked, and a relay that had stopped taking Tailor's login
        meanwhile made its remaining audience dead letters. They are not claimed: they stay
        pending (GetSendProgress), resume at the next start (the login is fixed in the
        settings, which a restart reads), and a CancelSend settles them here. Deferred
        ComposeMessages' jobs (one message each, due later) are not held back."""
        orphans = await asyncio.to_thread(self._orphans, send_ids)
        channels: dict[str, tuple] = {}
        for job in orphans.values():
            if job["campaign"] not in channels:
                try:
                    campaign = await self.composer.message_campaign(job["campaign"])
                except TailorError:  # gone or not a message campaign: the runner settles it
                    channels[job["campaign"]] = ()
                    continue
                channels[job["campaign"]] = tuple(campaign.spec.message_channels)
        mailing = {s for s, job in orphans.items() if "email" in channels[job["campaign"]]}
        try:
            await self.delivery.check_relay(("email",) if mailing else ())
        except RelayRefused as err:
            logger.error("%d send job(s) not resumed: the SMTP relay refused Tailor's session "
                         "(%s); they resume at the next start", len(mailing), err.reason)
            return mailing
        return set()

    def _orphans(self, send_ids: list[str]) -> dict[str, dict]:
        """{send id: job} of the SendCampaign jobs (not deferred ones) whose owner is gone and
        that may still mail: not a cancelled one (CancelSend, its bounce breaker), which a
        resume only settles (before, a refusing relay held it back too, pending)."""
        jobs = {s: self.records.job(s) for s in send_ids}
        return {s: job for s, job in jobs.items() if job is not None and "due" not in job
                and not job.get("cancelled")
                and not owner_alive(job["owner"], job.get("owner_started"))}

    async def close(self, wait: float = 0.0) -> None:
        """Stop the jobs (they resume at the next start): none starts a message, those being
        handed over get `wait` seconds to be accepted and settled (`SendJob.stop`); those not
        due yet wait for the next start (those being scheduled are stored first)."""
        await asyncio.gather(*self._scheduling, return_exceptions=True)
        for timer in self._waiting.values():
            timer.cancel()
        self._waiting.clear()
        self._queued.clear()
        await asyncio.gather(*(job.stop(wait) for job, _ in list(self._running.values())))
        tasks = [task for _, task in self._running.values()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _repeated(send_id: str, job: dict, campaign_id: str, terms: str, request_id: str,
                    merged: tuple) -> SendProgress:
    """The progress of the job a repeated `request_id` started, if it asked the same. A job
    stored before the terms were of the rates asked holds them with the server's defaults
    filled in (`merged`: audience, those rates, context); one stored before they were keyed
    holds `plain_terms` (`_plain_terms`)."""
    same = job.get("terms") == terms or (
        job.get("terms") and job["terms"] == await asyncio.to_thread(_terms, *merged)) or (
        job.get("plain_terms") and job["plain_terms"] == await asyncio.to_thread(
            _plain_terms, *merged))
    if not same or job["campaign"] != campaign_id:
        raise FailedPrecondition(
            f"request_id {shown(request_id)} started send {send_id} with another "
            "audience, rates or context; use a new request_id for a new send")
    return SendProgress.of(send_id, job)


def _unanswered(send_id: str, task: asyncio.Task) -> None:
    """Log the error of a job's storing whose caller gave up (before, nobody heard of it but
    asyncio, at the task's collection, if ever: "Task exception was never retrieved", with a
    traceback). Its store write is one transaction: nothing of the job was kept."""
    if not task.cancelled() and (err := task.exception()) is not None:
        logger.error("send %s: not stored (nothing of it kept), and its caller had given up: "
                     "%s", send_id, _kinds(err))


def _kinds(err: BaseException) -> str:
    """The class names of an error (of each in a group): its text may carry an address."""
    if isinstance(err, BaseExceptionGroup):
        return ", ".join(_kinds(e) for e in err.exceptions)
    return type(err).__name__


def _terms(users: list[str], rates: dict[str, float], context: dict[str, float]) -> str:
    """The keyed digest of what a SendCampaign asked (audience in order, rates, context): kept
    in the job's record, which outlives the users' erasure, so it must not let anyone test a
    guessed id against it (`tokens.keyed_digest`)."""
    asked = json.dumps([sorted(rates.items()), sorted(context.items())])
    return keyed_digest(b"send-terms", SEP_CHAR.join([asked, *users]).encode())  # no id has SEP


PLAIN_TERMS = b"send-terms-plain"
"""The domain of `blind_plain_terms`."""


def blind_plain_terms(plain: str) -> str:
    """The keyed digest kept (as `plain_terms`) in place of the plain digest of its terms that a
    Tailor from before they were keyed stored in a job (the send_job 1 -> 2 step,
    `store.layouts`): a repeat still matches it, and nobody without the key can test a guessed
    audience against it."""
    return keyed_digest(PLAIN_TERMS, plain.encode())


def _plain_terms(users: list[str], rates: dict[str, float], context: dict[str, float]) -> str:
    """`blind_plain_terms` of the digest such a Tailor computed (blake2b; the rates with the
    server's defaults filled in)."""
    h = hashlib.blake2b(digest_size=16, person=b"tailor-send")
    h.update(SEP_CHAR.join(users).encode())
    h.update(json.dumps([sorted(rates.items()), sorted(context.items())]).encode())
    return blind_plain_terms(h.hexdigest())

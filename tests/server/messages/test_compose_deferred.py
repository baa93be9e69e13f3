"""ComposeMessage with `deliver` whose decision the contact policy deferred (quiet hours, a send
window's hour: `send_at` ahead) is scheduled: it goes at its send_at through the send-job
machinery, durably (a restart finds it), once (a repeat of its request schedules nothing more),
and not at all if by then the user opted out or was erased (a real relay on loopback, a real
store; the policy's verdict is moved a few seconds ahead where the test cannot wait for a
quiet hour's end)."""
import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import messaging_pb2_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import serving

from .conftest import email_spec, relayed
from .test_send_campaign import audience

AHEAD = 2.0


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


@contextlib.contextmanager
def slow_job_writes(tailor_server, seconds: float = 1.0):
    """The send jobs' writes held `seconds` in their thread (a slow disk), the real write
    after it."""
    records = tailor_server.sends.records
    create = records.create

    def slow(*args, **kw):
        time.sleep(seconds)
        return create(*args, **kw)
    records.create = slow
    try:
        yield
    finally:
        del records.create


@contextlib.contextmanager
def deferred(server, seconds: float = AHEAD):
    """The contact policy defers every allowed decision `seconds` from its time (as quiet hours
    ending then would): the logged decision and its answer both carry that send_at."""
    policy = server.campaigns.contact
    verdicts = policy.verdicts

    def later(campaign, contacts, now):
        return [v if v.suppressed else v._replace(send_at=now + seconds)
                for v in verdicts(campaign, contacts, now)]
    policy.verdicts = later
    try:
        yield
    finally:
        del policy.verdicts


def compose(messaging, user: str, request_id: str = ""):
    return messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=True, request_id=request_id), timeout=30)


async def sent_events(profiles) -> list[str]:
    return [e.attributes["decision_id"] async for e in profiles.ExportEvents(
        ppb.ExportEventsRequest()) if e.type == "email_sent"]


async def test_a_deferred_message_goes_at_its_send_at_once(tailor_server, sink, campaigns,
                                                           profiles, messaging):
    """It was answered `delivered` false and then never sent by anyone."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d1"])
    with deferred(tailor_server):
        got = await compose(messaging, "d1", "req-1")
        again = await compose(messaging, "d1", "req-1")  # a retry whose answer was lost
    assert (got.delivered, got.scheduled, again.scheduled) == (False, True, True)
    assert again.decision_id == got.decision_id and got.send_at > time.time()
    assert sink.arrived == []
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(1.0)  # a second copy would have come by now
    assert sink.message_ids == [f"<{got.decision_id}@tailor.invalid>"]
    assert await sent_events(profiles) == [got.decision_id]


async def test_a_deferred_message_goes_at_its_send_at_not_before(tailor_server, sink, campaigns,
                                                                 profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d2"])
    with deferred(tailor_server, 3.0):
        got = await compose(messaging, "d2")
    await asyncio.to_thread(sink.wait_for, 1, 15)
    arrived = time.time() - (time.monotonic() - sink.arrived[0][0])  # the sink's clock
    assert arrived >= got.send_at - 0.05


@pytest.mark.parametrize("change", ["opted_out", "erased"])
async def test_a_deferred_message_is_not_sent_after_the_user_opted_out_or_was_erased(
        tailor_server, sink, campaigns, profiles, messaging, change):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d3", "d4"])
    with deferred(tailor_server):
        got = await compose(messaging, "d3")
        other = await compose(messaging, "d4")  # goes: the clock the test waits by
    assert got.scheduled and other.scheduled
    if change == "opted_out":
        await profiles.SetConsent(ppb.SetConsentRequest(user_id="d3", channel="email",
                                                        opted_in=False, source="preferences"))
    else:
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="d3"))
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(1.5)
    assert [r[0] for _, r, _ in sink.arrived] == ["d4@example.com"]
    assert await sent_events(profiles) == [other.decision_id]


async def test_a_deferred_message_without_an_address_is_refused(tailor_server, sink, campaigns,
                                                                profiles, messaging):
    """It was answered `delivered` false with nothing to send it to, its decision left
    pending (a contact against the caps that never happened)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d5"], address=False)
    with deferred(tailor_server), pytest.raises(grpc.RpcError) as err:
        await compose(messaging, "d5")
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "email" in err.value.details()


async def test_a_deferred_message_survives_a_restart(settings, sink):
    """Scheduled on one server, stopped before its send_at; the next start on the same data
    sends it."""
    async with serving(settings) as (server, ch):
        from protos.tailor.v1 import campaign_pb2_grpc, profile_pb2_grpc
        await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
            cpb.CreateCampaignRequest(spec=email_spec()))
        await audience(profile_pb2_grpc.ProfileServiceStub(ch), ["d6"])
        with deferred(server, 3.0):
            got = await compose(messaging_pb2_grpc.MessagingServiceStub(ch), "d6")
        assert got.scheduled
    assert sink.arrived == [] and time.time() < got.send_at
    async with serving(settings):
        await asyncio.to_thread(sink.wait_for, 1, 20)
        await asyncio.sleep(0.5)
    assert sink.message_ids == [f"<{got.decision_id}@tailor.invalid>"]


async def test_quiet_hours_schedule_the_message_for_their_end(tailor_server, sink, campaigns,
                                                              profiles, messaging):
    """The real policy: quiet now in UTC until the top of the next hour (or the one after,
    a minute before it)."""
    now = datetime.now(UTC)
    end = (now + timedelta(hours=1, minutes=1)).replace(minute=0, second=0, microsecond=0)
    spec = email_spec()
    spec.quiet_hours.CopyFrom(cpb.QuietHours(start=(now - timedelta(hours=1)).strftime("%H:00"),
                                             end=end.strftime("%H:%M"), action="defer"))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await audience(profiles, ["d7"])
    got = await compose(messaging, "d7")
    assert (got.scheduled, got.delivered, got.send_at) == (True, False, end.timestamp())
    await asyncio.sleep(0.5)
    assert sink.arrived == []


async def test_an_item_removed_while_a_deferred_message_waits_is_not_in_it_when_it_goes(
        tailor_server, sink, campaigns, profiles, messaging, channel, demo_bundle):
    """The job looked the logged decision up under the id a SendCampaign job fixes for its
    recipient, not the message's own: it found none, and the message failed `error` instead
    of being rendered again without the item."""
    import re

    import numpy as np

    from protos.tailor.v1 import catalog_pb2 as capb
    from protos.tailor.v1 import catalog_pb2_grpc
    with np.load(demo_bundle / "items.npz") as npz:
        names, cats, pop, ids = (npz["category_names"], npz["category"], npz["popularity"],
                                 npz["item_ids"])
    in_cat = np.flatnonzero(cats == 0)
    top = str(ids[in_cat[np.argmax(pop[in_cat])]])  # what a user without history is shown
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=(
        f'{{% for it in recommend(1, category="{names[0]}") %}}'
        '<i data-item="{{ it.item_id }}"></i>{% endfor %}'))))
    await audience(profiles, ["d8"])
    with deferred(tailor_server):
        got = await compose(messaging, "d8")
    assert got.scheduled and f'data-item="{top}"' in got.parts["html"]
    await catalog_pb2_grpc.CatalogServiceStub(channel).RemoveItems(
        capb.RemoveItemsRequest(item_ids=[top]))
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    shown = re.findall(r'data-item="([^"]+)"', sink.mails[0].get_body(("html",)).get_content())
    assert len(shown) == 1 and shown[0] != top
    assert sink.message_ids == [f"<{got.decision_id}@tailor.invalid>"]


async def test_a_restart_claims_the_waiting_messages_in_few_transactions(tailor_server):
    """Every deferred message is a job a restart claims: one write transaction each (7 ms
    with fsync; 100,000 messages deferred overnight kept a start from finishing for 12 min).
    They are claimed 500 a transaction, and wait for their time (a timer, no task)."""
    import subprocess

    from server.messages.sends import READY, Recipient
    gone = subprocess.Popen(["true"])
    gone.wait()  # a pid no process has: the owner that died
    records, due = tailor_server.sends.records, time.time() + 3600
    for i in range(1200):
        r = Recipient(0, f"w{i}", READY, f"d{i}", "", due, {"to": f"w{i}@example.com",
                                                            "raw": "x"}, 0.0, "email", [])
        records.create(f"send-d{i}", "mail", [r], {"email": 50.0}, {}, gone.pid, due=due)
    writes, write = [], tailor_server.store.write

    def counted(fn, *args, **kw):
        writes.append(fn.__qualname__)
        return write(fn, *args, **kw)
    tailor_server.store.write = counted
    try:
        resumed = await tailor_server.sends.resume()
    finally:
        del tailor_server.store.write
    assert len(resumed) == 1200
    assert len([w for w in writes if w.startswith("SendRecords.claim")]) == 3
    assert len(tailor_server.sends._waiting) == 1200 and not tailor_server.sends._running


async def test_messages_due_together_go_over_at_most_send_connections(
        tailor_server, sink, campaigns, profiles, messaging):
    """Quiet hours end for a whole zone at once: each deferred message's job opened its own
    SMTP connection, all at the same moment (no bound: thousands at 08:00). At most
    `send_connections` (2 here) go at once; the relay answers each DATA in 0.3 s."""
    users = [f"t{i}" for i in range(12)]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, users)
    tailor_server.sends.settings = tailor_server.settings.model_copy(
        update={"send_connections": 2})
    sink.delay_data = 0.3
    due = time.time() + 4.0
    with deferred(tailor_server, 0.0):
        policy = tailor_server.campaigns.contact
        together = policy.verdicts  # every decision deferred to the same instant
        policy.verdicts = lambda c, contacts, now: [v._replace(send_at=due)
                                                    for v in together(c, contacts, now)]
        got = await asyncio.gather(*(compose(messaging, u) for u in users))
    assert all(m.scheduled and m.send_at == due for m in got)
    await asyncio.to_thread(sink.wait_for, len(users), 30)
    spread = sink.arrived[-1][0] - sink.arrived[0][0]
    assert spread >= 0.3 * (len(users) / 2 - 1) * 0.9, spread  # 2 at a time, not 12


async def test_a_deferred_message_whose_caller_gave_up_while_it_was_stored_still_goes(
        tailor_server, sink, campaigns, profiles, messaging):
    """The caller's deadline ran out while the message's job was being written (a slow disk:
    the write is held 1 s here): the job was stored all the same, but never started in this
    process (a live owner: no other worker takes it), so it went only at a restart, hours
    late, and a repeat of the request was answered in doubt. Stored, it goes at its send_at,
    and a repeat is answered scheduled."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d9"])
    with slow_job_writes(tailor_server), deferred(tailor_server), \
            pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="d9", deliver=True, request_id="req-9"), timeout=0.5)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    again = await compose(messaging, "d9", "req-9")
    assert again.scheduled and sink.message_ids == [f"<{again.decision_id}@tailor.invalid>"]


async def test_a_stored_deferred_message_stands_though_its_request_state_was_not_kept(
        tailor_server, sink, campaigns, profiles, messaging):
    """The store refused the write that keeps the request's delivery state (`scheduled`) after
    the message's job was stored: the call was answered RESOURCE_EXHAUSTED and its decision
    withdrawn (no cap counted it), yet the stored message went at its send_at. A stored job
    is the message accepted: answered scheduled, its decision stands."""
    from server.store.errors import StoreFull
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d10"])
    handler = tailor_server.campaigns
    settle = handler.settle_delivery

    async def full(request, decision_id, state):
        if state["s"] == "scheduled":
            raise StoreFull(1 << 20, 0)
        return await settle(request, decision_id, state)
    handler.settle_delivery = full
    try:
        with deferred(tailor_server):
            got = await compose(messaging, "d10", "req-10")
    finally:
        del handler.settle_delivery
    assert got.scheduled
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(0.5)
    assert sink.message_ids == [f"<{got.decision_id}@tailor.invalid>"]
    status = [r.status async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True)) if r.decision_id == got.decision_id]
    assert status == ["pending"]


async def test_erasing_a_user_drops_their_deferred_messages_job_whole(
        tailor_server, sink, campaigns, profiles, messaging):
    """A deferred message's job is the user's alone (its id names their decision): after
    DeleteProfile it stayed until its send_at (hours, days for a send window), answering
    GetSendProgress for that decision (`suppressed {erased: 1}`) and resumed by a restart.
    It goes with the user; a job erased while it runs ends without its record."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d11"])
    with deferred(tailor_server, 3600):
        got = await compose(messaging, "d11", "req-11")
    send_id = f"send-{got.decision_id}"
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="d11"))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=send_id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert send_id not in await asyncio.to_thread(tailor_server.sends.records.unfinished)


async def test_a_deferred_job_erased_while_it_runs_ends_without_its_record(tailor_server):
    """Its record gone (DeleteProfile) between the job reading its recipient and settling it:
    the settle and the finish find no job, and write none back."""
    from server.messages.sends import READY, SUPPRESSED, Recipient
    records, due = tailor_server.sends.records, time.time() + 3600
    r = Recipient(0, "d12", READY, "dec12", "", due, {"to": "d12@example.com", "raw": "x"},
                  0.0, "email", [])
    records.create("send-dec12", "mail", [r], {"email": 50.0}, {}, 1, due=due)
    tailor_server.store.write(lambda txn: records.erase_user(txn, "d12"))
    r.state = "sent"
    records.update("send-dec12", [r])
    records.finish("send-dec12")
    assert r.state == SUPPRESSED and records.job("send-dec12") is None
    assert list(tailor_server.store.scan("sends", b"")) == []


async def test_closing_waits_for_a_schedule_its_caller_gave_up_on(
        tailor_server, sink, campaigns, profiles, messaging):
    """A shielded schedule outlived its cancelled caller; the jobs' close returned while it was
    still writing (held 1 s), so its timer could start after close and the store close under
    it. Close waits for it: the job is stored, and waits for the next start."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["d13"])
    sends = tailor_server.sends
    create = sends.records.create

    def slow(*args, **kw):
        time.sleep(1.0)
        return create(*args, **kw)
    sends.records.create = slow
    try:
        with deferred(tailor_server, 60), pytest.raises(grpc.RpcError):
            await messaging.ComposeMessage(mpb.ComposeMessageRequest(
                campaign_id="mail", user_id="d13", deliver=True), timeout=0.5)
        await sends.close()
    finally:
        del sends.records.create
    assert len(sends.records.unfinished()) == 1 and not sends._waiting and not sends._running


async def test_a_deferred_message_whose_caller_gave_up_logs_its_impressions(
        tailor_server, sink, campaigns, profiles, messaging):
    """Its caller's deadline ran out while the job was written: the message goes (the
    schedule is shielded), but its items were logged as impressions by the call after the
    schedule, which the cancellation skipped: a message received with no impression. The
    schedule logs them once it stored the job."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=(
        '{% for it in recommend(1) %}<i data-item="{{ it.item_id }}"></i>{% endfor %}'))))
    await audience(profiles, ["d14"])
    with slow_job_writes(tailor_server), deferred(tailor_server), pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="d14", deliver=True), timeout=0.5)
    await asyncio.to_thread(sink.wait_for, 1, AHEAD + 10)
    await asyncio.sleep(0.5)
    assert len(await asyncio.to_thread(tailor_server.impressions.log.of_user, "d14")) == 1

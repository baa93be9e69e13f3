"""SendCampaign to a real SMTP server on loopback: who gets what, counts by reason, the
`email_sent` events, the rate, and bad input."""
import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import run_module

from .conftest import email_spec, relayed


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink)


async def audience(profiles, users, consent=True, address=True):
    for u in users:
        if address:
            await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=u, attributes={"first_name": u.upper(), "email": f"{u}@example.com"}))
        if consent:
            await profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email",
                                                            opted_in=True, source="signup"))


async def until_done(messaging, send_id, timeout=30.0) -> mpb.SendProgress:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=send_id))
        if got.done:
            return got
        await asyncio.sleep(0.05)
    raise AssertionError(f"send not done: {got}")


async def sent_beside(messaging, sink, users: list[str], spared: str, reason: str) -> None:
    """SendCampaign of `mail` to `users` goes to every one but `spared`, suppressed `reason`
    alone (the damaged-record send tests)."""
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.suppressed, done.failed) == (len(users) - 1, 1, 0)
    assert dict(done.suppressed_by_reason) == {reason: 1}
    assert sorted(r[0] for _, r, _ in sink.arrived) == \
        sorted(f"{u}@example.com" for u in users if u != spared)


async def test_send_reaches_the_consenting_counts_the_rest_and_records_events(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    ok = [f"s{i}" for i in range(6)]
    await audience(profiles, ok)
    await audience(profiles, ["nocons"], consent=False)
    await audience(profiles, ["noaddr"], address=False)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=[*ok, "nocons", "noaddr"], rate_per_second={"email": 1000}))
    assert started.send_id.startswith("send-") and started.total == 8 and not started.done
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.suppressed, done.failed, done.pending) == (6, 1, 1, 0)
    assert dict(done.suppressed_by_reason) == {"no_consent": 1}
    assert dict(done.failed_by_reason) == {"no email address": 1}
    assert sorted(r[0] for _, r, _ in sink.arrived) == sorted(f"{u}@example.com" for u in ok)
    assert len(set(sink.message_ids)) == 6
    assert {m["Subject"] for m in sink.mails} == {f"Hi {u.upper()}" for u in ok}
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "email_sent"]
    assert sorted(f"<{e.attributes['decision_id']}@tailor.invalid>" for e in events) == \
        sorted(sink.message_ids)
    assert sorted(e.user_id for e in events) == ok


async def test_the_rate_spaces_the_messages(sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = [f"r{i}" for i in range(6)]
    await audience(profiles, users)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 10}))
    await until_done(messaging, started.send_id)
    times = [t for t, _, _ in sink.arrived]
    assert times[-1] - times[0] >= 5 * 0.1 * 0.9  # 6 messages at 10/s: 5 gaps of 100 ms


BAD = [
    ({"user_ids": []}, grpc.StatusCode.INVALID_ARGUMENT, "user_ids"),
    ({"user_ids": ["a", "a"]}, grpc.StatusCode.INVALID_ARGUMENT, "user_ids[1]"),
    ({"user_ids": ["a"], "rate_per_second": {"email": 0}}, grpc.StatusCode.INVALID_ARGUMENT,
     "rate_per_second[email]"),
    ({"user_ids": ["a"], "rate_per_second": {"fax": 1}}, grpc.StatusCode.INVALID_ARGUMENT,
     "rate_per_second"),
    ({"user_ids": ["a"], "context": {"x": float("nan")}}, grpc.StatusCode.INVALID_ARGUMENT,
     "context['x']"),
    ({"user_ids": ["a"], "campaign_id": "nope"}, grpc.StatusCode.NOT_FOUND, "nope"),
]


async def test_bad_input_is_refused_with_the_field(tailor_server, campaigns, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    for request_kw, code, field in BAD:
        with pytest.raises(grpc.RpcError) as err:
            await messaging.SendCampaign(mpb.SendCampaignRequest(**{"campaign_id": "mail",
                                                                    **request_kw}))
        assert err.value.code() == code and field in err.value.details(), request_kw
    # limits.send_audience, and an unknown send id
    most = tailor_server.settings.limits.send_audience
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=[f"u{i}" for i in range(most + 1)]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"{most + 1} entries, at most {most}" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id="send-unknown"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_the_cli_sends_and_reports_progress(sink, tailor_server, campaigns, profiles,
                                                  tmp_path):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["c1", "c2"])
    users = tmp_path / "users.txt"
    users.write_text("# audience\nc1\n\nc2\nnocons\n")
    server = ["--server", f"127.0.0.1:{tailor_server.port}", "--timeout", "30"]
    out = await asyncio.to_thread(run_module, "clients", "campaign", "send", *server,
                                  "--campaign", "mail", "--users", str(users), "--rate", "100")
    started = json.loads(out.stdout)
    assert started["total"] == 3 and started["send_id"].startswith("send-")
    deadline = time.time() + 30
    while True:
        out = await asyncio.to_thread(run_module, "clients", "campaign", "progress", *server,
                                      "--send", started["send_id"])
        progress = json.loads(out.stdout)
        if progress["done"] or time.time() > deadline:
            break
    assert (progress["sent"], progress["suppressed"], progress["pending"]) == (2, 1, 0)
    assert progress["suppressed_by_reason"] == {"no_consent": 1}
    assert sorted(r[0] for _, r, _ in sink.arrived) == ["c1@example.com", "c2@example.com"]


async def test_a_message_deferred_by_quiet_hours_waits_for_its_send_at(sink, campaigns, profiles,
                                                                       messaging):
    now = datetime.now(UTC)
    quiet = cpb.QuietHours(start=(now - timedelta(hours=1)).strftime("%H:%M"),
                           end=(now + timedelta(hours=1)).strftime("%H:%M"), action="defer")
    spec = email_spec()
    spec.quiet_hours.CopyFrom(quiet)  # in UTC now; in Dhaka (UTC+6, no DST) it is day
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    awake = ["d1", "d2", "d3"]
    await audience(profiles, [*awake, "sleeper"])
    for u in awake:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=u, attributes={"timezone": "Asia/Dhaka"}))
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=[*awake, "sleeper"], rate_per_second={"email": 1000}))
    deadline = time.time() + 30
    while len(sink.arrived) < 3 and time.time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)
    got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
    assert (got.sent, got.pending, got.done) == (3, 1, False)
    assert sorted(r[0] for _, r, _ in sink.arrived) == [f"{u}@example.com" for u in awake]


async def test_an_item_removed_while_a_message_waits_is_not_in_it_when_it_goes(
        sink, campaigns, profiles, messaging, channel, demo_bundle):
    """A job composes ahead of its deliveries (and a deferred message waits for its send_at):
    an item removed from the catalog meanwhile (recalled, out of stock) must not go out in the
    messages still waiting; they are rendered again from their logged decision."""
    import re

    import numpy as np

    from protos.tailor.v1 import catalog_pb2 as capb
    from protos.tailor.v1 import catalog_pb2_grpc
    with np.load(demo_bundle / "items.npz") as npz:
        names, cats, pop = npz["category_names"], npz["category"], npz["popularity"]
        ids = npz["item_ids"]
    category = str(names[0])
    in_cat = np.flatnonzero(cats == 0)
    top = str(ids[in_cat[np.argmax(pop[in_cat])]])  # what a user without history is shown
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=(
        f'{{% for it in recommend(1, category="{category}") %}}'
        '<i data-item="{{ it.item_id }}"></i>{% endfor %}'))))
    users = ["w1", "w2", "w3"]
    await audience(profiles, users)
    # 0.5 a second: the three are composed at once, then go 2 s apart
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 0.5}))
    await asyncio.to_thread(sink.wait_for, 1)
    await catalog_pb2_grpc.CatalogServiceStub(channel).RemoveItems(
        capb.RemoveItemsRequest(item_ids=[top]))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.pending) == (3, 0)
    shown = [re.findall(r'data-item="([^"]+)"', m.get_body(("html",)).get_content())
             for m in sink.mails]
    assert shown[0] == [top]
    for items in shown[1:]:
        assert len(items) == 1 and items[0] != top


async def showing_the_top_item(campaigns, demo_bundle) -> str:
    """Campaign `mail`, whose email shows `recommend(1)` of the bundle's first category; the
    item it shows first, that category's most popular (`top`, to remove from the catalog)."""
    import numpy as np
    with np.load(demo_bundle / "items.npz") as npz:
        names, cats, pop, ids = (npz[k] for k in ("category_names", "category", "popularity",
                                                  "item_ids"))
    in_cat = np.flatnonzero(cats == 0)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=(
        f'{{% for it in recommend(1, category="{names[0]}") %}}'
        '<i data-item="{{ it.item_id }}"></i>{% endfor %}'))))
    return str(ids[in_cat[np.argmax(pop[in_cat])]])


async def test_a_recipient_erased_while_their_message_is_rendered_again_leaves_no_impression(
        sink, tailor_server, campaigns, profiles, messaging, channel, demo_bundle):
    """A message rendered again (an item it shows left the catalog) logged the items of the new
    render as impressions even when its recipient was erased during the render: the erasure had
    already deleted the user's impressions, and these, logged after it, stayed for good."""
    from protos.tailor.v1 import catalog_pb2 as capb
    from protos.tailor.v1 import catalog_pb2_grpc
    top = await showing_the_top_item(campaigns, demo_bundle)
    await audience(profiles, ["x1", "x2"])
    composer = tailor_server.composer
    render = composer.render_logged

    async def erased_meanwhile(campaign_id, user_id, choice):  # DeleteProfile mid-render
        out = await render(campaign_id, user_id, choice)
        if user_id == "x2":
            await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="x2"))
        return out

    composer.render_logged = erased_meanwhile
    try:
        started = await messaging.SendCampaign(mpb.SendCampaignRequest(  # x2 goes 2 s later
            campaign_id="mail", user_ids=["x1", "x2"], rate_per_second={"email": 0.5}))
        await asyncio.to_thread(sink.wait_for, 1)
        await catalog_pb2_grpc.CatalogServiceStub(channel).RemoveItems(
            capb.RemoveItemsRequest(item_ids=[top]))
        done = await until_done(messaging, started.send_id)
    finally:
        del composer.render_logged
    assert (done.sent, dict(done.suppressed_by_reason)) == (1, {"erased": 1})
    assert [r[0] for _, r, _ in sink.arrived] == ["x1@example.com"]
    assert await asyncio.to_thread(tailor_server.impressions.log.of_user, "x2") == []
    assert len(await asyncio.to_thread(tailor_server.impressions.log.of_user, "x1")) == 1


async def erased_while_delivered(sink, campaigns, profiles, messaging, user: str) -> None:
    """ComposeMessage with `deliver` for `user`, who is erased while the relay takes 2 s to
    accept the message (which it then does)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, [user])
    sink.delay_data = 2.0
    composing = asyncio.ensure_future(messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=True), timeout=30))
    await asyncio.to_thread(sink.wait_for, 1)  # the relay has it; its 250 comes in 2 s
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))
    assert (await composing).delivered


async def test_a_user_erased_while_their_message_is_delivered_leaves_no_impression(
        sink, tailor_server, campaigns, profiles, messaging):
    """ComposeMessage with `deliver` logs the message's items as impressions once it went,
    dated then: a DeleteProfile while the relay took its time had already deleted the user's
    impressions, and these, dated after it, were kept. They are dated when `recommend()`
    asked, so the impression log's write drops them (its tombstone check)."""
    await erased_while_delivered(sink, campaigns, profiles, messaging, "slow")
    assert await asyncio.to_thread(tailor_server.impressions.log.of_user, "slow") == []


async def test_a_user_erased_while_their_message_is_delivered_is_not_brought_back(
        sink, campaigns, profiles, messaging):
    """ComposeMessage with `deliver` records the message's `email_sent` event once the relay
    accepted it, dated then: after a DeleteProfile while the relay took its time, that event
    (newer than the erasure) built the erased user a new profile. It is dated when the message
    was handed over, so the ingestion refuses it as from before the erasure."""
    await erased_while_delivered(sink, campaigns, profiles, messaging, "slow2")
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="slow2"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND



def _started(pid: int) -> int:
    """When process `pid` started: proc(5), field 22 of /proc/<pid>/stat (after "(comm)")."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    return int(stat[stat.rindex(b")") + 2:].split()[19])


async def test_a_job_whose_owners_pid_went_to_another_process_resumes(
        sink, tailor_server, campaigns, profiles, messaging):
    """A job is resumed at the next start by a process once its owner is gone. Pids are reused
    (a container restarts its pid numbering; a dead worker's pid may now be another worker's
    writer process): a live process holding the owner's pid but started later is not the
    owner, and the job must not wait for it forever."""
    import json
    import os
    import subprocess

    from server.store.keys import send_job_key
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = ["p1", "p2", "p3"]
    await audience(profiles, users)
    sent = await messaging.SendCampaign(mpb.SendCampaignRequest(  # one now, the next in 100 s
        campaign_id="mail", user_ids=users, rate_per_second={"email": 0.01}))
    await asyncio.to_thread(sink.wait_for, 1)
    await tailor_server.sends.close()  # its owner is gone: the job is left unfinished
    later = subprocess.Popen(["sleep", "60"])  # a later process, given the owner's old pid
    try:
        def reused(txn):
            table = tailor_server.store.table("sends")
            job = json.loads(bytes(table.get(txn, send_job_key(sent.send_id))))
            assert job["owner"] == os.getpid() and not job["finished"]
            job["owner"] = later.pid
            if "owner_started" in job:  # the owner's start, earlier than the pid's new holder
                job["owner_started"] = _started(later.pid) - 1
            table.put(txn, send_job_key(sent.send_id), json.dumps(job).encode())
        tailor_server.store.write(reused)
        assert await tailor_server.sends.resume() == [sent.send_id]
        await asyncio.to_thread(sink.wait_for, 2)  # the resumed job's first token: at once
    finally:
        await tailor_server.sends.close()
        later.kill()
        later.wait()


async def test_an_archived_campaign_starts_no_send_but_a_repeat_gets_its_job(
        sink, campaigns, profiles, messaging):
    """Archived, a campaign takes no decision (ChooseVariant, ComposeMessage, PlanCampaign:
    FAILED_PRECONDITION); SendCampaign is refused alike instead of starting a job whose every
    recipient fails. A repeat of a request id whose job started before the archiving is
    still answered that job."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    users = ["ar0", "ar1"]
    await audience(profiles, users)
    first = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}, request_id="r1"))
    assert (await until_done(messaging, first.send_id)).sent == 2
    await campaigns.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id="mail"))
    again = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}, request_id="r1"))
    assert (again.send_id, again.sent, again.done) == (first.send_id, 2, True)
    for request_id in ("", "r2"):
        with pytest.raises(grpc.RpcError) as err:
            await messaging.SendCampaign(mpb.SendCampaignRequest(
                campaign_id="mail", user_ids=users, rate_per_second={"email": 1000},
                request_id=request_id))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, request_id
        assert "archived" in err.value.details()
    # a reuse of the id with another audience is still told apart from a repeat
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users[:1], rate_per_second={"email": 1000},
            request_id="r1"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "request_id" in err.value.details()
    await asyncio.sleep(0.2)
    assert len(sink.arrived) == 2


async def test_a_repeat_after_a_restart_with_other_default_rates_gets_its_job(settings, sink):
    """The request's terms are what it asked: a script run again with its request id after a
    deploy changed the server's default rates (`send_rate_per_second`) is answered the job it
    started (a refusal told it to use a new id, which would have sent everyone again)."""
    from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
    from tests.conftest import serving

    users = ["dr0", "dr1"]
    async with serving(settings) as (_, ch):
        await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
            cpb.CreateCampaignRequest(spec=email_spec()))
        await audience(profile_pb2_grpc.ProfileServiceStub(ch), users)
        messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
        first = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, request_id="nightly"))
        assert (await until_done(messaging, first.send_id)).sent == 2
    faster = settings.model_copy(update={"send_rate_per_second": {"email": 80.0}})
    async with serving(faster) as (_, ch):
        messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
        again = await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, request_id="nightly"))
        assert (again.send_id, again.sent) == (first.send_id, 2)
        with pytest.raises(grpc.RpcError) as err:  # what it asked changed: still refused
            await messaging.SendCampaign(mpb.SendCampaignRequest(
                campaign_id="mail", user_ids=users, request_id="nightly",
                rate_per_second={"email": 80.0}))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert len(sink.arrived) == 2


async def test_a_repeat_of_a_job_stored_with_the_default_rates_in_its_terms_gets_it(
        tailor_server, campaigns):
    """Jobs stored before the terms were of the rates asked hold them with the server's
    defaults filled in: a repeat asking the same still gets its job."""
    import os

    from server.campaigns.requests import unkeyed_digest
    from server.messages.jobs import _terms
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    sends, users = tailor_server.sends, ["lg0", "lg1"]
    send_id = "send-" + unkeyed_digest("ops", "mail", "", "old")[:16].decode()
    merged = dict(tailor_server.settings.send_rate_per_second)
    await asyncio.to_thread(sends.records.create, send_id, "mail", users, merged, {},
                            os.getpid(), _terms(users, merged, {}))
    await asyncio.to_thread(sends.records.finish, send_id)
    again = await sends.start("mail", users, {}, {}, request_id="old", caller="ops")
    assert again.send_id == send_id and again.finished_at > 0
    with pytest.raises(Exception) as err:  # another audience: refused
        await sends.start("mail", users[:1], {}, {}, request_id="old", caller="ops")
    assert "request_id" in str(err.value) and send_id in str(err.value)


async def test_a_job_stored_with_an_older_tailors_unkeyed_terms_keeps_its_repeats(settings):
    """A Tailor from before the keyed terms (0bc7e69 to ec4f7d6) kept the job's terms as a plain
    blake2b of the audience, rates (defaults filled in) and context. After the upgrade a repeat of
    its request id still gets the job (it was FAILED_PRECONDITION, whose advice sends everyone
    again), and the first open replaces that digest, which anyone holding the data dir could test
    a guessed audience against, by a keyed one."""
    import hashlib

    from protos.tailor.v1 import campaign_pb2_grpc
    from server.campaigns.requests import unkeyed_digest
    from server.messages.sends import SendRecords
    from server.security.secrets import Secrets
    from server.store import Store, keys
    from server.store.crypto import StoreCrypto
    from tests.conftest import serving

    async with serving(settings) as (_, ch):
        await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
            cpb.CreateCampaignRequest(spec=email_spec()))
    users, merged = ["ov0", "ov1"], dict(settings.send_rate_per_second)
    plain = hashlib.blake2b(digest_size=16, person=b"tailor-send")  # as 0bc7e69 wrote it
    plain.update("\x1f".join(users).encode())
    plain.update(json.dumps([sorted(merged.items()), []]).encode())
    send_id = "send-" + unkeyed_digest("ops", "mail", "", "old")[:16].decode()
    store = Store(settings.store_dir, sync=False,
                  crypto=StoreCrypto.from_secrets(Secrets.for_server(settings)))
    records = SendRecords(store)
    records.create(send_id, "mail", users, merged, {}, 1, plain.hexdigest())
    records.finish(send_id)
    store.put("meta", keys.layout_key("send_job"), b"1")
    store.close()
    async with serving(settings) as (server, _):
        raw = server.store.get("sends", keys.send_job_key(send_id))
        assert plain.hexdigest().encode() not in bytes(raw)
        again = await server.sends.start("mail", users, {}, {}, request_id="old", caller="ops")
        assert again.send_id == send_id and again.finished_at > 0
        with pytest.raises(Exception) as err:  # another audience: still refused
            await server.sends.start("mail", users[:1], {}, {}, request_id="old", caller="ops")
        assert "request_id" in str(err.value) and send_id in str(err.value)


async def test_a_campaign_stored_under_an_id_refused_since_starts_no_send(
        tailor_server, campaigns, profiles, messaging):
    """A campaign stored before C1, bidirectional and format characters were refused in ids
    can still be read and archived (GetCampaign takes its id), but takes no new decision
    (ChooseVariant, ComposeMessage: INVALID_ARGUMENT); SendCampaign started a job all the
    same, whose every recipient failed. Refused alike, with the reason, nothing started."""
    from dataclasses import replace

    from server.campaigns.spec import Campaign
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    repo, old = tailor_server.campaigns.repo, "mail\u200b"
    spec = replace((await asyncio.to_thread(repo.get, "mail")).spec, campaign_id=old)
    await asyncio.to_thread(repo.create, Campaign(spec, created_at=time.time(),
                                                  updated_at=time.time()), spec.new_state())
    await audience(profiles, ["rs0"])
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(
            campaign_id=old, user_ids=["rs0"], rate_per_second={"email": 1000}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("campaign_id: contains a format character (U+200B)")

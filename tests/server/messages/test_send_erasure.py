"""DeleteProfile during a running SendCampaign: the user's send records go at once (not when the
job ends), the job skips them, the counts still add up, and nothing is sent to or recorded for
them afterwards."""
import asyncio
import time

import pytest

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc
from server.messages.sends import READY
from server.store.keys import SEND_USER_PREFIX, send_user_key
from tests.conftest import free_port, serving, store_mentions

from .conftest import email_spec, keys_opened, relayed
from .test_send_campaign import audience, until_done

USERS = ["era-a", "era-b", "era-c", "era-d", "era-e"]


def ready(server, send_id: str, user: str) -> bool:
    """Whether `user`'s send record holds a composed message (records are sealed under the
    user's data key: read through `SendRecords`)."""
    return any(r.user == user and r.state == READY
               for r in server.sends.records.recipients(send_id))


@pytest.fixture
def sink():
    with SmtpSink(free_port(), hold_mail_at=1) as s:  # the second message stalls at MAIL FROM
        yield s


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, send_connections=1, send_compose_ahead=2)


async def test_deleting_a_recipient_mid_send_erases_their_records_and_skips_them(
        tailor_server, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, USERS)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=USERS, rate_per_second={"email": 1000}))
    assert await asyncio.to_thread(sink.holding.wait, 30), "the sink never reached the hold"
    # The others are composed (ready messages on disk) while delivery is held.
    deadline = time.time() + 10
    while (not all(ready(tailor_server, started.send_id, u) for u in ("era-d", "era-e"))
           and time.time() < deadline):
        await asyncio.sleep(0.05)
    assert all(ready(tailor_server, started.send_id, u) for u in ("era-d", "era-e"))
    for user in ("era-d", "era-e"):
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))
        assert not any(r.user == user for r in tailor_server.sends.records.recipients(
            started.send_id))  # gone now, while the job still runs
    got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
    assert dict(got.suppressed_by_reason) == {"erased": 2} and not got.done
    sink.release()
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.suppressed, done.pending) == (3, 2, 0)
    assert sorted(r[0] for _, r, _ in sink.arrived) == [f"{u}@example.com" for u in USERS[:3]]
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())]
    assert sorted(e.user_id for e in events if e.type == "email_sent") == USERS[:3]
    for user in ("era-d", "era-e"):
        assert store_mentions(tailor_server.store, user.encode()) == []


@pytest.mark.parametrize("encrypted", [True, False])
async def test_erasing_a_user_opens_only_their_send_records(settings, encrypted):
    """DeleteProfile found the user's records in unfinished SendCampaign jobs by opening
    (decrypting and decoding, twice) every recipient's record inside the erasure's write
    transaction: a job of 100,000 recipients held the lock, and every writer, 1.7 s per
    erasure for as long as the job ran. A sealed record starts with its user's token, and a plain
    one names the user in its JSON: only the user's own are opened."""
    async with serving(settings.model_copy(update={"encrypt_at_rest": encrypted})) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        records, store = server.sends.records, server.sends.records.store
        others = [f"other-{i}" for i in range(40)]
        await asyncio.to_thread(records.create, "job1", "mail", [*others[:20], "gone",
                                                                 *others[20:]], {}, {}, 1)
        with keys_opened(store) as opened:
            await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="gone"))
        assert [k for k in opened if k.startswith(SEND_USER_PREFIX)] == [
            send_user_key("job1", 20)]
        assert [r.user for r in records.recipients("job1")] == others
        assert records.job("job1")["suppressed"] == {"erased": 1}

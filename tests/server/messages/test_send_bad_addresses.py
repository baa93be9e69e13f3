"""SendCampaign with users whose `email` attribute SMTP cannot carry (not ASCII, a space, a line
break): each is settled failed `bad email address`, the others get their message, the job
finishes, and no address reaches the log. The space and the line break are stored as a Tailor
before UpsertAttributes checked addresses stored them (it refuses them now); the accented one,
an address the suppression list reads, is taken by UpsertAttributes still."""
import asyncio

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, opt_in, relayed, stored_attributes
from .test_send_campaign import audience, until_done

BAD = {"eai": "jos\u00e9@example.com", "space": "a b@example.com",
       "header": "x@example.com\nBcc: evil@example.org"}


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, send_connections=1)


async def test_bad_addresses_fail_alone_and_the_job_finishes(tailor_server, sink, campaigns,
                                                             profiles, messaging, caplog):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    good = ["g0", "g1", "g2"]
    await audience(profiles, good)
    for user, address in BAD.items():
        if user == "eai":
            await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=user, attributes={"email": address}))
        else:
            await stored_attributes(tailor_server, user, email=address)
        await opt_in(profiles, user)
    users = ["g0", "eai", "g1", "space", "header", "g2"]
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=users, rate_per_second={"email": 1000}))
    done = await until_done(messaging, started.send_id, timeout=15)
    assert (done.sent, dict(done.failed_by_reason), done.pending) == (
        3, {"bad email address": 3}, 0)
    assert sorted(r[0] for _, r, _ in sink.arrived) == [f"{u}@example.com" for u in good]
    for address in BAD.values():
        assert address.split("@")[0] not in caplog.text


async def test_a_lane_that_crashes_ends_the_job_with_its_error_instead_of_hanging(
        tailor_server, sink, campaigns, profiles, messaging, caplog, monkeypatch):
    def broken():  # a fault in the lane itself, outside any one record's delivery
        raise RuntimeError("secret@example.com")
    monkeypatch.setattr(tailor_server.delivery, "connection", broken)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["c0", "c1"])
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["c0", "c1"], rate_per_second={"email": 1000}))
    running = tailor_server.sends._running.get(started.send_id)
    if running is not None:  # gone already: its lane crashed before SendCampaign's answer came
        await asyncio.wait([running[1]], timeout=15)
        assert running[1].done(), "the job hangs"
    got = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id=started.send_id))
    assert not got.done and sink.arrived == []  # not finished: it resumes at the next start
    assert f"send {started.send_id} stopped: RuntimeError" in caplog.text
    assert "secret@" not in caplog.text

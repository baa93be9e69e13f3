"""A relay that refuses Tailor's login (535) refuses a SendCampaign as it starts, instead of
making every recipient a dead letter and a logged contact (a real aiosmtpd relay requiring AUTH
on loopback)."""
import asyncio
import subprocess

import grpc
import pytest

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from tests.conftest import free_port

from .conftest import email_spec, relayed
from .test_send_campaign import audience, until_done

LOGIN = ("tailor", "the-right-one")


@pytest.fixture
def sink():
    with SmtpSink(free_port(), login=LOGIN) as s:
        yield s


@pytest.fixture
def password(request):
    """The password the server logs in with: the relay's unless a test parametrizes it."""
    return getattr(request, "param", LOGIN[1])


@pytest.fixture
def settings(settings, sink, password):
    return relayed(settings, sink, smtp_username=LOGIN[0], smtp_password=password)


@pytest.mark.parametrize("password", [LOGIN[1], "a-stale-one"], indirect=True)
async def test_a_refused_login_starts_no_job(sink, settings, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    send = messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail", user_ids=["a", "b"]))
    if settings.smtp_password == LOGIN[1]:  # the relay takes the login: the job goes
        done = await until_done(messaging, (await send).send_id)
        assert (done.sent, done.failed) == (2, 0)
        assert len(sink.arrived) == 2
        return
    with pytest.raises(grpc.RpcError) as err:
        await send
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "refused Tailor's session (smtp 535)" in err.value.details()
    assert "smtp_password" in err.value.details()
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert list(letters.letters) == [] and sink.arrived == []
    stats = await campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="mail"))
    assert sum(v.decisions for v in stats.variants) == 0  # no contact logged for the caps to count


async def test_a_login_refused_since_the_shared_session_opened_starts_no_job(
        sink, settings, campaigns, profiles, messaging):
    """The relay changed Tailor's password (or revoked it) after a ComposeMessage opened the
    shared session, which stays logged in: a job's own connection logs in afresh and is
    refused 535, so the check must log in as the job will, not NOOP the open session."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b", "c"])
    sent = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="c", deliver=True))
    assert sent.delivered  # the shared session is open, logged in
    sink.controller.SMTP_kwargs["authenticator"].login = (b"tailor", b"rotated")
    with pytest.raises(grpc.RpcError) as err:
        await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                             user_ids=["a", "b"]))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION, err.value.details()
    assert "smtp 535" in err.value.details()
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert list(letters.letters) == [] and len(sink.arrived) == 1


async def test_a_relay_refusing_noop_still_takes_the_job(
        sink, settings, campaigns, profiles, messaging):
    """NOOP refused (502) says nothing of Tailor's login: the job starts and its mail goes
    (the check NOOPed the session and read the 502 as a refused login)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    sink.noop_reply = "502 5.5.1 NOOP not implemented"
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(campaign_id="mail",
                                                                   user_ids=["a", "b"]))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed) == (2, 0) and len(sink.arrived) == 2


async def test_a_repeat_of_a_started_job_is_answered_though_the_login_is_refused_since(
        sink, settings, campaigns, profiles, messaging):
    """A SendCampaign repeated under its request id (its answer lost) is answered its job's
    progress, not refused for a login the relay stopped taking after the job started."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a"])
    ask = mpb.SendCampaignRequest(campaign_id="mail", user_ids=["a"], request_id="r1")
    first = await messaging.SendCampaign(ask)
    await until_done(messaging, first.send_id)
    sink.controller.SMTP_kwargs["authenticator"].login = (b"tailor", b"rotated")
    again = await messaging.SendCampaign(ask)
    assert (again.send_id, again.sent) == (first.send_id, 1)


def gone_pid() -> int:
    """The pid of a process that has ended (and been reaped): a crashed job's owner."""
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


async def test_a_job_resumed_after_its_process_died_is_checked_as_a_new_one(
        sink, settings, tailor_server, campaigns, profiles, messaging):
    """A job whose process died is resumed at a start: a relay refusing Tailor's login since
    (a rotated password) leaves it pending for the next start, as it refuses a new job, instead
    of making its audience dead letters (before, the resume ran it unchecked); the next start
    with the login taken again sends it."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    sink.controller.SMTP_kwargs["authenticator"].login = (b"tailor", b"rotated")
    await asyncio.to_thread(tailor_server.sends.records.create, "send-orphan", "mail", ["a", "b"],
                            dict(settings.send_rate_per_second), {}, gone_pid())
    assert await tailor_server.sends.resume() == []
    left = await messaging.GetSendProgress(mpb.GetSendProgressRequest(send_id="send-orphan"))
    assert (left.total, left.sent, left.pending, left.done) == (2, 0, 2, False)
    letters = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=50))
    assert list(letters.letters) == [] and sink.arrived == []
    sink.controller.SMTP_kwargs["authenticator"].login = tuple(s.encode() for s in LOGIN)
    assert await tailor_server.sends.resume() == ["send-orphan"]
    done = await until_done(messaging, "send-orphan")
    assert (done.sent, done.failed) == (2, 0) and len(sink.arrived) == 2


async def test_a_cancelled_job_whose_process_died_is_settled_at_a_resume_the_relay_refuses(
        sink, settings, tailor_server, campaigns, profiles, messaging):
    """A job cancelled before its process died (CancelSend from another process, or its
    bounce breaker tripped, then a crash) sends nothing when resumed: it only settles its
    recipients. A relay refusing Tailor's login is no reason to leave it pending; before, the
    resume held it back with the jobs that would mail (`pending` 2, `done` false, until the
    next start or another CancelSend)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["a", "b"])
    sink.controller.SMTP_kwargs["authenticator"].login = (b"tailor", b"rotated")
    records = tailor_server.sends.records
    await asyncio.to_thread(records.create, "send-cancelled", "mail", ["a", "b"],
                            dict(settings.send_rate_per_second), {}, gone_pid())
    await asyncio.to_thread(records.cancel, "send-cancelled")
    assert await tailor_server.sends.resume() == ["send-cancelled"]
    done = await until_done(messaging, "send-cancelled")
    assert (done.total, done.sent, done.pending, done.suppressed) == (2, 0, 0, 2)
    assert sink.arrived == []

"""A server's stop waits for the work its background passes have under way in a thread (a sweep
between two of its transactions) before the store closes: nothing fails after the stop
(`server.background`)."""
import asyncio
import logging
import threading
import time

import pytest

from server.app import TailorServer
from server.background import Background
from server.campaigns.repository import CampaignRepository
from server.profiles.repository import ProfileRepository
from tests.conftest import server_settings


def _slowed(monkeypatch, cls, name: str, started: threading.Event, ended: list) -> None:
    """`cls.name` runs in its pass's thread after a 1 s pause (a slow read), then for real."""
    real = getattr(cls, name)

    def slow(repo, *args, **kw):
        started.set()
        time.sleep(1.0)
        try:
            ended.append(real(repo, *args, **kw))
        except Exception as err:  # the store closed under it
            ended.append(repr(err))
        return ended[-1]
    monkeypatch.setattr(cls, name, slow)


@pytest.mark.parametrize("cls, name", [(ProfileRepository, "drop_events_before"),
                                       (CampaignRepository, "sweep")],
                         ids=["retention sweep", "reward window sweep"])
async def test_stop_waits_for_a_sweep_under_way_in_its_thread(cls, name, tmp_path, demo_bundle,
                                                              monkeypatch):
    started, ended = threading.Event(), []
    _slowed(monkeypatch, cls, name, started, ended)
    monkeypatch.setattr(CampaignRepository, "has_due", lambda repo, now: True)
    server = TailorServer(server_settings(tmp_path, demo_bundle))
    await server.start()  # both sweeps' first passes start at once
    assert await asyncio.to_thread(started.wait, 20), "the sweep never started"
    await server.stop(grace=0.1)
    assert ended == [0]  # the sweep ran to its end (nothing to drop), before the store closed


async def test_a_failed_pass_is_logged_and_the_next_runs(caplog):
    runs = []

    async def one_pass():
        runs.append(len(runs))
        if len(runs) == 1:
            raise ValueError("first")
    background = Background()
    background.every(0.01, one_pass, "the pass failed")
    while len(runs) < 3:
        await asyncio.sleep(0.01)
    await background.stop()
    assert [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR] == ["the pass failed"]
    assert not background._passes


async def test_a_pass_that_holds_nothing_is_cancelled_by_the_stop_and_one_that_holds_is_awaited():
    """The loop-lag timer (`metrics.measure_loop_lag`, a 0.25 s sleep always pending) held up
    every stop, of every server and worker, until it ran out; a pass that holds what a stop
    closes is still waited for."""
    loop, ended = asyncio.get_running_loop(), []

    async def timer():
        await asyncio.sleep(5)
        ended.append("timer")

    async def holding():
        await asyncio.to_thread(time.sleep, 0.3)
        ended.append("holding")
    for holds, one_pass in ((False, timer), (True, holding)):
        background = Background()
        background.every(0, one_pass, "the pass failed", holds=holds)
        await asyncio.sleep(0.05)  # the pass under way
        began = loop.time()
        await background.stop()
        assert (loop.time() - began < 1.0) if not holds else ended == ["holding"]
    assert "timer" not in ended


async def test_a_long_pass_under_way_does_not_hold_up_the_drain_of_calls(tmp_path, demo_bundle,
                                                                          monkeypatch):
    """The gRPC port drains (new calls refused) while the pass still runs; the stop returns once
    the pass has ended."""
    import grpc

    from protos.tailor.v1 import diagnostics_pb2 as dpb
    from protos.tailor.v1 import diagnostics_pb2_grpc
    started, ended = threading.Event(), []
    _slowed(monkeypatch, ProfileRepository, "drop_events_before", started, ended)
    server = TailorServer(server_settings(tmp_path, demo_bundle))
    await server.start()
    assert await asyncio.to_thread(started.wait, 20), "the sweep never started"
    stopping = asyncio.ensure_future(server.stop(grace=0.1))
    await asyncio.sleep(0.5)  # the sweep sleeps 1 s in its thread
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await diagnostics_pb2_grpc.DiagnosticsServiceStub(ch).Ping(dpb.PingRequest(), timeout=2)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert ended == [] and not stopping.done()
    await stopping
    assert ended == [0]


async def test_a_send_job_starts_no_message_while_the_stop_waits_for_a_pass(tmp_path, demo_bundle,
                                                                            monkeypatch):
    """A SendCampaign job went on sending (8 messages in 1.5 s at 5/s) while the stop waited for
    a retention sweep under way, which a large store's can take past a service manager's kill
    (a message then inside an SMTP transaction goes again when the job resumes); the jobs stop
    before the stop waits for the passes: what was being handed over settles, nothing starts."""
    from loadtests.smtp_sink import SmtpSink
    from protos.tailor.v1 import campaign_pb2 as cpb
    from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
    from protos.tailor.v1 import messaging_pb2 as mpb
    from protos.tailor.v1 import profile_pb2 as ppb
    from tests.conftest import free_port, serving
    from tests.server.messages.conftest import email_spec, relayed
    sweeping, release = threading.Event(), threading.Event()
    real = ProfileRepository.drop_events_before

    def held(repo, *args, **kw):  # a sweep over a large store: still going when the stop comes
        sweeping.set()
        release.wait(30)
        return real(repo, *args, **kw)
    monkeypatch.setattr(ProfileRepository, "drop_events_before", held)
    with SmtpSink(free_port()) as sink:
        settings = relayed(server_settings(tmp_path, demo_bundle), sink,  # links need the port
                           public_http_port=free_port())
        async with serving(settings) as (server, ch):
            assert await asyncio.to_thread(sweeping.wait, 20), "the sweep never started"
            profiles = profile_pb2_grpc.ProfileServiceStub(ch)
            users = [f"s{i}" for i in range(40)]
            for u in users:
                await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                    user_id=u, attributes={"email": f"{u}@example.com"}))
                await profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email",
                                                                opted_in=True, source="signup"))
            await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
                cpb.CreateCampaignRequest(spec=email_spec()))
            messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
            await messaging.SendCampaign(mpb.SendCampaignRequest(
                campaign_id="mail", user_ids=users, rate_per_second={"email": 5}))
            while len(sink.arrived) < 2:
                await asyncio.sleep(0.05)
            stopping = asyncio.ensure_future(server.stop(grace=0.1))
            await asyncio.sleep(0.5)  # the calls drained; the stop waits for the sweep
            stopped_at = len(sink.arrived)
            await asyncio.sleep(1.5)
            assert not stopping.done()
            assert len(sink.arrived) == stopped_at  # no message started while it waited
            release.set()
            await stopping
        assert len(sink.arrived) < len(users)  # the rest waits for the next start


async def test_a_stop_ends_a_retention_pass_after_its_write_under_way(tmp_path, demo_bundle,
                                                                      monkeypatch):
    """A stop waited for a retention pass to run, and rest between its writes, to its end: with
    300,000 expired events, 5.2-9.9 s from SIGTERM to exit (0.4-3.0 s without the rests), and
    a large store's pass past a service manager's grace (deploy/: 15 s, 40 s). The pass now ends
    after the write under way; what it left goes at the next pass."""
    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc
    from tests.conftest import serving
    writing, writes = threading.Event(), []
    real = ProfileRepository._drop_keys

    def slow(repo, txn, doomed):  # a write of 1,000 events on a loaded box
        writing.set()
        time.sleep(0.2)
        writes.append(len(doomed))
        return real(repo, txn, doomed)
    later = time.time() + 400 * 86400.0  # every event expired (retention 365 days)
    async with serving(server_settings(tmp_path, demo_bundle)) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        for b in range(4):
            await profiles.TrackEvents(ppb.TrackEventsRequest(events=[
                ppb.Event(event_id=f"e{b}-{i}", user_id=f"u{i % 50}", type="view",
                          item_id=f"i{i % 97}", timestamp=time.time() - 60) for i in range(5000)]))
        monkeypatch.setattr(ProfileRepository, "_drop_keys", slow)
        passing = asyncio.ensure_future(server.background.run(server.sweep_retention(later)))
        assert await asyncio.to_thread(writing.wait, 20), "the pass never wrote"
        began = time.monotonic()
        await server.stop(grace=0.1)
        took = time.monotonic() - began
        dropped = (await passing)["events"]
    assert took < 4.0, took  # 20 writes of 0.2 s and their rests: 8 s to its end
    assert 0 < dropped == sum(writes) < 20_000 and len(writes) <= 3
    monkeypatch.undo()
    async with serving(server_settings(tmp_path, demo_bundle)) as (server, ch):
        assert (await server.sweep_retention(later))["events"] == 20_000 - dropped

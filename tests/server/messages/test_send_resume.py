"""SendCampaign in `python -m server`, killed with SIGKILL half-way and restarted on the same data
dir: every recipient is reached, and nothing that arrived is sent again when the kill falls
between messages; inside an SMTP transaction, the one message in flight arrives twice with one
Message-ID (what a receiver can drop)."""
import time
from collections import Counter

import grpc
import lmdb

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.store import TABLES
from server.store.keys import INDEX_PREFIX
from tests.conftest import free_port

from .conftest import email_spec

USERS = [f"k{i:02d}" for i in range(12)]
ARRIVED_BEFORE_KILL = 5


def server_env(tmp_path, sink_port: int) -> dict:
    return {"TAILOR_SMTP_HOST": "127.0.0.1", "TAILOR_SMTP_PORT": str(sink_port),
            "TAILOR_SMTP_SECURITY": "none", "TAILOR_PUBLIC_URL": "http://127.0.0.1:9",
            "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}


def start_send(target: str, users=USERS, rate: float = 200, capped: bool = False) -> str:
    """An email campaign sent to `users` (opted in, with addresses); `capped`: with a frequency
    cap of one email a day."""
    with grpc.insecure_channel(target) as ch:
        spec = email_spec()
        if capped:
            spec.frequency_caps.append(cpb.FrequencyCap(channel="email", max=1, window_seconds=86400))
        campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        for u in users:
            profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=u, attributes={"email": f"{u}@example.com"}))
            profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email", opted_in=True,
                                                      source="signup"))
        return messaging_pb2_grpc.MessagingServiceStub(ch).SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, rate_per_second={"email": rate})).send_id


def progress(target: str, send_id: str) -> mpb.SendProgress:
    with grpc.insecure_channel(target) as ch:
        return messaging_pb2_grpc.MessagingServiceStub(ch).GetSendProgress(
            mpb.GetSendProgressRequest(send_id=send_id), timeout=10)


def until_done(target: str, send_id: str, timeout: float = 60.0) -> mpb.SendProgress:
    deadline = time.time() + timeout
    while time.time() < deadline:
        got = progress(target, send_id)
        if got.done:
            return got
        time.sleep(0.1)
    raise AssertionError(f"not done: {got}")


def kill_and_resume(server_process, tmp_path, demo_bundle, connections: int,
                    **hold) -> tuple[SmtpSink, list]:
    data = tmp_path / "data"
    with SmtpSink(free_port(), **hold) as sink:
        env = {**server_env(tmp_path, sink.controller.port),
               "TAILOR_SEND_CONNECTIONS": str(connections)}
        server = server_process(data, bundle=demo_bundle, env=env)
        send_id = start_send(server.target)
        assert sink.holding.wait(60), "the sink never reached the hold"
        time.sleep(0.5)  # the other connections reach the hold too
        before = progress(server.target, send_id)
        arrived = len(sink.arrived)
        server.kill()
        sink.release()
        restarted = server_process(data, env=env)
        done = until_done(restarted.target, send_id)
        assert (done.sent, done.failed, done.suppressed, done.pending) == (len(USERS), 0, 0, 0)
        return sink, [before, arrived]


def test_a_kill_between_messages_resends_nothing_that_arrived(server_process, tmp_path,
                                                              demo_bundle):
    sink, (before, arrived) = kill_and_resume(server_process, tmp_path, demo_bundle, 4,
                                              hold_mail_at=ARRIVED_BEFORE_KILL)
    assert before.sent == arrived >= ARRIVED_BEFORE_KILL  # settled before the next transaction
    assert arrived < len(USERS)
    assert sorted(r[0] for _, r, _ in sink.arrived) == [f"{u}@example.com" for u in USERS]
    assert len(sink.message_ids) == len(USERS) == len(set(sink.message_ids))


def test_a_kill_inside_a_transaction_resends_that_message_with_its_message_id(
        server_process, tmp_path, demo_bundle):
    # one connection, so nothing else is in flight while the held transaction waits
    sink, (before, arrived) = kill_and_resume(server_process, tmp_path, demo_bundle, 1,
                                              hold_data_at=ARRIVED_BEFORE_KILL)
    assert before.sent == arrived - 1  # the held one was kept, but not answered
    assert sorted({r[0] for _, r, _ in sink.arrived}) == [f"{u}@example.com" for u in USERS]
    twice = [m for m, n in Counter(sink.message_ids).items() if n > 1]
    assert len(sink.message_ids) == len(USERS) + 1 and len(twice) == 1
    assert sink.message_ids.index(twice[0]) == ARRIVED_BEFORE_KILL  # the one in flight



CAPPED_USERS = [f"c{i:03d}" for i in range(400)]


def logged_decisions(target: str) -> list:
    """The campaign's decision records (suppressed ones included)."""
    with grpc.insecure_channel(target) as ch:
        return list(campaign_pb2_grpc.CampaignServiceStub(ch).ExportDecisions(
            cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True,
                                       include_suppressed=True), timeout=10))


def until_decisions_logged(data, timeout: float = 30.0) -> None:
    """Wait until the store holds a decision (read from the data dir: the server's event loop,
    busy rendering the batch, would answer an RPC only once the batch is done)."""
    env = lmdb.open(str(data / "store"), readonly=True, max_dbs=len(TABLES) + 4)
    try:
        decisions, deadline = env.open_db(b"decisions"), time.time() + timeout
        while True:
            with env.begin(db=decisions) as txn:
                cursor = txn.cursor()
                if cursor.set_range(INDEX_PREFIX) and cursor.key().startswith(INDEX_PREFIX):
                    return
            assert time.time() < deadline, "no decision was logged"
            time.sleep(0.005)
    finally:
        env.close()


def test_a_kill_after_decisions_were_logged_reuses_them_rather_than_meet_the_cap(
        server_process, tmp_path, demo_bundle):
    """All the audience is one batch (`send_compose_ahead` 1024): the kill comes once its first
    decisions are logged, while the batch renders, before any record says `ready`. The resumed
    job renders the logged decisions; deciding again would meet the cap of one a day that the
    first decisions filled, and those users would get nothing (`frequency_cap`)."""
    data = tmp_path / "data"
    with SmtpSink(free_port(), keep_mails=False) as sink:
        env = {**server_env(tmp_path, sink.controller.port), "TAILOR_SEND_COMPOSE_AHEAD": "1024"}
        server = server_process(data, bundle=demo_bundle, env=env)
        send_id = start_send(server.target, CAPPED_USERS, rate=1000, capped=True)
        until_decisions_logged(data)
        server.kill()
        assert not sink.arrived  # nothing composed was written yet (nothing could go)
        restarted = server_process(data, env=env)
        done = until_done(restarted.target, send_id)
        assert (done.sent, dict(done.suppressed_by_reason), done.failed) == (len(CAPPED_USERS), {}, 0)
        assert sorted(r[0] for _, r, _ in sink.arrived) == [f"{u}@example.com"
                                                            for u in CAPPED_USERS]
        logged = logged_decisions(restarted.target)  # one each, none suppressed
        assert sorted(d.user_id for d in logged) == CAPPED_USERS
        assert {d.status for d in logged} == {"pending"}



async def test_a_stop_while_a_message_is_handed_over_does_not_send_it_twice(settings, sink):
    """Stopping the server (a deploy's SIGTERM) cancelled the send jobs at once, a lane inside
    its SMTP transaction included: the relay had the message, its record still said `ready`,
    and the resumed job sent it again. A stop lets the messages being handed over finish and
    settle (at most the relay's timeout), and starts no new one."""
    import asyncio

    from server.app import TailorServer

    from .conftest import relayed
    from .test_send_campaign import audience, until_done
    settings = relayed(settings, sink, send_connections=1)
    first = TailorServer(settings)
    await first.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{first.port}") as ch:
            profiles = profile_pb2_grpc.ProfileServiceStub(ch)
            messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
            await campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
                cpb.CreateCampaignRequest(spec=email_spec()))
            await audience(profiles, ["h1", "h2"])
            sink.delay_data = 1.5  # the relay answers DATA late
            started = await messaging.SendCampaign(mpb.SendCampaignRequest(  # h2 2 s later
                campaign_id="mail", user_ids=["h1", "h2"], rate_per_second={"email": 0.5}))
            await asyncio.to_thread(sink.wait_for, 1)  # h1 arrived; its 250 is pending
    finally:
        await first.stop(grace=0.1)
    sink.delay_data = 0.0
    second = TailorServer(settings)  # the restart: the job resumes
    await second.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{second.port}") as ch:
            done = await until_done(messaging_pb2_grpc.MessagingServiceStub(ch), started.send_id)
    finally:
        await second.stop(grace=0.1)
    assert (done.sent, done.pending) == (2, 0)
    assert sorted(r[0] for _, r, _ in sink.arrived) == ["h1@example.com", "h2@example.com"]

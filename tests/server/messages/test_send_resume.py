"""SendCampaign in `python -m server`, killed with SIGKILL half-way and restarted on the same data
dir: every recipient is reached, and nothing that arrived is sent again when the kill falls
between messages; inside an SMTP transaction, the one message in flight arrives twice with one
Message-ID (what a receiver can drop)."""
import time
from collections import Counter

import grpc

from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port

from .conftest import email_spec

USERS = [f"k{i:02d}" for i in range(12)]
ARRIVED_BEFORE_KILL = 5


def server_env(tmp_path, sink_port: int) -> dict:
    return {"TAILOR_SMTP_HOST": "127.0.0.1", "TAILOR_SMTP_PORT": str(sink_port),
            "TAILOR_SMTP_SECURITY": "none", "TAILOR_PUBLIC_URL": "http://127.0.0.1:9",
            "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}


def start_send(target: str) -> str:
    with grpc.insecure_channel(target) as ch:
        campaign_pb2_grpc.CampaignServiceStub(ch).CreateCampaign(
            cpb.CreateCampaignRequest(spec=email_spec()))
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        for u in USERS:
            profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=u, attributes={"email": f"{u}@example.com"}))
            profiles.SetConsent(ppb.SetConsentRequest(user_id=u, channel="email", opted_in=True,
                                                      source="signup"))
        return messaging_pb2_grpc.MessagingServiceStub(ch).SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=USERS, rate_per_second={"email": 200})).send_id


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


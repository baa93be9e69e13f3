"""SendCampaign's `request_id` (an idempotency key): repeats of one request, concurrent and
across two worker processes, start one job and send each message once; the id with another
audience is FAILED_PRECONDITION; without an id every call is a job of its own; the Python
client and the CLI send one."""
import json
import subprocess
import sys
import threading
from collections import Counter

import grpc

from clients.client import TailorClient
from loadtests.smtp_sink import SmtpSink
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import messaging_pb2_grpc
from tests.conftest import free_port

from .test_send_resume import USERS, server_env, start_send, until_done


def _send(target: str, request_id: str, users=USERS) -> mpb.SendProgress:
    # a channel of its own: the kernel spreads connections over the workers
    with grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)]) as ch:
        return messaging_pb2_grpc.MessagingServiceStub(ch).SendCampaign(mpb.SendCampaignRequest(
            campaign_id="mail", user_ids=users, rate_per_second={"email": 200},
            request_id=request_id), timeout=30)


def test_repeats_of_a_request_id_start_one_job_across_two_workers(server_process, tmp_path,
                                                                   demo_bundle):
    with SmtpSink(free_port()) as sink:
        server = server_process(tmp_path / "data", workers=2, bundle=demo_bundle,
                                env=server_env(tmp_path, sink.controller.port))
        first_job = start_send(server.target)  # campaign, profiles; a job without an id
        until_done(server.target, first_job)
        answers, start = [], threading.Barrier(8)

        def repeat() -> None:
            start.wait(timeout=30)
            answers.append(_send(server.target, "send-once"))
        threads = [threading.Thread(target=repeat) for _ in range(8)]
        [t.start() for t in threads]
        [t.join(timeout=60) for t in threads]
        assert len(answers) == 8 and len({a.send_id for a in answers}) == 1
        send_id = answers[0].send_id
        assert send_id != first_job and all(a.total == len(USERS) for a in answers)
        done = until_done(server.target, send_id)
        assert (done.sent, done.pending) == (len(USERS), 0)
        # the first job and this one sent each user one message each
        counts = Counter(r[0] for _, r, _ in sink.arrived)
        assert counts == Counter({f"{u}@example.com": 2 for u in USERS})
        # after the job ended too: its progress, nothing sent
        assert _send(server.target, "send-once").send_id == send_id
        # the id with another audience: refused, saying why
        try:
            _send(server.target, "send-once", users=USERS[:3])
            raise AssertionError("a reused request_id with another audience was accepted")
        except grpc.RpcError as err:
            assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "request_id" in err.details() and send_id in err.details()
        # another id is another job
        other = _send(server.target, "send-twice", users=USERS[:2])
        assert other.send_id != send_id and until_done(server.target, other.send_id).sent == 2


def test_the_client_and_the_cli_send_an_id(server_process, tmp_path, demo_bundle):
    with SmtpSink(free_port()) as sink:
        server = server_process(tmp_path / "data", bundle=demo_bundle,
                                env=server_env(tmp_path, sink.controller.port))
        start_send(server.target, users=USERS[:1])
        with TailorClient(server.target) as client:
            # no id given: a new one a call, so two calls are two jobs
            a = client.send_campaign("mail", USERS[:2])
            b = client.send_campaign("mail", USERS[:2])
            assert a.send_id != b.send_id
            again = client.send_campaign("mail", USERS[:2], request_id="nightly-1")
            assert client.send_campaign("mail", USERS[:2], request_id="nightly-1").send_id == \
                again.send_id
        users = tmp_path / "users.txt"
        users.write_text("\n".join(USERS[:2]) + "\n")
        cli = [sys.executable, "-m", "clients", "campaign", "send", "--campaign", "mail",
               "--users", str(users), "--request-id", "nightly-2", "--server", server.target]
        outs = [json.loads(subprocess.run(cli, check=True, capture_output=True, text=True,
                                          timeout=60).stdout) for _ in range(2)]
        assert outs[0]["send_id"] == outs[1]["send_id"] not in (a.send_id, again.send_id)


def test_the_stored_terms_are_keyed_so_no_guessed_id_can_be_tested_against_them():
    """The job record keeps a digest of its audience after the users' erasure: under another
    store-id key the same audience gives another digest, so only the key's holder could test a
    guessed id (an email address used as an id) against a stored job."""
    from server.messages.jobs import _terms
    from server.store import tokens
    installed = tokens._key
    try:
        tokens.use_key(b"k" * 32)
        one = _terms(["ann@example.com", "bob"], {"email": 5.0}, {})
        assert one == _terms(["ann@example.com", "bob"], {"email": 5.0}, {})
        assert one != _terms(["ann@example.com", "bo"], {"email": 5.0}, {})
        assert one != _terms(["bob", "ann@example.com"], {"email": 5.0}, {})  # order counts
        tokens.use_key(b"j" * 32)
        assert _terms(["ann@example.com", "bob"], {"email": 5.0}, {}) != one
    finally:
        tokens.use_key(installed)

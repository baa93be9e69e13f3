"""The last mile from the Python client and the CLI: set a user's address, compose a message
and hand it to the relay (ComposeMessage `deliver`), or have it scheduled past quiet hours."""
import asyncio
import json
import re
import time

import pytest_asyncio

from clients import TailorClient
from loadtests.smtp_sink import SmtpSink
from tests.clients.test_typed_results import _quiet_now
from tests.conftest import free_port, run_module

TEXT = "Sale. Unsubscribe: {{ unsubscribe_url }}"


@pytest_asyncio.fixture
async def relayed(tmp_path):
    """(target, sink): an in-process server (no fsync) sending email to an SMTP sink."""
    from server.app import TailorServer
    from server.config import Settings
    with SmtpSink(free_port()) as sink:
        server = TailorServer(Settings(
            port=0, data_dir=tmp_path / "data", lmdb_sync=False, secrets_dir=tmp_path / "secrets",
            smtp_host="127.0.0.1", smtp_port=sink.controller.port, smtp_security="none",
            public_url="http://127.0.0.1:9"))
        port = await server.start()
        yield f"127.0.0.1:{port}", sink
        await server.stop(grace=0.5)


def cli(target: str, *args: str) -> dict:
    return json.loads(run_module("clients", *args, "--server", target).stdout)


def last_mile(target: str) -> tuple:
    """A user set up and mailed through the CLI, another through the client (in quiet hours)."""
    with TailorClient(target, timeout=10) as client:
        for cid, quiet in (("now", {}), ("later", _quiet_now())):
            client.create_campaign({"campaign_id": cid, "channel": "email", "policy": "fixed",
                                    "quiet_hours": quiet, "variants": [{"id": "a", "content": {
                                        "subject": "Hi {{ first_name }}", "text": TEXT}}]})
        set_up = cli(target, "attributes", "--user", "ann", "--set", "email=ann@example.org",
                     "--set", "first_name=Ann", "--set", "timezone=UTC")
        client.set_consent("ann", "email", True, "form")
        sent = cli(target, "message", "compose", "--campaign", "now", "--user", "ann", "--deliver")
        scheduled = client.compose_message("later", "ann", deliver=True)
        unset = cli(target, "attributes", "--user", "ann", "--set", "first_name=")
    return set_up, sent, scheduled, unset


async def test_a_message_goes_from_the_client_and_the_cli(relayed):
    """ComposeMessage's `deliver` was in neither the client nor the CLI (`compose_message` took
    no such argument, `message compose` no such flag, and the client's Message dropped
    `scheduled` and `send_id`), nor could the CLI set the email address it goes to
    (UpsertAttributes): an integrator had to write raw gRPC for the one call that sends."""
    target, sink = relayed
    set_up, sent, scheduled, unset = await asyncio.to_thread(last_mile, target)
    assert set_up["user_id"] == "ann" and set_up["attributes"]["timezone"] == "UTC"
    assert set_up["attributes"]["email"] != "ann@example.org"  # masked: no pii-reader
    assert sent["delivered"] is True and sent["channel"] == "email"
    await asyncio.to_thread(sink.wait_for, 1, 10)
    (mail,) = sink.mails
    assert mail["To"] == "ann@example.org" and mail["Subject"] == "Hi Ann"
    assert mail["Message-ID"] == f"<{sent['decision_id']}@tailor.invalid>"
    assert (scheduled.scheduled, scheduled.delivered) == (True, False)
    assert scheduled.send_id == f"send-{scheduled.decision_id}"
    assert scheduled.send_at > time.time() + 1800
    assert "first_name" not in unset["attributes"]  # an empty value deletes the key


def lost_then_repeated(target: str, port: int) -> tuple:
    """`message compose --deliver` whose answer is lost, then the command its error names."""
    from tests.clients.proxy import LosingProxy
    with TailorClient(target, timeout=10) as client:
        client.create_campaign({"campaign_id": "now", "channel": "email", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"subject": "Hi", "text": TEXT}}]})
        client.upsert_attributes("bob", {"email": "bob@example.org"})
        client.set_consent("bob", "email", True, "form")
    proxy = LosingProxy(port)
    try:
        proxy.lose_next(100)  # every attempt the channel makes
        lost = run_module("clients", "message", "compose", "--campaign", "now", "--user", "bob",
                          "--deliver", "--server", proxy.target, check=False)
    finally:
        proxy.close()
    found = re.search(r"again with --request-id (\S+) ", lost.stderr)
    again = found and cli(target, "message", "compose", "--campaign", "now", "--user", "bob",
                          "--deliver", "--request-id", found[1])
    return lost, again


async def test_a_delivery_whose_answer_was_lost_names_the_request_id_that_repeats_it(relayed):
    """The message went, its answer was lost: the line said UNAVAILABLE alone, and the natural
    repeat (a new request id) would mail the user a second time."""
    target, sink = relayed
    lost, again = await asyncio.to_thread(lost_then_repeated, target, int(target.split(":")[1]))
    line = lost.stderr.strip()
    assert lost.returncode == 1 and line.startswith("error: UNAVAILABLE: ") and again, line
    assert "the message may have been sent" in line and len(line.splitlines()) == 1
    assert again["delivered"] is True
    await asyncio.to_thread(sink.wait_for, 1, 10)
    time.sleep(0.5)  # a second message, had the repeat sent one, would be here by now
    assert [rcpt for _, rcpt, _ in sink.arrived] == [["bob@example.org"]]


async def test_the_asyncio_client_delivers_too(relayed):
    """`AsyncTailorClient`, the twin "for the hot calls", had no compose_message: an asyncio
    sender could not compose (the mixed load test's ComposeMessage) nor deliver."""
    from clients.aio import AsyncTailorClient
    target, sink = relayed
    with TailorClient(target, timeout=10) as client:  # the server is on this loop: a thread
        await asyncio.to_thread(client.create_campaign, {
            "campaign_id": "now", "channel": "email", "policy": "fixed",
            "variants": [{"id": "a", "content": {"subject": "Hi", "text": TEXT}}]})
        await asyncio.to_thread(client.upsert_attributes, "cy", {"email": "cy@example.org"})
        await asyncio.to_thread(client.set_consent, "cy", "email", True, "form")
    async with AsyncTailorClient(target, timeout=10) as client:
        sent = await client.compose_message("now", "cy", deliver=True)
        again = await client.compose_message("now", "cy", deliver=True, request_id="r1")
        repeated = await client.compose_message("now", "cy", deliver=True, request_id="r1")
    assert sent.delivered and again.delivered and repeated.decision_id == again.decision_id
    await asyncio.to_thread(sink.wait_for, 2, 10)
    assert sorted(m["Message-ID"] for m in sink.mails) == sorted(
        f"<{m.decision_id}@tailor.invalid>" for m in (sent, again))


def slow_relay(target: str, sink) -> tuple:
    """A deliver from the CLI and each client, with no deadline given, through a relay slower
    to accept a message than the CLI's (5 s) and the clients' (2 s) default deadlines."""
    from clients.aio import AsyncTailorClient
    with TailorClient(target, timeout=10) as client:
        client.create_campaign({"campaign_id": "now", "channel": "email", "policy": "fixed",
                                "variants": [{"id": "a", "content": {"subject": "Hi", "text": TEXT}}]})
        for user in ("di", "ed", "fa"):
            client.upsert_attributes(user, {"email": f"{user}@example.org"})
            client.set_consent(user, "email", True, "form")
    sink.delay_data = 5.5
    by_cli = run_module("clients", "message", "compose", "--campaign", "now", "--user", "di",
                        "--deliver", "--server", target, check=False)
    sink.delay_data = 2.5
    with TailorClient(target) as client:
        by_client = client.compose_message("now", "ed", deliver=True)

    async def by_aio():
        async with AsyncTailorClient(target) as client:
            return await client.compose_message("now", "fa", deliver=True)
    return by_cli, by_client, asyncio.run(by_aio())


async def test_a_deliver_waits_for_a_slow_relay_by_default(relayed):
    """A deliver is answered once the relay took the message (4 attempts of up to 10 s each on
    a server's defaults), but went with the default deadline of every call (the CLI's 5 s,
    the clients' 2 s): a relay slower than that had the call cut mid-send, and the repeat its
    error named was answered that whether the message went is not known (it had arrived)."""
    target, sink = relayed
    by_cli, by_client, by_aio = await asyncio.to_thread(slow_relay, target, sink)
    assert by_cli.returncode == 0, by_cli.stderr
    assert json.loads(by_cli.stdout)["delivered"] is True
    assert by_client.delivered and by_aio.delivered
    assert sorted(rcpt for _, rcpt, _ in sink.arrived) == [
        [f"{u}@example.org"] for u in ("di", "ed", "fa")]

"""ExportProfile (right of access) holds the messages the server keeps for the user: those
waiting to go (a deferred ComposeMessage, a SendCampaign recipient composed and waiting) and
their dead letters, each with its address, campaign, decision and state, through a real server
with real tokens, a real relay and a real store."""
import json

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import minted

from .conftest import email_spec, relayed
from .test_compose_deferred import deferred
from .test_send_campaign import audience

ROLES = {"admin": ["admin"], "decider": ["decider"], "tracker": ["tracker"],
         "reader": ["pii-reader"]}


@pytest.fixture
def auth(tmp_path):
    return minted(tmp_path, ROLES)


@pytest.fixture
def settings(settings, sink, auth):
    return relayed(settings, sink, auth_config=auth[0])


@pytest_asyncio.fixture
async def stubs(tailor_server, auth):
    toks = auth[1]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tailor_server.port}") as ch:
        yield ({role: (("authorization", f"Bearer {t}"),) for role, t in toks.items()},
               campaign_pb2_grpc.CampaignServiceStub(ch), profile_pb2_grpc.ProfileServiceStub(ch),
               messaging_pb2_grpc.MessagingServiceStub(ch))


class _As:
    """A stub whose every call carries `metadata`."""

    def __init__(self, stub, metadata):
        self.stub, self.metadata = stub, metadata

    def __getattr__(self, name):
        call = getattr(self.stub, name)
        return lambda request, **kw: call(request, metadata=self.metadata, **kw)


async def document(profiles, user: str) -> dict:
    return json.loads((await profiles.ExportProfile(ppb.ExportProfileRequest(user_id=user))).document)


async def test_the_access_export_lists_the_users_waiting_messages_and_dead_letters(
        tailor_server, sink, stubs):
    meta, campaigns, profiles, messaging = stubs
    await _As(campaigns, meta["admin"]).CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(_As(profiles, meta["tracker"]), ["ex1", "ex2"])
    sink.rcpt_replies["ex1@example.com"] = ["554 5.7.1 rejected by policy"]
    with pytest.raises(grpc.RpcError):  # a dead letter of ex1's
        await _As(messaging, meta["decider"]).ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ex1", deliver=True))
    with deferred(tailor_server, 600):  # a message of ex1's waiting for its send_at
        waiting = await _As(messaging, meta["decider"]).ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ex1", deliver=True))
    assert waiting.scheduled
    reader = _As(profiles, meta["reader"])
    doc = await document(reader, "ex1")
    [letter] = doc["dead_letters"]
    assert (letter["channel"], letter["campaign_id"], letter["to"], letter["reason"],
            letter["attempts"]) == ("email", "mail", "ex1@example.com", "smtp 554", 1)
    assert letter["id"] and letter["decision_id"] and letter["at"] > 0
    [message] = doc["messages"]
    assert (message["send_id"], message["decision_id"], message["channel"], message["to"],
            message["state"]) == (waiting.send_id, waiting.decision_id, "email",
                                  "ex1@example.com", "ready")
    assert abs(message["send_at"] - waiting.send_at) < 1e-3
    other = await document(reader, "ex2")  # nothing of another user's
    assert (other["dead_letters"], other["messages"]) == ([], [])


async def test_the_access_export_holds_the_messages_rendered_for_the_user(tailor_server, sink,
                                                                          stubs):
    """A dead letter and a waiting message hold the email rendered for the user (addressed to
    them, with their name): the document carries those bytes, as the adapter got them."""
    meta, campaigns, profiles, messaging = stubs
    await _As(campaigns, meta["admin"]).CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(_As(profiles, meta["tracker"]), ["ex1"])
    await _As(profiles, meta["tracker"]).UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="ex1", attributes={"first_name": "Zelda"}))
    sink.rcpt_replies["ex1@example.com"] = ["554 5.7.1 rejected by policy"]
    with pytest.raises(grpc.RpcError):
        await _As(messaging, meta["decider"]).ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ex1", deliver=True))
    with deferred(tailor_server, 600):
        await _As(messaging, meta["decider"]).ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ex1", deliver=True))
    [stored] = tailor_server.delivery.dead.list(10)
    doc = await document(_As(profiles, meta["reader"]), "ex1")
    [letter], [waiting] = doc["dead_letters"], doc["messages"]
    assert letter["message"] == stored.data  # the email as the relay got it
    assert "To: ex1@example.com" in letter["message"] and "Hi Zelda" in letter["message"]
    assert "To: ex1@example.com" in waiting["message"] and "Hi Zelda" in waiting["message"]


async def test_messages_past_the_exports_bound_are_listed_by_their_size(tailor_server, sink,
                                                                        stubs):
    meta, campaigns, profiles, messaging = stubs
    tailor_server.delivery.dead.exported = 1  # fits no message
    await _As(campaigns, meta["admin"]).CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(_As(profiles, meta["tracker"]), ["ex1"])
    sink.rcpt_replies["ex1@example.com"] = ["554 5.7.1 rejected by policy"]
    with pytest.raises(grpc.RpcError):
        await _As(messaging, meta["decider"]).ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="ex1", deliver=True))
    [stored] = tailor_server.delivery.dead.list(10)
    [letter] = (await document(_As(profiles, meta["reader"]), "ex1"))["dead_letters"]
    assert letter["message"] is None
    assert letter["message_bytes"] == len(json.dumps(stored.data, ensure_ascii=False).encode())


@pytest.fixture
def widened(tmp_path):
    """An auth config whose `support` role the operator widened to ExportProfile (not a
    pii-reader: the document's profile comes masked to it)."""
    from server.security import tokens
    path = tmp_path / "widened" / "auth.toml"
    path.parent.mkdir()
    path.write_text('[roles]\nsupport = ["/tailor.v1.ProfileService/ExportProfile"]\n')
    return path, {name: tokens.mint(path, name, given)
                  for name, given in {**ROLES, "support": ["support"]}.items()}


async def test_a_widened_role_gets_the_users_messages_masked_as_their_profile(
        settings, sink, widened):
    """A role the auth config widened to ExportProfile reads the profile masked (its first
    name `Z***`): the messages rendered with those attributes and the addresses they go to
    must not hand it what the mask hides (before: 'Hi Zelda' and 'ex1@example.com' in full)."""
    from server.app import TailorServer
    server = TailorServer(settings.model_copy(update={"auth_config": widened[0]}))
    await server.start()
    try:
        meta = {r: (("authorization", f"Bearer {t}"),) for r, t in widened[1].items()}
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as ch:
            campaigns = _As(campaign_pb2_grpc.CampaignServiceStub(ch), meta["admin"])
            profiles = profile_pb2_grpc.ProfileServiceStub(ch)
            messaging = _As(messaging_pb2_grpc.MessagingServiceStub(ch), meta["decider"])
            await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
            await audience(_As(profiles, meta["tracker"]), ["ex1"])
            await _As(profiles, meta["tracker"]).UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id="ex1", attributes={"first_name": "Zelda"}))
            sink.rcpt_replies["ex1@example.com"] = ["554 5.7.1 rejected by policy"]
            with pytest.raises(grpc.RpcError):
                await messaging.ComposeMessage(mpb.ComposeMessageRequest(
                    campaign_id="mail", user_id="ex1", deliver=True))
            with deferred(server, 600):
                await messaging.ComposeMessage(mpb.ComposeMessageRequest(
                    campaign_id="mail", user_id="ex1", deliver=True))
            masked = await document(_As(profiles, meta["support"]), "ex1")
            full = await document(_As(profiles, meta["reader"]), "ex1")
    finally:
        await server.stop(grace=0.5)
    assert masked["profile"]["attributes"]["first_name"] == "Z***"
    assert full["profile"]["attributes"]["first_name"] == "Zelda"
    for section in ("dead_letters", "messages"):
        [entry], [whole] = masked[section], full[section]
        assert "Zelda" not in json.dumps(entry) and "ex1@example.com" not in json.dumps(entry)
        assert entry["to"] == "e***@example.com" and entry["message"] is None
        assert entry["message_bytes"] == len(json.dumps(whole["message"],
                                                        ensure_ascii=False).encode())
        assert "Hi Zelda" in whole["message"] and whole["to"] == "ex1@example.com"


def test_the_waiting_messages_are_exported_oldest_job_first(tmp_path):
    """The bound keeps the oldest messages (docs/privacy.md): the records scan by send id, a
    random or hashed one, so a later job's ("send-0000") came first and kept its message while
    the older job's was withheld."""
    import time

    from server.messages.sends import READY, Recipient, SendRecords
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    records = SendRecords(store, exported=3000)  # fits one of the two messages
    try:
        for send_id, body in (("send-ffff", "older " * 400), ("send-0000", "newer " * 400)):
            r = Recipient(0, "ex1", READY, "d-" + send_id, "", time.time() + 600,
                          {"to": "ex1@example.com", "raw": body})
            records.create(send_id, "mail", [r], {}, {}, owner=1)
            time.sleep(0.01)
        first, second = records.export_user("ex1")["messages"]
    finally:
        store.close()
    assert (first["send_id"], first["message"][:5]) == ("send-ffff", "older")
    assert (second["send_id"], second["message"], second["message_bytes"]) == (
        "send-0000", None, 2402)

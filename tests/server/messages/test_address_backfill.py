"""Profiles stored before the address index: a server started on such a store indexes them
(`server.profiles.backfill`), so a STOP or a one-click unsubscribe from their address reaches
them. Real servers restarted on one data dir; the old store is made by taking out what
UpsertAttributes indexed and the stamps a Tailor of before wrote."""
import asyncio
import json
import os
import time

import aiohttp

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.messages.phones import UNNAMED, AddressIndex, PhoneIndex
from server.profiles.backfill import DONE, backfill_attributes, backfill_chunk
from server.security.secrets import Secrets
from server.store import Store, keys
from server.store.crypto import MASTER_RING, STORE_ID_RING, StoreCrypto
from tests.conftest import run_module, serving

from .conftest import email_spec
from .test_sms_inbound import reply

PHONE, EMAIL, EMAIL_2 = "+447700900123", "ann@example.org", "ann@example.net"


def as_before_the_index(store, users) -> None:
    """`store` as a Tailor of before wrote it: the addresses of `users` set (UpsertAttributes)
    but never messaged at are in no index, and nothing stamps the walk or index layout 2."""
    meta = store.raw_table("meta")

    def fn(txn):
        for channel in ("sms", "email"):
            for user in users:
                held = keys.address_user_key(channel, user) + keys.SEP + b"held"
                if (digest := meta.get(txn, held)) is not None:
                    assert meta.delete(txn, keys.address_entry_key(
                        channel, bytes(digest).decode(), user))
                    meta.delete(txn, held)
        for key in (keys.ATTRIBUTES_BACKFILL, keys.layout_key("attributes_backfill")):
            meta.delete(txn, key)
        for kind in ("phone_index", "email_index"):
            meta.put(txn, keys.layout_key(kind), b"1")
    store.write(fn)


def outbox_held(store) -> bool:
    """Whether an outbox entry is still there (a detached listener not done)."""
    with store.read() as txn:
        return next(iter(store.table("outbox").keys_from(txn, b"")), None) is not None


async def unsubscribe_event(profiles, event_id: str, user: str) -> None:
    """An `unsubscribe` email event of `user` through TrackEvents, accepted."""
    got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=event_id, user_id=user, type="unsubscribe", channel="email",
        timestamp=time.time())]))
    assert got.accepted_ids == [event_id]


async def consent(profiles, user: str, channel: str):
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return got.consent[channel].opted_in if channel in got.consent else None


async def one_click(url: str) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as res:
            return res.status


async def held_by(profiles, user: str, *, events: bool = False) -> None:
    """`user` holds PHONE and EMAIL and opted in to both; with `events`, one event too (its
    id is then in the store)."""
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"phone": PHONE, "email": EMAIL}))
    for channel in ("sms", "email"):
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel=channel,
                                                        opted_in=True, source="signup"))
    if events:
        got = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
            event_id=f"{user}-e", user_id=user, type="view", item_id="i1",
            timestamp=time.time() - 60)]))
        assert got.accepted_ids == [f"{user}-e"]


async def old_store(settings, *others: str) -> str:
    """A data dir as a Tailor of before left it: `texted` was texted and mailed at PHONE and
    EMAIL; `guest` (no events: its id is nowhere in the store) and `member` (with events)
    hold both, never messaged at them, and are in no index; so are `others`, holding EMAIL_2
    alone. Returns the texted user's one-click link."""
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        campaigns = campaign_pb2_grpc.CampaignServiceStub(ch)
        messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="sms", channel="sms", policy="fixed",
            variants=[cpb.Variant(id="s", content={"text": "Hi"})])))
        for user, events in (("texted", False), ("guest", False), ("member", True)):
            await held_by(profiles, user, events=events)
        for user in others:
            await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
                user_id=user, attributes={"email": EMAIL_2}))
            await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email",
                                                            opted_in=True, source="signup"))
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                 user_id="texted"))
        link = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="texted"))).unsubscribe_url
        as_before_the_index(server.store, ["guest", "member", *others])
        assert server.phones.lookup(PHONE) == server.emails.lookup(EMAIL) == ["texted"]
    return link


async def test_a_stop_reaches_profiles_stored_before_the_index_once_migrated(settings):
    """A STOP from the number reached only the profile texted at it: the others holding it
    (stored before UpsertAttributes indexed addresses) kept their SMS consent, and the next
    campaign texted the number through them. The first start indexes them, named when the
    store holds their id (an event), by token when it does not; the erasure drops both."""
    await old_store(settings)
    async with serving(settings) as (server, ch):
        assert server.store.migrated == {"phone_index": 1, "email_index": 1}
        assert server.phones.lookup(PHONE) == ["member", "texted"]
        assert len(server.phones.unnamed(PHONE)) == 1  # guest: its id is nowhere stored
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        messaging = messaging_pb2_grpc.MessagingServiceStub(ch)
        assert await reply(settings, PHONE, "STOP") == 200
        assert [await consent(profiles, u, "sms") for u in ("texted", "guest", "member")] == \
            [False, False, False]
        again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                         user_id="guest"))
        assert again.suppressed and again.reason == "no_consent"
        got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="guest"))
        assert got.consent["sms"].source == "sms reply STOP"
        assert await reply(settings, PHONE, "START") == 200  # by token too
        assert await consent(profiles, "guest", "sms") is True
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="guest"))
        assert server.phones.unnamed(PHONE) == server.emails.unnamed(EMAIL) == []


async def test_a_one_click_unsubscribe_reaches_them_once_migrated(settings):
    """The texted user's one-click link opted out only its own profile on a store from
    before the index; once migrated, every profile holding the inbox."""
    link = await old_store(settings)
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        assert await one_click(link) == 200
        assert [await consent(profiles, u, "email") for u in ("texted", "guest", "member")] \
            == [False, False, False]
        assert [await consent(profiles, u, "sms") for u in ("guest", "member")] == [True, True]


async def test_a_link_mailed_before_an_address_change_reaches_the_old_address_only(settings):
    """The link of a message mailed to the old address opts out the profiles at that one
    (as the named ones: `sharing`), not those known by token at the user's new address."""
    link = await old_store(settings, "elsewhere")
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="texted", attributes={"email": EMAIL_2}))
        assert await one_click(link) == 200
        assert [await consent(profiles, u, "email") for u in ("guest", "elsewhere")] == \
            [False, True]


async def test_an_unsubscribe_event_reaches_them_once_migrated(settings):
    """An `unsubscribe` event of the texted user (TrackEvents) opts out the other profiles at
    its address (`SharedOptOut`), the one known by token alone too."""
    await old_store(settings)
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        await unsubscribe_event(profiles, "unsub-1", "texted")
        deadline = time.monotonic() + 10  # (detached: after the answer)
        while await consent(profiles, "guest", "email") and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert [await consent(profiles, u, "email") for u in ("texted", "guest", "member")] \
            == [False, False, False]
        got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="guest"))
        assert got.consent["email"].source == "unsubscribe event (shared address)"


async def test_an_unnamed_entry_is_named_when_the_user_sets_the_address_again(settings):
    await old_store(settings)
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="guest", attributes={"phone": PHONE}))
        assert server.phones.lookup(PHONE) == ["guest", "member", "texted"]
        assert server.phones.unnamed(PHONE) == []
        assert len(server.emails.unnamed(EMAIL)) == 1


def opened(settings) -> tuple[Store, list[AddressIndex]]:
    """The data dir's store, as `python -m server migrate` opens it, and its SMS and email
    indexes."""
    rings = Secrets.load(settings.secrets_dir, generate=False,
                         names=(MASTER_RING, STORE_ID_RING, "unsubscribe"))
    store = Store(settings.data_dir / "store", sync=False,
                  crypto=StoreCrypto.from_secrets(rings))
    return store, [PhoneIndex(store, rings["unsubscribe"]),
                   AddressIndex(store, rings["unsubscribe"], "email")]


async def test_the_walk_goes_on_after_a_kill_where_its_last_chunk_stopped(settings):
    """Chunks of bounded write transactions: one committed chunk, then the process is gone;
    `python -m server migrate` goes on after its last key, and a finished walk writes
    nothing again."""
    await old_store(settings)
    store, indexes = opened(settings)
    try:
        wrote, walked, done = store.write(lambda txn: backfill_chunk(store, indexes, txn, 2))
        assert (walked, done) == (2, False)
        with store.read() as txn:
            assert bytes(store.raw_table("meta").get(txn, keys.ATTRIBUTES_BACKFILL))[:1] == b"["
    finally:
        store.close()
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(settings.secrets_dir)}
    done = json.loads(run_module("server", "migrate", "--data-dir", str(settings.data_dir),
                                 env=env).stdout)
    assert wrote + done["address_index"] == 4  # guest and member, SMS and email, once each
    store, indexes = opened(settings)
    try:
        index = indexes[0]
        assert index.lookup(PHONE) == ["member", "texted"] and len(index.unnamed(PHONE)) == 1
        with store.read() as txn:
            assert bytes(store.raw_table("meta").get(txn, keys.ATTRIBUTES_BACKFILL)) == DONE
            assert sum(bytes(v) == UNNAMED for _, v in
                       store.raw_table("meta").scan_prefix(txn, keys.PHONE_PREFIX)) == 1
        assert backfill_attributes(store, indexes, chunk=2) == 0
    finally:
        store.close()


async def test_turning_encryption_on_keeps_an_unnamed_entry_unnamed(settings):
    """A store indexed with encryption off, then opened with it on: the seal took an unnamed
    entry's value for a user id and sealed it, `lookup` named a user "\\x00unnamed", and a
    STOP from the number was refused (400) with no profile opted out. The entry stays as it
    is: the STOP reaches every profile at the number."""
    plain = settings.model_copy(update={"encrypt_at_rest": False})
    await old_store(plain)
    async with serving(plain) as (server, ch):
        assert len(server.phones.unnamed(PHONE)) == 1
    async with serving(settings) as (server, ch):
        assert server.phones.lookup(PHONE) == ["member", "texted"]
        assert len(server.phones.unnamed(PHONE)) == len(server.emails.unnamed(EMAIL)) == 1
        assert await reply(settings, PHONE, "STOP") == 200
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        assert [await consent(profiles, u, "sms") for u in ("texted", "guest", "member")] == \
            [False, False, False]


async def test_an_unnamed_users_own_unsubscribe_event_keeps_its_own_source(settings):
    """The event's own user known by token alone was counted among the *other* profiles at
    its address: its own opt-out ("unsubscribe event") was written again as the shared one
    ("unsubscribe event (shared address)"). Its own stays; the others get the shared one."""
    await old_store(settings)
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        await unsubscribe_event(profiles, "unsub-g", "guest")
        deadline = time.monotonic() + 10  # detached: its outbox entry goes once it is done
        while outbox_held(server.store) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        sources = [(await profiles.GetProfile(ppb.GetProfileRequest(user_id=u))).consent[
            "email"].source for u in ("guest", "texted", "member")]
        assert sources == ["unsubscribe event", *["unsubscribe event (shared address)"] * 2]


async def test_a_stop_reaches_a_profile_named_while_it_is_answered(settings):
    """The STOP read the named profiles, then the unnamed ones, and wrote those only while
    still unnamed: the user setting their number again in between (naming the entry) left
    them in neither, and the person who said STOP kept getting texts through that profile.
    A profile indexed either way when the STOP reads is written."""
    await old_store(settings)
    async with serving(settings) as (server, ch):
        profiles = profile_pb2_grpc.ProfileServiceStub(ch)
        loop, unnamed = asyncio.get_running_loop(), server.phones.unnamed

        def then_named(*args):  # the real read, then the user's real UpsertAttributes
            tokens = unnamed(*args)
            asyncio.run_coroutine_threadsafe(server.profiles.upsert_attributes(
                "guest", {"phone": PHONE}), loop).result(10)
            return tokens
        server.phones.unnamed = then_named
        try:
            assert await reply(settings, PHONE, "STOP") == 200
        finally:
            del server.phones.unnamed
        assert server.phones.unnamed(PHONE) == []  # named in between
        assert [await consent(profiles, u, "sms") for u in ("texted", "guest", "member")] == \
            [False, False, False]

"""STOP/START replies through the signed inbound webhook, against a real server."""
import asyncio
import contextlib
import itertools
import logging
import time
from types import SimpleNamespace
from urllib.parse import urlencode

import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.http.signing import sign
from server.store import keys
from tests.conftest import store_mentions

from .conftest import SMS_KEY, SMS_OLD_KEY


async def sms_consent(profiles, user):
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return got.consent["sms"].opted_in if "sms" in got.consent else None


@pytest.fixture
async def texted(campaigns, profiles, messaging):
    """A user with a phone number who was composed an SMS (so their number is indexed)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": "Hi {{ first_name|default('') }}"})])))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-sms", attributes={"phone": "+44 (7700) 900-123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="u-sms", channel="sms", opted_in=True,
                                                    source="signup"))
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id="u-sms"))
    return "u-sms"


@pytest.fixture(scope="module")
async def shared(module_messages_server, module_settings):
    """The module's shared server (its `settings` and stubs) with the "sms" campaign, for the
    tests whose replies come from a number of their own (`own_texted`): a STOP changes only
    the profiles at its number, so none sees another's."""
    channel = module_messages_server[1]
    server = SimpleNamespace(settings=module_settings,
                             campaigns=campaign_pb2_grpc.CampaignServiceStub(channel),
                             profiles=profile_pb2_grpc.ProfileServiceStub(channel),
                             messaging=messaging_pb2_grpc.MessagingServiceStub(channel))
    await server.campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": "Hi {{ first_name|default('') }}"})])))
    return server


_NUMBERS = itertools.count(200)
"""The last three digits of the shared server's numbers, one per test (`own_texted`)."""


@pytest.fixture
async def own_texted(shared):
    """`texted` on the shared server: a user and a number no other test uses, composed an SMS
    as `texted`'s was; (user, the number's last three digits: +447700900NNN)."""
    n = next(_NUMBERS)
    user = f"u-sms-{n}"
    await shared.profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"phone": f"+44 (7700) 900-{n}"}))
    await shared.profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms",
                                                           opted_in=True, source="signup"))
    await shared.messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                    user_id=user))
    return user, n


def signed(body: bytes, key: bytes = SMS_KEY, age: float = 0.0) -> dict:
    """The headers of `body` signed under `key`, `age` seconds ago."""
    timestamp = str(int(time.time() - age))
    return {"X-Tailor-Timestamp": timestamp, "X-Tailor-Signature": sign(key, body, timestamp)}


async def post(settings, body: bytes, headers: dict) -> int:
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{settings.public_http_port}/sms/inbound", data=body,
                             headers={"Content-Type": "application/x-www-form-urlencoded",
                                      **headers}) as res:
            return res.status


def form(sender: str, text: str) -> bytes:
    return urlencode({"From": sender, "Body": text}).encode()


async def reply(settings, sender: str, text: str, key: bytes = SMS_KEY, age: float = 0.0) -> int:
    """POST a reply signed under `key`, `age` seconds ago; the status."""
    body = form(sender, text)
    return await post(settings, body, signed(body, key, age))


async def test_stop_and_start_replies_change_sms_consent(texted, profiles, settings):
    assert await reply(settings, "004477009001 23", "stop please") == 200
    assert await sms_consent(profiles, texted) is False
    assert await reply(settings, "+447700900123", "START", key=SMS_OLD_KEY) == 200  # rotation
    assert await sms_consent(profiles, texted) is True
    assert await reply(settings, "+447700900123", "hello") == 200  # not a keyword: ignored
    assert await sms_consent(profiles, texted) is True


async def test_an_unsigned_or_wrongly_signed_reply_changes_nothing(texted, profiles, settings):
    assert await reply(settings, "+447700900123", "STOP", key=b"guess") == 401
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{settings.public_http_port}/sms/inbound",
                             data={"From": "+447700900123", "Body": "STOP"}) as res:
            assert res.status == 401
    assert await sms_consent(profiles, texted) is True


async def test_a_signature_that_is_not_ascii_is_401_not_a_server_error(texted, profiles, settings,
                                                                       caplog):
    body = form("+447700900123", "STOP")
    assert await post(settings, body, {**signed(body), "X-Tailor-Signature": "sha256=\u00e9"}) \
        == 401
    assert await sms_consent(profiles, texted) is True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_replayed_or_stale_reply_changes_nothing(texted, profiles, settings):
    start = form("+447700900123", "START")
    captured = signed(start)
    assert await post(settings, start, captured) == 200
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert await post(settings, start, captured) == 409  # the same request again: refused
    assert await reply(settings, "+447700900123", "START", age=301) == 401  # too old
    assert await reply(settings, "+447700900123", "START", age=-301) == 401  # too far ahead
    assert await post(settings, start, {"X-Tailor-Signature": captured["X-Tailor-Signature"]}) \
        == 401  # no timestamp
    redated = {**captured, "X-Tailor-Timestamp": str(int(captured["X-Tailor-Timestamp"]) - 1)}
    assert await post(settings, start, redated) == 401  # the timestamp is signed

    assert await sms_consent(profiles, texted) is False


async def test_a_start_signed_before_a_later_stop_does_not_reopen_sms(texted, profiles, settings):
    assert await reply(settings, "+447700900123", "STOP", age=5) == 200
    assert await reply(settings, "+447700900123", "START", age=60) == 200  # delivered late
    assert await sms_consent(profiles, texted) is False
    assert await reply(settings, "+447700900123", "START") == 200
    assert await sms_consent(profiles, texted) is True


async def test_the_index_holds_no_number_and_goes_with_the_profile(texted, profiles, settings,
                                                                   tailor_server):
    assert store_mentions(tailor_server.store, b"7700900123") == []  # no normalized number
    # The attribute is encrypted at rest, and so is the user id the index entry leads to.
    assert store_mentions(tailor_server.store, b"900-123") == []
    assert store_mentions(tailor_server.store, texted.encode()) == []
    index = [tailor_server.store.scan("meta", p) for p in (keys.PHONE_PREFIX, keys.PHONE_USER_PREFIX)]
    assert [len(entries) for entries in index] == [1, 1]
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=texted))
    assert [tailor_server.store.scan("meta", p) for p in (keys.PHONE_PREFIX, keys.PHONE_USER_PREFIX)] \
        == [[], []]
    assert await reply(settings, "+447700900123", "STOP") == 200  # unknown now: nothing happens
    assert store_mentions(tailor_server.store, texted.encode()) == []


@pytest.mark.parametrize("given, number", [
    ("+44 (7700) 900-123", "+447700900123"), ("004477009001 23", "+447700900123"),
    ("07700 900123", None), ("+0123456", None), ("", None)])
def test_replies_match_numbers_as_the_suppression_list_normalizes_them(given, number):
    from server.contact.addresses import PHONE, normalize
    from server.messages.phones import normalize_phone
    assert normalize_phone(given) == number
    if number is not None:
        assert normalize(PHONE, given, 254) == number


async def test_without_the_sms_webhook_keyring_there_is_no_endpoint(settings, tmp_path):
    from server.app import TailorServer
    (settings.secrets_dir / "sms-webhook.keys").unlink()
    server = TailorServer(settings)
    await server.start()
    try:
        assert await reply(settings, "+447700900123", "STOP") == 404
        assert not (settings.secrets_dir / "sms-webhook.keys").exists()  # never generated
    finally:
        await server.stop(grace=0.5)


async def test_a_stop_signed_before_the_users_erasure_is_ignored_not_a_server_error(
        texted, profiles, messaging, settings, caplog):
    """A STOP signed a minute ago reaches a user erased since who came back (the number indexed
    again): its consent change is dated before the erasure, which the profile refuses
    (`ErasedSince`, docs/privacy.md). SmsInbound let the error out: a 500 with an ERROR
    traceback, which the provider retries. Now it is ignored like any reply of an erased user
    (200, so the provider does not retry), nothing written."""
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=texted))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=texted, attributes={"phone": "+447700900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=texted, channel="sms", opted_in=True,
                                                    source="signup again"))
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id=texted))
    assert await reply(settings, "+447700900123", "STOP", age=60) == 200
    assert await sms_consent(profiles, texted) is True
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # Signed after the erasure it counts (timestamps are whole seconds: 2 s ahead, not now).
    assert await reply(settings, "+447700900123", "STOP", age=-2) == 200
    assert await sms_consent(profiles, texted) is False


async def test_an_sms_composed_while_its_user_is_erased_leaves_no_index_entry(
        campaigns, profiles, messaging, settings, tailor_server):
    """The composer indexes the number an SMS goes to after rendering it; a DeleteProfile
    committed in between (it drops the index entry) was followed by the entry written again,
    sealed under a new key: the erased user's id stayed in the store, and a STOP from the
    number then re-created their profile (a consent record under the erased id)."""
    import asyncio

    import grpc
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": "Hi"})])))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="gone-sms", attributes={"phone": "+447700900124"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="gone-sms", channel="sms",
                                                    opted_in=True, source="signup"))
    phones, loop = tailor_server.phones, asyncio.get_running_loop()
    store = tailor_server.store  # a number set before UpsertAttributes indexed it: the
    store.write(lambda txn: phones.erase_user(txn, "gone-sms"))  # composer indexes it
    remember = phones.remember

    async def erase(user_id):
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user_id))

    def erased_first(user_id, phone):  # DeleteProfile commits after the render, before this
        asyncio.run_coroutine_threadsafe(erase(user_id), loop).result(10)
        return remember(user_id, phone)

    phones.remember = erased_first
    try:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                 user_id="gone-sms"))
    finally:
        del phones.remember
    assert phones.lookup("+447700900124") == []
    # an entry such a race left before this fix: a STOP finds it
    key = keys.phone_key(phones._digests("+447700900124")[0])
    store.write(lambda txn: store.table("meta").put(
        txn, key, store.seal_for_user(txn, "gone-sms", key, b"gone-sms")))
    assert phones.lookup("+447700900124") == ["gone-sms"]
    assert await reply(settings, "+447700900124", "STOP") == 200  # an erased user: unknown
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="gone-sms"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_stop_from_a_number_two_profiles_share_opts_both_out(texted, campaigns, profiles,
                                                                     messaging, settings):
    """Two profiles with one number (a guest checkout and an account, a family phone): each
    was texted. A STOP from the number opted out only the profile texted last (the index held
    one user a number), and the other's SMS kept going to the person who said STOP."""
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-sms-2", attributes={"phone": "+447700900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="u-sms-2", channel="sms",
                                                    opted_in=True, source="signup"))
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id="u-sms-2"))
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id=texted))
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert await sms_consent(profiles, texted) is False
    assert await sms_consent(profiles, "u-sms-2") is False
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                     user_id="u-sms-2"))
    assert again.suppressed and again.reason == "no_consent"
    assert await reply(settings, "+447700900123", "START") == 200
    assert await sms_consent(profiles, texted) is True
    assert await sms_consent(profiles, "u-sms-2") is True
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=texted))  # the other stays
    assert await reply(settings, "+447700900123", "Stop") == 200
    assert await sms_consent(profiles, "u-sms-2") is False


async def test_a_stop_reaches_a_profile_holding_the_number_never_texted(texted, profiles,
                                                                         messaging, settings):
    """A second profile holds the number (UpsertAttributes) and opted in, but was never
    texted: it was not in the index (written only when an SMS was composed), so the STOP
    changed the texted profile alone and the next campaign texted the number through the
    other. The index is written with the attribute too."""
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-sms-3", attributes={"phone": "0044 7700 900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="u-sms-3", channel="sms",
                                                    opted_in=True, source="signup"))
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert [await sms_consent(profiles, u) for u in (texted, "u-sms-3")] == [False, False]
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                     user_id="u-sms-3"))
    assert again.suppressed and again.reason == "no_consent"
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(  # a new number: the old
        user_id="u-sms-3", attributes={"phone": "+447700900999"}))  # one's STOP is not theirs
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="u-sms-3", channel="sms",
                                                    opted_in=True, source="signup"))
    assert await reply(settings, "+447700900999", "STOP") == 200
    assert await sms_consent(profiles, "u-sms-3") is False


@pytest.mark.parametrize("sender", ["+447700900{}", "+44+7700+900{}", "%2B447700900{}"])
async def test_a_sender_whose_plus_is_not_percent_encoded_is_still_the_number(
        own_texted, shared, sender):
    """`From=+447700900123`: a provider that writes the number's "+" as it is (not `%2B`) in
    its form body. Form decoding reads a bare "+" as a space, so the sender was " 447700900123",
    no E.164 number: "unknown number", the STOP lost and the texts kept coming. A leading "+"
    written as it is is the number's own (a form's space never starts a number)."""
    texted, n = own_texted
    body = b"From=" + sender.format(n).encode() + b"&Body=STOP"
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{shared.settings.public_http_port}/sms/inbound",
                             data=body, headers={**signed(body), "Content-Type":
                                                 "application/x-www-form-urlencoded"}) as res:
            assert (res.status, await res.text()) == (200, "ok")
    assert await sms_consent(shared.profiles, texted) is False


@pytest.mark.parametrize("text", ["Revoke", "opt out", "Opt-Out.", "OPTOUT", "stop, please",
                                  "Stop?"])
async def test_every_reply_the_fcc_names_as_a_revocation_opts_out(own_texted, shared, text):
    """47 CFR 64.1200(a)(12) (in force since April 2025): a reply of "stop", "quit", "end",
    "revoke", "opt out", "cancel" or "unsubscribe" revokes consent. REVOKE and OPT OUT were
    not STOP words, and a first word followed by a comma or a question mark was not read as
    one: such replies were "ignored" and the texts kept coming."""
    texted, n = own_texted
    assert await reply(shared.settings, f"+447700900{n}", text) == 200
    assert await sms_consent(shared.profiles, texted) is False


@pytest.mark.parametrize("text", ["ARRET", "Arrêt", "arrêt!", "Remove", "REMOVE me", "TD",
                                  "\uff33\uff34\uff2f\uff30"])
async def test_the_carriers_required_opt_out_words_opt_out(own_texted, shared, text):
    """The opt-out words US and Canadian carriers require (AWS End User Messaging's list:
    ARRET, CANCEL, END, OPT-OUT, OPTOUT, QUIT, REMOVE, STOP, TD, UNSUBSCRIBE) held ARRET
    (French, Canada), REMOVE and TD, which were ignored: a Quebec user's "Arrêt" answered 200
    "ignored" and the texts kept coming. Accents and full-width letters fold ("Arrêt",
    "ＳＴＯＰ" from a CJK keyboard). TD only as the whole reply ("TD Bank called" is not)."""
    texted, n = own_texted
    assert await reply(shared.settings, f"+447700900{n}", text) == 200
    assert await sms_consent(shared.profiles, texted) is False


@pytest.mark.parametrize("text", ["Stop\U0001f6d1", "\"STOP\"", "\U0001f6d1 Stop", "(stop)",
                                  "Please stop", "pls STOP texting me"])
async def test_a_stop_word_wrapped_in_an_emoji_quotes_or_please_opts_out(own_texted, shared,
                                                                         text):
    """Only ".!?,;:" were dropped around the first word, so "Stop🛑", "\"STOP\"" or "🛑 Stop"
    were ignored, and so was "Please stop", the commonest polite revocation (47 CFR
    64.1200(a)(12): any reasonable means): the texts kept coming. The first word holding a
    letter or digit is read, without the symbols around it, after a leading "please"."""
    texted, n = own_texted
    assert await reply(shared.settings, f"+447700900{n}", text) == 200
    assert await sms_consent(shared.profiles, texted) is False


@pytest.mark.parametrize("text", ["TD Bank called", "Removed the app", "Arretez",
                                  "END-OF-YEAR sale?", "Please start", "Pleased to hear"])
async def test_words_that_only_begin_like_an_opt_out_word_change_nothing(own_texted, shared,
                                                                         text):
    texted, n = own_texted
    assert await reply(shared.settings, f"+447700900{n}", text) == 200
    assert await sms_consent(shared.profiles, texted) is True


async def test_an_sms_one_click_link_opts_out_every_profile_texted_at_the_number(
        texted, profiles, messaging, settings):
    """An SMS's unsubscribe link does what a STOP from its number does (the same index): every
    profile texted at the number is opted out of SMS."""
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-sms-3", attributes={"phone": "+447700900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="u-sms-3", channel="sms",
                                                    opted_in=True, source="signup"))
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id="u-sms-3"))
    link = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id=texted))).unsubscribe_url
    async with aiohttp.ClientSession() as http:
        async with http.post(link, data={"List-Unsubscribe": "One-Click"}) as res:
            assert res.status == 200
    assert [await sms_consent(profiles, u) for u in (texted, "u-sms-3")] == [False, False]


async def test_a_yes_to_a_transactional_text_gives_no_marketing_consent(texted, campaigns,
                                                                        profiles, messaging,
                                                                        settings):
    """"Reply YES to confirm your appointment": a user who never agreed to marketing texts
    replied YES to a transactional SMS, and START/YES recorded an SMS marketing opt-in: the
    marketing texts began. START, UNSTOP and YES undo an opt-out (what a STOP closed, as the
    carriers' keywords do); they never give a consent the user had not given before."""
    spec = cpb.CampaignSpec(campaign_id="appt", channel="sms", policy="fixed",
                            purpose="transactional",
                            variants=[cpb.Variant(id="a", content={"text": "Reply YES"})])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="u-appt", attributes={"phone": "+447700900125"}))
    assert not (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="appt", user_id="u-appt"))).suppressed
    assert await reply(settings, "+447700900125", "Yes") == 200
    assert await sms_consent(profiles, "u-appt") is None
    marketing = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                         user_id="u-appt"))
    assert marketing.suppressed and marketing.reason == "no_consent"
    assert await reply(settings, "+447700900125", "STOP", age=2) == 200  # STOP, then START:
    assert await reply(settings, "+447700900125", "START") == 200  # back to no consent
    assert await sms_consent(profiles, "u-appt") is False


@pytest.mark.parametrize("text", ["Yes", "Yes, see you then", "Start the car", "unstop me"])
async def test_a_yes_to_a_transactional_text_after_a_stop_does_not_restart_marketing(
        texted, campaigns, profiles, messaging, settings, text):
    """A user who opted in at signup texted STOP, then answered an appointment text "Yes" (or
    "Yes, see you then"): YES was a re-subscribe word, matched as the reply's first word, so
    their marketing texts began again, a consent revoked and never given back. Only START
    and UNSTOP, as the whole reply, re-subscribe (the carriers' keywords); a reply that merely
    begins with one is ignored. An opt-out word is still read as the first word."""
    spec = cpb.CampaignSpec(campaign_id="appt", channel="sms", policy="fixed",
                            purpose="transactional",
                            variants=[cpb.Variant(id="a", content={"text": "Reply YES"})])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    assert await reply(settings, "+447700900123", "STOP", age=5) == 200
    assert (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="appt", user_id=texted))).suppressed  # no text after a STOP (see below)
    assert await reply(settings, "+447700900123", text) == 200
    assert await sms_consent(profiles, texted) is False
    marketing = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms",
                                                                         user_id=texted))
    assert (marketing.suppressed, marketing.reason) == (True, "no_consent")
    assert await reply(settings, "+447700900123", " Start! ") == 200  # the keyword alone
    assert await sms_consent(profiles, texted) is True


async def test_after_a_stop_no_text_goes_until_start_not_even_a_transactional_one(
        texted, campaigns, profiles, messaging, settings):
    """After STOP, carriers and SMS providers block every text to the number until START
    (CTIA: nothing but the STOP's confirmation follows it; Twilio refuses the send). A
    transactional SMS was still composed and sent: the provider refused it (a dead letter) or,
    through one that does not block, the person who said STOP got it. A STOP closes the
    number's transactional texts too; START reopens what the STOP closed, but not a
    transactional opt-out the user gave elsewhere (SetConsent)."""
    spec = cpb.CampaignSpec(campaign_id="code", channel="sms", policy="fixed",
                            purpose="transactional",
                            variants=[cpb.Variant(id="a", content={"text": "Your code"})])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))

    async def receipt(user):
        got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="code",
                                                                       user_id=user))
        return got.reason if got.suppressed else "sent"
    assert await receipt(texted) == "sent"
    assert await reply(settings, "+447700900123", "Stop", age=2) == 200
    assert await receipt(texted) == "no_consent"
    assert await reply(settings, "+447700900123", "START") == 200
    assert (await receipt(texted), await sms_consent(profiles, texted)) == ("sent", True)
    await profiles.SetConsent(ppb.SetConsentRequest(  # closed elsewhere: START leaves it
        user_id=texted, channel="sms", opted_in=False, source="preferences",
        purpose="transactional", timestamp=time.time() - 1))
    assert await reply(settings, "+447700900123", "stop") == 200
    assert await reply(settings, "+447700900123", "start") == 200
    assert (await receipt(texted), await sms_consent(profiles, texted)) == ("no_consent", True)


@pytest.mark.parametrize("text", ["Cancel my 3pm appointment please",
                                  "Please remove the 2nd item from my order",
                                  "End of the day works for me"])
async def test_a_reply_only_starting_with_an_opt_out_word_leaves_transactional_texts(
        texted, campaigns, profiles, messaging, settings, text):
    """Carriers block a number only on a reply that is the opt-out word alone ("replying
    'STOP PLEASE' or 'PLEASE CANCEL' will not"); the first word of any sentence closed the
    number's transactional texts too: "Cancel my 3pm appointment please", answering an
    appointment reminder, stopped the user's codes and receipts until they texted START.
    Such a reply closes marketing only; a reply that is only the keyword closes both."""
    spec = cpb.CampaignSpec(campaign_id="code", channel="sms", policy="fixed",
                            purpose="transactional",
                            variants=[cpb.Variant(id="a", content={"text": "Your code"})])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))

    async def answer(campaign):
        got = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id=campaign,
                                                                       user_id=texted))
        return got.reason if got.suppressed else "sent"
    assert await reply(settings, "+447700900123", text, age=2) == 200
    assert (await answer("code"), await answer("sms")) == ("sent", "no_consent")
    assert await reply(settings, "+447700900123", "Cancel.") == 200
    assert (await answer("code"), await answer("sms")) == ("no_consent", "no_consent")


async def test_a_stop_from_the_number_texted_reaches_the_user_after_a_phone_change(
        texted, profiles, settings, tailor_server):
    """UpsertAttributes of a new phone dropped the index entry of the number the user was
    texted at, while texts composed to it (a deferred SendCampaign message, a dead letter's
    retry) still go there: a STOP from it matched nobody ("unknown number") and the text went
    anyway. The number last texted stays indexed beside the one the profile holds, until a
    text goes to another; the erasure drops both."""
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=texted, attributes={"phone": "+447700900999"}))
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert await sms_consent(profiles, texted) is False
    assert await reply(settings, "+447700900999", "START") == 200  # the number held: theirs too
    assert await sms_consent(profiles, texted) is True
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=texted, attributes={"phone": "+447700900888"}))  # the one held before: gone
    assert await reply(settings, "+447700900999", "STOP") == 200
    assert await sms_consent(profiles, texted) is True
    await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=texted))
    assert [tailor_server.store.scan("meta", p) for p in (keys.PHONE_PREFIX, keys.PHONE_USER_PREFIX)] \
        == [[], []]


async def test_a_stop_from_the_carriers_form_reaches_a_number_written_with_its_trunk_zero(
        module_messages_server, shared):
    """A profile indexed at "+44 07700 900NNN" by a Tailor before the trunk prefix rule, as
    +4407700900NNN (the entry written here as it wrote it), another holding "+44 07700
    900MMM" set now: the STOP the provider reports from +447700900NNN (the number the carrier
    knows) was "unknown number", and the texts kept coming."""
    await _stop_reaches_the_old_form_and_the_new(
        module_messages_server[0], shared, written="+44 07700 900{}",
        indexed_before="+4407700900{}", reported="+447700900{}")


async def _stop_reaches_the_old_form_and_the_new(server, shared, written: str,
                                                 indexed_before: str, reported: str) -> None:
    """One profile holding the number `written` now, another whose phone entry a Tailor before
    the rule indexed as `indexed_before` (the entry written here as it wrote it): the STOP the
    provider reports from `reported` opts both out (each a format of the number's last
    digits)."""
    old, new = next(_NUMBERS), next(_NUMBERS)
    for n, attributes in ((old, {"first_name": "Ann"}), (new, {"phone": written.format(new)})):
        await shared.profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=f"u-sms-{n}", attributes=attributes))
        await shared.profiles.SetConsent(ppb.SetConsentRequest(
            user_id=f"u-sms-{n}", channel="sms", opted_in=True, source="signup"))
    digest = server.phones._digests(indexed_before.format(old))[0]
    server.context.run(server.store.write,  # under its keys (another server may have started)
                       lambda txn: server.phones._hold(txn, f"u-sms-{old}", digest))
    for n in (old, new):
        assert await reply(shared.settings, reported.format(n), "STOP") == 200
        assert await sms_consent(shared.profiles, f"u-sms-{n}") is False, n


async def test_a_stop_opts_out_a_profile_stored_under_an_id_refused_since_and_those_beside_it(
        module_messages_server, shared, own_texted):
    """A profile stored (and texted) before ids with a bidirectional control were refused
    shares the number with one stored now: the STOP from it is the user's opt-out, so it
    reaches both; refusing the old id (InvalidArgument in `set_consents`) left every profile
    at the number opted in."""
    import asyncio

    from server.contact.consent import record_consent
    server = module_messages_server[0]
    texted, n = own_texted
    old = "u-sms-\u202e" + str(n)

    def stored(meta):
        meta["attributes"]["phone"] = f"+447700900{n}"
        record_consent(meta, "sms", "marketing", True, "signup", time.time(), 10)
    in_server = server.context.run  # its keys: another server may have started since
    await asyncio.to_thread(in_server, server.profiles.repo.update_meta, old, stored)
    assert await asyncio.to_thread(in_server, server.phones.remember, old, f"+447700900{n}")
    assert await reply(shared.settings, f"+447700900{n}", "STOP") == 200
    assert await sms_consent(shared.profiles, texted) is False
    meta = (await asyncio.to_thread(in_server, server.profiles.repo.states_and_meta, [old],
                                    True))[0][1]
    assert meta["consent"]["sms"]["marketing"]["opted_in"] is False


async def test_a_stop_from_rome_reaches_a_number_written_with_its_zero_in_brackets(
        module_messages_server, shared):
    """Italy's 0 after +39 is the number's own ("+39 (0)6 1234 5NNN" is Rome's +3906...): the
    "(0)" rule dropped it, so the profile holding it was indexed (and texted) at +396..., a
    number nobody has, and the STOP the provider reports from +3906... was "unknown number".
    One holding it now and one indexed in the old form by a Tailor before: both reached."""
    await _stop_reaches_the_old_form_and_the_new(
        module_messages_server[0], shared, written="+39 (0)6 1234 5{}",
        indexed_before="+39612345{}", reported="+390612345{}")


async def test_a_stop_from_a_mobile_reaches_a_profile_indexed_with_a_zero_it_does_not_have(
        module_messages_server, shared):
    """The Tailor of spelling 5 read "+39 (0)345 678 9NNN" (a mobile, a UK-style "(0)") as the
    fixed line +3903456789NNN and indexed the profile there; the mobile's STOP found no one
    indexed so. Both forms are numbers: the STOP reaches it now."""
    from server.contact.trunks import with_shared_zero
    server = module_messages_server[0]
    n = next(_NUMBERS)
    user, mobile = f"u-sms-{n}", f"+393456789{n}"
    assert with_shared_zero(mobile) == f"+3903456789{n}"  # both forms valid numbers
    await shared.profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"first_name": "Ann"}))
    await shared.profiles.SetConsent(ppb.SetConsentRequest(
        user_id=user, channel="sms", opted_in=True, source="signup"))
    digest = server.phones._digests(f"+3903456789{n}")[0]
    server.context.run(server.store.write, lambda txn: server.phones._hold(txn, user, digest))
    assert await reply(shared.settings, mobile, "STOP") == 200
    assert await sms_consent(shared.profiles, user) is False


async def sms_states(profiles, user) -> dict:
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return {c.purpose: (c.opted_in, c.source) for c in got.consents if c.channel == "sms"}


@pytest.mark.parametrize("withdrawn", [-60, +2], ids=["dated-before-the-stop", "after-it"])
async def test_a_start_never_reopens_an_opt_out_given_by_other_means(own_texted, shared,
                                                                     withdrawn):
    """START undoes a STOP, not a withdrawal through SetConsent. Dated before the STOP (a
    `timestamp` in the past), the operator's opt-out was kept in the history only: the STOP's
    stayed current and the next START reopened marketing and transactional texts. Given after
    it, marketing was reopened all the same (START reopened any marketing opt-out). Both stay
    closed now, the withdrawal current; a later STOP and START reopen nothing either."""
    texted, n = own_texted
    number, stop_at = f"+447700900{n}", time.time() - 5
    assert await reply(shared.settings, number, "STOP", age=5) == 200
    for purpose in ("marketing", "transactional"):
        await shared.profiles.SetConsent(ppb.SetConsentRequest(
            user_id=texted, channel="sms", opted_in=False, source="preferences",
            purpose=purpose, timestamp=stop_at + withdrawn))
    assert await reply(shared.settings, number, "START") == 200
    closed = {"marketing": (False, "preferences"), "transactional": (False, "preferences")}
    assert await sms_states(shared.profiles, texted) == closed
    assert await reply(shared.settings, number, "Stop") == 200  # another body: no replay
    assert await reply(shared.settings, number, "Start!") == 200
    assert await sms_states(shared.profiles, texted) == closed


@contextlib.contextmanager
def _between_read_and_write(stops, loop, change, seconds: float = 10.0):
    """Within: `change()` (a coroutine function, run on `loop`) commits while the STOP
    handling `stops` is between its read of the profiles at a number and its write
    (`SmsStops._holding` runs in a thread there)."""
    holding = stops._holding

    def changed_first(ids, metas, held):
        asyncio.run_coroutine_threadsafe(change(), loop).result(seconds)
        return holding(ids, metas, held)

    stops._holding = changed_first
    try:
        yield
    finally:
        del stops._holding


async def test_a_withdrawal_committed_while_a_start_is_handled_is_kept(
        module_messages_server, own_texted, shared):
    """A START reads the profiles at its number, decides what the STOP closed, then writes its
    opt-ins. A SetConsent opt-out committed in between (here: while `SmsStops._holding` runs,
    after the read) was overwritten by the START's later-dated opt-in: the withdrawal lost.
    The decision is made again in the write transaction now: the withdrawal stays current."""
    import asyncio
    stops, loop = module_messages_server[0].stops, asyncio.get_running_loop()
    texted, n = own_texted
    number, stop_at = f"+447700900{n}", time.time() - 5
    assert await reply(shared.settings, number, "STOP", age=5) == 200

    async def withdraw():
        for purpose in ("marketing", "transactional"):
            await shared.profiles.SetConsent(ppb.SetConsentRequest(
                user_id=texted, channel="sms", opted_in=False, source="preferences",
                purpose=purpose, timestamp=stop_at + 2))

    with _between_read_and_write(stops, loop, withdraw):
        assert await reply(shared.settings, number, "START") == 200
    closed = {"marketing": (False, "preferences"), "transactional": (False, "preferences")}
    assert await sms_states(shared.profiles, texted) == closed


async def test_an_opt_in_dropped_from_the_history_while_a_start_is_handled_is_not_reopened(
        module_messages_server, own_texted, shared):
    """With sms `opt_in` (the default), a START reopens marketing only where the history holds
    an opt-in (it gives no consent not given before). That was read before the write alone:
    changes committed while the START was handled (after it read the profiles at the number)
    that pushed the user's only sms opt-in out of the bounded history
    (`Limits.consent_history`) left it reopened all the same. The write transaction checks it
    again now (`contact.consent.reopenable`): marketing stays closed, and the transactional
    texts the STOP closed reopen, as they need no opt-in."""
    import asyncio

    from server.limits import Limits
    stops, loop = module_messages_server[0].stops, asyncio.get_running_loop()
    texted, n = own_texted
    number = f"+447700900{n}"
    assert await reply(shared.settings, number, "STOP", age=5) == 200

    async def crowd_out():  # signup, STOP's two, then these: the signup opt-in goes
        for i in range(Limits().consent_history - 2):
            await shared.profiles.SetConsent(ppb.SetConsentRequest(
                user_id=texted, channel="email", opted_in=bool(i % 2), source="preferences",
                timestamp=time.time() - 4))

    with _between_read_and_write(stops, loop, crowd_out, seconds=30):
        assert await reply(shared.settings, number, "START") == 200
    history = (await shared.profiles.GetProfile(ppb.GetProfileRequest(
        user_id=texted))).consent_history
    assert ("sms", "marketing", True, "signup") not in [  # crowded out, as the write saw
        (c.channel, c.purpose, c.opted_in, c.source) for c in history]
    assert await sms_states(shared.profiles, texted) == {
        "marketing": (False, "sms reply STOP"), "transactional": (True, "sms reply START")}

async def test_an_opt_in_committed_while_a_carrier_stop_is_handled_is_closed(
        module_messages_server, own_texted, shared):
    """A carrier's 21610 closes only what is open, read before its write: an opt-in committed
    in between (after a STOP, while `SmsStops._holding` runs) stayed open, texted though the
    carrier blocks the number. What is open is read in the write transaction now."""
    import asyncio
    server, loop = module_messages_server[0], asyncio.get_running_loop()
    texted, n = own_texted
    number = f"+447700900{n}"
    assert await reply(shared.settings, number, "STOP", age=5) == 200

    async def opt_in():
        for purpose in ("marketing", "transactional"):
            await shared.profiles.SetConsent(ppb.SetConsentRequest(
                user_id=texted, channel="sms", opted_in=True, source="preferences",
                purpose=purpose, timestamp=time.time() - 2))

    with _between_read_and_write(server.stops, loop, opt_in):
        assert await asyncio.create_task(server.stops.stop(number, time.time()),
                                         context=server.context) == 1  # under its keys
    states = await sms_states(shared.profiles, texted)
    assert {p: opted_in for p, (opted_in, _) in states.items()} == {
        "marketing": False, "transactional": False}


async def _settled(profiles, user: str, purpose: str, want: tuple, seconds: float = 10.0):
    """`sms_states(...)[purpose]` once it is `want` (the shared opt-out is detached:
    `SharedOptOut`), or as it is after `seconds`."""
    import asyncio
    end = time.monotonic() + seconds
    while (got := (await sms_states(profiles, user)).get(purpose)) != want \
            and time.monotonic() < end:
        await asyncio.sleep(0.05)
    return got


async def test_a_start_never_reopens_a_clients_sms_unsubscribe_event(own_texted, shared):
    """The user unsubscribed in the client's preference centre: its sms `unsubscribe` event
    (TrackEvents) opted them out, and the other profile at their number (`SharedOptOut`), with
    the source a carrier's 21610 records too, so a STOP and START from the number reopened
    both, as if the server had closed them. A client's event is the user's withdrawal now:
    START reopens only what the STOP closed (the transactional texts)."""
    texted, n = own_texted
    number, other = f"+447700900{n}", f"{texted}-b"
    await shared.profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=other, attributes={"phone": number}))
    await shared.profiles.SetConsent(ppb.SetConsentRequest(  # before the event: it is reached
        user_id=other, channel="sms", opted_in=True, source="signup", timestamp=time.time() - 60))
    tracked = await shared.profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=f"prefs-{n}", user_id=texted, type="unsubscribe", channel="sms",
        timestamp=time.time() - 10)]))
    assert (tracked.accepted, list(tracked.rejected)) == (1, [])
    shared_out = (False, "unsubscribe event (shared address)")
    assert await _settled(shared.profiles, other, "marketing", shared_out) == shared_out
    assert await reply(shared.settings, number, "STOP", age=5) == 200
    assert await reply(shared.settings, number, "START") == 200
    states = [await sms_states(shared.profiles, u) for u in (texted, other)]
    assert states == [{"marketing": (False, "unsubscribe event"),
                       "transactional": (True, "sms reply START")},
                      {"marketing": shared_out, "transactional": (True, "sms reply START")}]


async def test_a_clients_event_may_not_carry_the_servers_stop_mark(own_texted, shared):
    """The mark that makes an unsubscribe event the server's own (a carrier's 21610, whose
    opt-out a START reopens: `validation.STOP_MARK`) is refused on a client's event, naming
    it; nothing is stored, and a START leaves the user's sms marketing as it was."""
    texted, n = own_texted
    mark = "tailor.stop"  # `validation.STOP_MARK`
    tracked = await shared.profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id=f"forged-{n}", user_id=texted, type="unsubscribe", channel="sms",
        timestamp=time.time() - 10, attributes={mark: "carrier"})]))
    assert tracked.accepted == 0 and [r.index for r in tracked.rejected] == [0]
    assert tracked.rejected[0].reason.startswith(f"attributes key {mark!r} is reserved")

    async def batches():  # TrackEventStream refuses it alike
        yield ppb.TrackEventsRequest(events=[ppb.Event(
            event_id=f"forged-{n}-s", user_id=texted, type="unsubscribe", channel="sms",
            timestamp=time.time() - 10, attributes={mark: "carrier"})])
    streamed = await shared.profiles.TrackEventStream(batches())
    assert streamed.accepted == 0 and [r.index for r in streamed.rejected] == [0]
    assert streamed.rejected[0].reason == tracked.rejected[0].reason
    assert await sms_states(shared.profiles, texted) == {"marketing": (True, "signup")}

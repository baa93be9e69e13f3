"""Bounce and complaint reports on the public endpoint, end to end: an email delivered to a real
SMTP sink, its Message-ID reported as bounced in a signed POST, the address suppressed, the
user's next message suppressed."""
import asyncio
import base64
import json
import logging
import time

import aiohttp
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.contact.consent import STOP_EVENT_SOURCE, STOP_SHARED_SOURCE
from server.http.signing import sign

from .conftest import email_spec, relayed
from .test_send_campaign import audience

REPORT_KEY, OLD_REPORT_KEY = b"email-provider-report-secret", b"its-previous-secret"


@pytest.fixture
def settings(settings, sink):
    (settings.secrets_dir / "delivery-events.keys").write_text("".join(
        f"{kid}:{base64.b64encode(key).decode()}\n"
        for kid, key in (("r2", REPORT_KEY), ("r1", OLD_REPORT_KEY))))
    return relayed(settings, sink)


async def report(settings, body: dict | bytes, key: bytes = REPORT_KEY,
                 signature: str | None = None) -> tuple[int, str]:
    """POST a report (a dict as JSON, or raw bytes) signed under `key` (or with `signature`)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    timestamp = str(int(time.time()))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{settings.public_http_port}/delivery/events",
                             data=raw, headers={"Content-Type": "application/json",
                                                "X-Tailor-Timestamp": timestamp,
                                                "X-Tailor-Signature": signature or sign(
                                                    key, raw, timestamp)}) as res:
            return res.status, await res.text()


async def listed(profiles, address: str) -> ppb.Suppression:
    return await profiles.CheckSuppression(ppb.SuppressionAddress(email=address))


async def delivered(messaging, user: str) -> str:
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=True))
    assert msg.delivered
    return msg.decision_id


async def test_a_bounce_by_message_id_suppresses_the_address_and_the_next_message(
        settings, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["b1"])
    decision = await delivered(messaging, "b1")
    [message_id] = sink.message_ids
    status, text = await report(settings, {"type": "bounce", "message_id": message_id,
                                           "address": "b1@example.com"})
    assert (status, json.loads(text)) == (200, {"user_found": True, "address_listed": True})
    got = await listed(profiles, "B1@Example.com")
    assert (got.suppressed, got.reason) == (True, "bounce")
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "email_bounce"]
    assert [(e.user_id, e.attributes["decision_id"]) for e in events] == [("b1", decision)]
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="b1", deliver=True))
    assert (again.suppressed, again.reason, again.delivered) == (True, "suppressed_address", False)
    assert len(sink.message_ids) == 1  # nothing more went out


async def test_a_complaint_naming_only_the_message_lists_the_users_address(
        settings, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["c1"])
    decision = await delivered(messaging, "c1")
    assert not (await listed(profiles, "c1@example.com")).suppressed
    status, text = await report(settings, {"type": "complaint", "decision_id": decision},
                                key=OLD_REPORT_KEY)  # every key of the ring verifies
    assert (status, json.loads(text)["user_found"]) == (200, True)
    got = await listed(profiles, "c1@example.com")
    assert (got.suppressed, got.reason) == (True, "complaint")


async def test_an_address_alone_is_listed_and_bad_reports_change_nothing(settings, profiles):
    assert (await report(settings, {"type": "bounce", "address": "x@example.com"},
                         key=b"forged"))[0] == 401
    status, text = await report(settings, {"type": "delivered", "address": "x@example.com"})
    assert status == 400 and "type" in text
    assert (await report(settings, {"type": "bounce", "address": "not an address"}))[0] == 400
    assert (await report(settings, {"type": "bounce"}))[0] == 400
    assert not (await listed(profiles, "x@example.com")).suppressed
    status, text = await report(settings, {"type": "bounce", "address": "x@example.com",
                                           "message_id": "<unknown-decision@tailor.invalid>"})
    assert (status, json.loads(text)) == (200, {"user_found": False, "address_listed": True})
    assert (await listed(profiles, "x@example.com")).reason == "bounce"


async def test_a_report_with_a_bad_address_records_nothing_for_its_user(
        settings, sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["p1"])
    decision = await delivered(messaging, "p1")
    status, text = await report(settings, {"type": "bounce", "decision_id": decision,
                                           "address": "not an address"})
    assert status == 400 and "address.email" in text
    assert [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
            if e.type == "email_bounce"] == []
    assert not (await listed(profiles, "p1@example.com")).suppressed
    status, text = await report(settings, {"type": "bounce", "decision_id": decision,
                                           "address": "p1@example.com"})  # the provider's fix
    assert (status, json.loads(text)) == (200, {"user_found": True, "address_listed": True})


async def test_a_non_ascii_signature_is_401_and_deep_nesting_400_never_a_server_error(
        settings, profiles, caplog):
    status, _ = await report(settings, {"type": "bounce", "address": "n@example.com"},
                             signature="sha256=\u00e9")
    assert status == 401
    status, text = await report(settings, b"[" * 5000 + b"]" * 5000)  # signed, but absurd
    assert status == 400 and "not a JSON report" in text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not (await listed(profiles, "n@example.com")).suppressed


async def test_a_body_that_does_not_decode_is_400_not_a_server_error(settings, profiles, caplog):
    """The body is read before its signature is checked, so anyone could send one declared
    gzip that is not (or whose chunking breaks off): aiohttp raised RequestPayloadError out of
    the handler, a 500 and an ERROR traceback per request. Now 400, nothing listed."""
    raw = json.dumps({"type": "bounce", "address": "z@example.com"}).encode()
    timestamp = str(int(time.time()))
    async with aiohttp.ClientSession() as http:
        async with http.post(f"http://127.0.0.1:{settings.public_http_port}/delivery/events",
                             data=raw, headers={"Content-Encoding": "gzip",
                                                "X-Tailor-Timestamp": timestamp,
                                                "X-Tailor-Signature": sign(REPORT_KEY, raw,
                                                                           timestamp)}) as res:
            assert res.status == 400 and "body" in await res.text()
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not (await listed(profiles, "z@example.com")).suppressed


async def test_a_lone_surrogate_in_a_report_is_400_naming_the_field(settings, profiles, caplog):
    """JSON may escape half a UTF-16 pair (`\\ud800`), which Python decodes to a str that has no
    UTF-8 form: the decision index key and the address's keyed hash could not be built, a 500
    and an ERROR traceback. (gRPC strings are UTF-8 already; the JSON webhooks are the way in.)"""
    for report_, field in (({"type": "bounce", "decision_id": "d\ud800"}, "decision_id"),
                           ({"type": "bounce", "address": "s\ud800@example.com"}, "address")):
        raw = json.dumps(report_).encode()  # ASCII: the surrogate travels as its escape
        status, text = await report(settings, raw)
        assert (status, text.split(":")[0]) == (400, field if field != "address" else
                                                "address.email")
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_a_report_racing_delete_profile_does_not_bring_the_profile_back(
        settings, sink, tailor_server, campaigns, profiles, messaging):
    """The report's user is found through the decision log, then its event is recorded, dated
    then: a DeleteProfile committed in between had the erased user re-created by the bounce
    event (newer than the erasure). The event is dated when the report arrived, so the
    ingestion refuses it as from before the erasure."""
    import grpc
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["b9"])
    await delivered(messaging, "b9")
    [message_id] = sink.message_ids
    owners = tailor_server.campaigns
    lookup = owners.decision_owner

    async def erased_after(decision_id):  # DeleteProfile commits after the lookup
        found = await lookup(decision_id)
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id="b9"))
        return found

    owners.decision_owner = erased_after
    try:
        status, _ = await report(settings, {"type": "bounce", "message_id": message_id})
    finally:
        del owners.decision_owner
    assert status == 200
    with pytest.raises(grpc.RpcError) as err:
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="b9"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_field_that_is_not_a_string_is_400_naming_it(settings, profiles):
    """Read as its text, a decision_id of {"a": 1} (or a number, an array) found no message and
    the report answered 200 'nothing happened': the provider never learnt its reports were
    malformed."""
    for bad, field in (({"decision_id": {"a": 1}}, "decision_id"),
                       ({"decision_id": 12345, "address": "t@example.com"}, "decision_id"),
                       ({"message_id": ["<d@tailor.invalid>"]}, "message_id"),
                       ({"address": ["t@example.com"]}, "address")):
        status, text = await report(settings, {"type": "bounce", **bad})
        assert (status, text.split(":")[0]) == (400, field), (bad, text)
    assert (await report(settings, {"type": ["bounce"], "address": "t@example.com"}))[0] == 400
    assert not (await listed(profiles, "t@example.com")).suppressed


async def test_a_bounce_of_an_address_the_user_no_longer_has_lists_only_that_one(
        settings, sink, campaigns, profiles, messaging):
    """A late report of a message to the address the user had: that address is listed, their new
    one is not (it was: the report's event listed the profile's address of the moment, which
    never bounced), and their next message goes to it."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["m1"])
    await delivered(messaging, "m1")
    [message_id] = sink.message_ids
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="m1", attributes={"email": "m1.now@example.com"}))
    status, text = await report(settings, {"type": "bounce", "message_id": message_id,
                                           "address": "m1@example.com"})
    assert (status, json.loads(text)) == (200, {"user_found": True, "address_listed": True})
    assert (await listed(profiles, "m1@example.com")).suppressed
    assert not (await listed(profiles, "m1.now@example.com")).suppressed
    await delivered(messaging, "m1")
    assert sink.arrived[-1][1] == ["m1.now@example.com"]

async def _sms_campaign_and_users(campaigns, profiles, numbers) -> None:
    """Campaign "sms" (one variant) and users s1, s2... holding `numbers`, opted in to sms."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": "Hi"})])))
    for i, number in enumerate(numbers, 1):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=f"s{i}", attributes={"phone": number}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=f"s{i}", channel="sms",
                                                        opted_in=True, source="signup"))


async def test_an_sms_status_report_lists_a_gone_number_and_not_an_unreachable_one(
        settings, campaigns, profiles, messaging):
    """The SMS provider's status callback, as a report with `channel: sms`: a code saying the
    number is gone (30005, unknown handset) lists it and records the user's `sms_bounce` event;
    30003 (a phone off) lists nothing; one without a code is 400. Before, `channel` was not
    read and the number was refused as an email address (400)."""
    await _sms_campaign_and_users(campaigns, profiles, ("+447700900701", "+447700900702"))
    answers = []
    for user, number, code in (("s1", "+447700900701", 30005), ("s2", "+447700900702", "30003")):
        decision = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="sms", user_id=user))).decision_id
        status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                               "decision_id": decision, "address": number,
                                               "error_code": code})
        answers.append((status, json.loads(text) if status == 200 else text))
    assert answers == [(200, {"user_found": True, "address_listed": True}),
                       (200, {"user_found": True, "address_listed": False})]
    numbers = [(await profiles.CheckSuppression(ppb.SuppressionAddress(phone=n))).suppressed
               for n in ("+447700900701", "+447700900702")]
    assert numbers == [True, False]
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "sms_bounce"]
    assert [(e.user_id, e.channel) for e in events] == [("s1", "sms")]
    status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                           "address": "+447700900702"})
    assert status == 400 and "error_code" in text
    for code in (10 ** 400, -30005, "1" * 10):  # untrusted: no code, not one copied whole
        status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                               "address": "+447700900702", "error_code": code})
        assert status == 400 and "error_code" in text and "at most 9 digits" in text
    # a push token gone is the push webhook's 410 at the send, no report: push is no channel
    # here, though the suppression list holds push tokens now
    status, text = await report(settings, {"type": "bounce", "channel": "push",
                                           "address": "fcm-token", "error_code": 30005})
    assert status == 400 and "channel" in text and "(known: email, sms)" in text, text


async def test_an_sms_status_report_of_a_stop_to_the_carrier_opts_the_user_out(
        settings, campaigns, profiles, messaging):
    """The status callback of a text refused with 21610 (its number's owner texted STOP to
    the sender) records the user's `unsubscribe` event on sms, their opt-out, and lists
    nothing; one reporting a number the profile no longer holds records nothing. Before, 21610
    recorded nothing either way, and every campaign texted the number again."""
    await _sms_campaign_and_users(campaigns, profiles, ("+447700900711", "+447700900712"))
    answers = []
    for user, number in (("s1", "+447700900711"), ("s2", "+447700900799")):  # s2: not theirs
        decision = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="sms", user_id=user))).decision_id
        status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                               "decision_id": decision, "address": number,
                                               "error_code": 21610})
        answers.append((status, json.loads(text)))
    assert answers == [(200, {"user_found": True, "address_listed": False})] * 2
    consent = [(await profiles.GetProfile(ppb.GetProfileRequest(user_id=u))).consent["sms"]
               .opted_in for u in ("s1", "s2")]
    assert consent == [False, True]
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "unsubscribe"]
    assert [(e.user_id, e.channel) for e in events] == [("s1", "sms")]
    assert not (await profiles.CheckSuppression(ppb.SuppressionAddress(
        phone="+447700900711"))).suppressed


async def test_an_sms_status_report_of_a_carrier_stop_naming_only_the_number_stops_its_profiles(
        settings, campaigns, profiles, messaging):
    """A 21610 status report naming the number alone (no message) reaches the profiles the
    address index holds at that number, as a STOP texted from it does: their marketing and
    transactional texts closed; a profile at another number keeps its texts. Before, it
    opted out nobody (no message, no user), and the next campaign texted the number again."""
    await _sms_campaign_and_users(campaigns, profiles, ("+447700900721", "+447700900722"))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="code", channel="sms", policy="fixed", purpose="transactional",
        variants=[cpb.Variant(id="a", content={"text": "Your code"})])))
    status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                           "address": "+44 7700 900721", "error_code": 21610})
    assert (status, json.loads(text)) == (200, {"user_found": False, "address_listed": False})
    consent = [(await profiles.GetProfile(ppb.GetProfileRequest(user_id=u))).consent["sms"]
               .opted_in for u in ("s1", "s2")]
    assert consent == [False, True]
    receipts = [await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="code", user_id=u)) for u in ("s1", "s2")]
    assert [(r.suppressed, r.reason) for r in receipts] == [(True, "no_consent"), (False, "")]


async def _sms_history(profiles, user: str) -> list[tuple[str, bool, str]]:
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
    return [(c.purpose, c.opted_in, c.source) for c in got.consent_history if c.channel == "sms"]


async def test_a_carrier_stop_reported_twice_counts_once_and_adds_no_consent_history(
        settings, campaigns, profiles, messaging):
    """A provider retrying its 21610 status callback (the same report delivered twice): the
    second changes nothing, for the user (one event, no further history entry) nor for the
    other profiles at the number. Before, each repeat wrote the carrier STOP again over the
    unsubscribe event's opt-out (its source another), one more history entry per profile. A
    START from the number then reopens what the 21610 closed, but not a transactional opt-out
    given through SetConsent (s3's)."""
    from .test_sms_inbound import reply
    number = "+447700900731"
    await _sms_campaign_and_users(campaigns, profiles, (number,) * 3)
    await profiles.SetConsent(ppb.SetConsentRequest(
        user_id="s3", channel="sms", purpose="transactional", opted_in=False, source="preferences"))
    decision = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id="s1"))).decision_id
    body = {"type": "bounce", "channel": "sms", "decision_id": decision, "address": number,
            "error_code": 21610}
    assert (await report(settings, body))[0] == 200
    end = time.monotonic() + 10  # the others' shared opt-out is detached (`SharedOptOut`)
    while time.monotonic() < end and [(await _sms_history(profiles, u))[-1][2]
                                      for u in ("s2", "s3")] != [STOP_SHARED_SOURCE] * 2:
        await asyncio.sleep(0.05)
    once = [await _sms_history(profiles, u) for u in ("s1", "s2", "s3")]
    assert [len(h) for h in once] == [4, 4, 4]  # signup (s3: and `preferences`), 21610, event
    assert [h[-1][2] for h in once] == [STOP_EVENT_SOURCE] + [STOP_SHARED_SOURCE] * 2  # marked
    await asyncio.sleep(1.0)  # another signature second: the provider's retry, no replay
    assert (await report(settings, body))[0] == 200
    assert [await _sms_history(profiles, u) for u in ("s1", "s2", "s3")] == once
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "unsubscribe"]
    assert [(e.user_id, e.channel) for e in events] == [("s1", "sms")]
    await asyncio.sleep(1.0)  # START signed after the report's time (whole seconds)
    assert await reply(settings, number, "START") == 200
    states = [{c.purpose: (c.opted_in, c.source) for c in (await profiles.GetProfile(
        ppb.GetProfileRequest(user_id=u))).consents if c.channel == "sms"}
        for u in ("s1", "s2", "s3")]
    assert states == [{"marketing": (True, "sms reply START"),
                       "transactional": (True, "sms reply START")}] * 2 + [
        {"marketing": (True, "sms reply START"), "transactional": (False, "preferences")}]


async def test_a_carrier_stop_naming_only_the_message_stops_the_number_texted_not_the_new_one(
        settings, campaigns, profiles, messaging):
    """A 21610 report naming the message alone, after its user moved to a number another
    profile holds: the number the user was texted at is stopped (for s3, who holds it), not
    the new one, whose carrier blocks nothing: s2's receipts still go, and the user's (their
    marketing follows their unsubscribe event, and s2's the event to their address, as any
    such event's does). Before, the number the user's profile holds now was stopped, s2's
    receipts with it, and s3 kept theirs."""
    await _sms_campaign_and_users(campaigns, profiles, ("+447700900741", "+447700900742",
                                                        "+447700900741"))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="code", channel="sms", policy="fixed", purpose="transactional",
        variants=[cpb.Variant(id="a", content={"text": "Your code"})])))
    decision = (await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="sms", user_id="s1"))).decision_id  # to +447700900741, s3's number too
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="s1", attributes={"phone": "+447700900742"}))  # s2's
    status, text = await report(settings, {"type": "bounce", "channel": "sms",
                                           "decision_id": decision, "error_code": 21610})
    assert (status, json.loads(text)) == (200, {"user_found": True, "address_listed": False})
    receipts = [await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="code", user_id=u)) for u in ("s1", "s2", "s3")]
    assert [(r.suppressed, r.reason) for r in receipts] == [
        (False, ""), (False, ""), (True, "no_consent")]


async def test_a_report_naming_a_damaged_decision_lists_the_address(
        tailor_server, settings, sink, campaigns, profiles, messaging, caplog):
    """The report's user is read from its decision's record; a damaged one (tests/server/
    test_damaged_decisions.py) raised: 500 at every retry of the provider, the address never
    listed. Now the report is applied as one naming an unknown decision: by its address."""
    from server.store.keys import decision_key
    from tests.server.test_damaged_contacts import damage_record
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["b9"])
    decision = await delivered(messaging, "b9")
    damage_record(tailor_server.store, "decisions", decision_key("b9", decision))
    status, text = await report(settings, {"type": "complaint", "decision_id": decision,
                                           "address": "b9@example.com"})
    assert status == 200, text
    assert json.loads(text) == {"user_found": False, "address_listed": True}
    got = await listed(profiles, "b9@example.com")
    assert (got.suppressed, got.reason) == (True, "complaint")
    assert any(f"decision {decision}" in r.getMessage() and "damaged" in r.getMessage()
               for r in caplog.records)

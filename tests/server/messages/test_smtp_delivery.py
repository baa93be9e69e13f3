"""deliver=true: email over STARTTLS to a real SMTP server (aiosmtpd) on loopback, one reused
connection, both parts and the headers as sent, the unsubscribe link working end to end."""
import email
import ssl
from email import policy

import aiohttp
import pytest
from aiosmtpd.controller import Controller

from loadtests.certs import CertificateAuthority
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from tests.conftest import free_port

from .conftest import email_spec, opt_in, stored_attributes


class Sink:
    """Keeps every message it is handed, with the connection and TLS state it came over."""

    def __init__(self):
        self.received = []

    async def handle_DATA(self, server, session, envelope):
        self.received.append({"peer": session.peer, "tls": session.ssl is not None,
                              "rcpt": list(envelope.rcpt_tos),
                              "mail": email.message_from_bytes(envelope.content,
                                                               policy=policy.default)})
        return "250 OK"


@pytest.fixture
def smtp_sink(tmp_path):
    ca = CertificateAuthority(tmp_path / "ca")
    issued = ca.issue("smtp")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(issued.cert, issued.key)
    sink = Sink()
    controller = Controller(sink, hostname="127.0.0.1", port=free_port(), tls_context=ctx,
                            require_starttls=True)  # a plain-text send is refused
    controller.start()
    yield sink, controller.port, ca.cert
    controller.stop()


@pytest.fixture
def settings(settings, smtp_sink):
    _, port, ca = smtp_sink
    return settings.model_copy(update={"smtp_host": "127.0.0.1", "smtp_port": port,
                                       "smtp_security": "starttls", "smtp_ca_file": ca})


async def test_delivered_email_has_both_parts_headers_and_a_working_unsubscribe_link(
        smtp_sink, campaigns, profiles, messaging, channel):
    sink = smtp_sink[0]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(
        preheader="Picked for {{ first_name | default('you') }}")))
    sent = []
    for user, name in (("m1", "Åsa <3"), ("m2", "Bo")):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"first_name": name, "email": f"{user}@example.com"}))
        await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel="email",
                                                        opted_in=True, source="signup"))
        msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id=user, deliver=True))
        assert msg.delivered
        sent.append(msg)
    assert [r["rcpt"] for r in sink.received] == [["m1@example.com"], ["m2@example.com"]]
    assert all(r["tls"] for r in sink.received)
    assert sink.received[0]["peer"] == sink.received[1]["peer"]  # one connection, reused
    mail = sink.received[0]["mail"]
    assert mail["Message-ID"] == f"<{sent[0].decision_id}@tailor.invalid>"
    assert mail["List-Unsubscribe"] == f"<{sent[0].unsubscribe_url}>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Subject"] == "Hi Åsa <3" and mail["To"] == "m1@example.com"
    assert mail.get_content_type() == "multipart/alternative"
    text = mail.get_body(("plain",)).get_content()
    html = mail.get_body(("html",)).get_content()
    assert text.strip() == f"Hi Åsa <3: {sent[0].unsubscribe_url}"
    assert "<p>Hi Åsa &lt;3,</p>" in html and "Picked for Åsa &lt;3</div>" in html
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "email_sent"]
    assert sorted(e.attributes["decision_id"] for e in events) == sorted(m.decision_id for m in sent)
    url = mail["List-Unsubscribe"].strip("<>")
    async with aiohttp.ClientSession() as http:
        async with http.post(url, data={"List-Unsubscribe": "One-Click"}) as res:
            assert res.status == 200
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="m1"))
    assert got.consent["email"].opted_in is False
    got = await profiles.GetProfile(ppb.GetProfileRequest(user_id="m2"))
    assert got.consent["email"].opted_in is True


async def test_deliver_without_an_email_attribute_is_failed_precondition(smtp_sink, campaigns,
                                                                         profiles, messaging):
    import grpc
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await opt_in(profiles, "noaddr")  # may be emailed, but has no address
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                 user_id="noaddr", deliver=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "email" in err.value.details() and smtp_sink[0].received == []


@pytest.mark.parametrize("bad", ["jos\u00e9@example.com", "a b@example.com",
                                 "x@example.com\nBcc: evil@example.org"])
async def test_deliver_to_an_address_smtp_cannot_carry_is_failed_precondition(
        tailor_server, smtp_sink, campaigns, profiles, messaging, caplog, bad):
    """Each stored as a Tailor before UpsertAttributes checked addresses stored it (it refuses
    the space and the line break now, and takes the accented address, which the suppression
    list reads: test_address_attributes)."""
    import grpc
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await stored_attributes(tailor_server, "odd", email=bad)
    await opt_in(profiles, "odd")
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                 user_id="odd", deliver=True))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "`email` attribute" in err.value.details() and bad not in err.value.details()
    assert smtp_sink[0].received == [] and bad.split("@")[0] not in caplog.text


async def test_an_address_on_the_suppression_list_is_suppressed_and_nothing_is_sent(
        smtp_sink, campaigns, profiles, messaging):
    sink = smtp_sink[0]
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    for user in ("listed", "clear"):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": f"{user.title()}@Example.com"}))
        await opt_in(profiles, user)
    await profiles.AddSuppression(ppb.AddSuppressionRequest(  # normalized: trimmed, lower-cased
        address=ppb.SuppressionAddress(email=" listed@example.com"), reason="bounce"))
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="listed", deliver=True))
    assert (msg.suppressed, msg.reason, msg.channel) == (True, "suppressed_address", "email")
    assert not msg.delivered and not msg.parts and not msg.headers and not msg.holdout
    ok = await messaging.ComposeMessage(mpb.ComposeMessageRequest(  # the sink does receive
        campaign_id="mail", user_id="clear", deliver=True))
    assert ok.delivered and not ok.suppressed
    assert [r["rcpt"] for r in sink.received] == [["Clear@Example.com"]]
    events = [e async for e in profiles.ExportEvents(ppb.ExportEventsRequest())
              if e.type == "email_sent"]
    assert [e.attributes["decision_id"] for e in events] == [ok.decision_id]
    logged = {r.decision_id: (r.user_id, r.status, r.reason) async for r in campaigns.ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True,
                                   include_suppressed=True))}
    assert logged[msg.decision_id] == ("listed", "suppressed", "suppressed_address")

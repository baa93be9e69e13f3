"""DKIM: with a key, selector and domain configured, the email that arrives at a real SMTP sink
verifies with dkimpy against the public key (as a receiver would look it up in DNS), and the
signature covers the one-click unsubscribe headers."""
import base64

import dkim
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, relayed
from .test_send_campaign import audience

KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def dns_record(name: bytes, timeout: int = 5) -> bytes | None:
    """The TXT record `<selector>._domainkey.<domain>` a receiver would find."""
    if name != b"mail2026._domainkey.shop.example.":
        return None
    der = KEY.public_key().public_bytes(serialization.Encoding.DER,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    return b"v=DKIM1; k=rsa; p=" + base64.b64encode(der)


@pytest.fixture
def settings(settings, sink, tmp_path):
    pem = tmp_path / "dkim.pem"
    pem.write_bytes(KEY.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    return relayed(settings, sink, smtp_from="Shop <news@shop.example>", dkim_key_file=pem,
                   dkim_selector="mail2026", dkim_domain="shop.example")


async def test_a_delivered_email_verifies_and_signs_the_unsubscribe_headers(
        sink, campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await audience(profiles, ["k1"])
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="k1", deliver=True))
    assert msg.delivered
    [raw] = sink.raw
    assert raw.startswith(b"DKIM-Signature:")
    assert dkim.verify(raw, dnsfunc=dns_record)
    signed = dkim.DKIM(raw)
    signed.verify(dnsfunc=dns_record)
    covered = {name.lower() for name, _ in signed.signed_headers}
    assert {b"list-unsubscribe", b"list-unsubscribe-post", b"message-id", b"from"} <= covered
    tampered = raw.replace(b"To: k1@example.com", b"To: k2@example.com")
    assert tampered != raw and not dkim.verify(tampered, dnsfunc=dns_record)


def test_a_half_configured_dkim_refuses_to_start(settings):
    from server.errors import FailedPrecondition
    from server.messages.dkim_signer import DkimSigner
    with pytest.raises(FailedPrecondition, match="together"):
        DkimSigner.from_settings(settings.model_copy(update={"dkim_selector": ""}))

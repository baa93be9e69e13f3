"""PreviewMessage of a real user masks their PII for a caller without `pii-reader`, as GetProfile
does (an admin may preview, not read profiles); a sample profile is the caller's own input."""
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from server.security import tokens

from .conftest import email_spec

ROLES = {"author": ["admin"], "reader": ["admin", "pii-reader"], "ingest": ["tracker"]}
TEXT = ("{{ unsubscribe_url }}\n{{ profile.email }} {{ profile.phone }} {{ last_name }} "
        "{{ profile.tier }}")


@pytest.fixture
def auth(tmp_path) -> dict[str, tuple]:
    """Per principal, the call metadata of its bearer token."""
    path = tmp_path / "auth.toml"
    return {name: (("authorization", f"Bearer {tokens.mint(path, name, roles)}"),)
            for name, roles in ROLES.items()}


@pytest.fixture
def settings(settings, auth, tmp_path):
    return settings.model_copy(update={"auth_config": tmp_path / "auth.toml"})


async def preview_text(messaging, metadata, **request) -> str:
    msg = await messaging.PreviewMessage(mpb.PreviewMessageRequest(campaign_id="mail", **request),
                                         metadata=metadata)
    return msg.parts["text"].split("\n", 1)[1]


async def test_a_preview_of_a_user_is_masked_without_pii_reader(campaigns, profiles, messaging,
                                                                auth):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(text=TEXT)),
                                   metadata=auth["author"])
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id="carol", attributes={
        "email": "carol@example.com", "phone": "+447700900999", "last_name": "Secretname",
        "tier": "gold"}), metadata=auth["ingest"])
    assert await preview_text(messaging, auth["author"], user_id="carol") == \
        "c***@example.com +*** S*** gold"
    assert await preview_text(messaging, auth["reader"], user_id="carol") == \
        "carol@example.com +447700900999 Secretname gold"
    sample = {"email": "ann@example.com", "phone": "+1", "last_name": "Lee", "tier": "new"}
    assert await preview_text(messaging, auth["author"], sample_attributes=sample) == \
        "ann@example.com +1 Lee new"


async def test_a_preview_of_a_user_holds_no_working_unsubscribe_link(campaigns, profiles,
                                                                     messaging, auth):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(text=TEXT)),
                                   metadata=auth["author"])
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="dave", attributes={"email": "dave@example.com", "phone": "+447700900998",
                                    "last_name": "Day", "tier": "new"}), metadata=auth["ingest"])
    msg = await messaging.PreviewMessage(mpb.PreviewMessageRequest(
        campaign_id="mail", user_id="dave"), metadata=auth["reader"])
    assert msg.unsubscribe_url.endswith("/u/preview")
    assert msg.parts["text"].split("\n", 1)[0] == msg.unsubscribe_url
    assert "/u/preview" in msg.headers["List-Unsubscribe"]

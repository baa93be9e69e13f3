"""ComposeMessage renders from the profile its contact checks read: one read snapshot of the
user's profile per message, against a real server."""
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, interested_user, opt_in


async def test_a_message_is_rendered_from_the_profile_read_for_its_contact_checks(
        tailor_server, campaigns, profiles, messaging, catalog, monkeypatch):
    repo, reads = tailor_server.profiles.repo, []
    original = repo.states_and_meta

    def counted(user_ids, with_states=True, txn=None):
        reads.append((list(user_ids), with_states))
        return original(user_ids, with_states, txn)

    monkeypatch.setattr(repo, "states_and_meta", counted)
    spec = email_spec(subject="Hi {{ first_name }}, {{ interests[0] }}")
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    category = catalog["category"][catalog["ids"][0]]
    await interested_user(profiles, catalog, "u1", category, first_name="Ann")
    await opt_in(profiles, "u1")
    reads.clear()
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="u1"))
    assert not msg.suppressed and msg.parts["subject"] == f"Hi Ann, {category}"
    assert reads == [(["u1"], True)]  # the contact checks' read, states included; no second one

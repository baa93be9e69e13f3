"""ComposeMessage renders from the profile its contact checks read: one read snapshot of the
user's profile per message, against a real server."""
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, interested_user, opt_in


async def test_a_message_is_rendered_from_the_profile_read_for_its_contact_checks(
        tailor_server, campaigns, profiles, messaging, catalog, monkeypatch):
    repo, reads = tailor_server.profiles.repo, []
    original = repo.states_and_meta

    def counted(user_ids, with_states=True, txn=None, with_seen=False):
        reads.append((list(user_ids), with_states, with_seen))
        return original(user_ids, with_states, txn, with_seen)

    def other_read(name):
        read = getattr(repo, name)

        def counted_read(user_ids):
            reads.append((name, list(user_ids)))
            return read(user_ids)
        return counted_read

    monkeypatch.setattr(repo, "states_and_meta", counted)
    for name in ("states", "states_and_seen"):  # the Recommend pipeline's reads
        monkeypatch.setattr(repo, name, other_read(name))
    spec = email_spec(subject="Hi {{ first_name }}, {{ interests[0] }}")
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    category = catalog["category"][catalog["ids"][0]]
    await interested_user(profiles, catalog, "u1", category, first_name="Ann")
    await opt_in(profiles, "u1")
    reads.clear()
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="u1"))
    assert not msg.suppressed and msg.parts["subject"] == f"Hi Ann, {category}"
    # the contact checks' read, states and seen-set included; the template's recommend()
    # reads no profile again
    assert reads == [(["u1"], True, True)]
    assert msg.parts["html"].count("data-item=") == 4

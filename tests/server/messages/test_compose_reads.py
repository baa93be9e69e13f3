"""ComposeMessage renders from the profile its contact checks read: one read snapshot of the
user's profile per message, against a real server."""
from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, interested_user, opt_in


async def test_a_message_is_rendered_from_the_profile_read_for_its_contact_checks(
        tailor_server, campaigns, profiles, messaging, catalog, monkeypatch):
    repo, reads = tailor_server.profiles.repo, []
    original = repo.states_and_meta

    def counted(user_ids, with_states=True, txn=None, with_seen=False, with_stored=False):
        reads.append((list(user_ids), with_states, with_seen))
        return original(user_ids, with_states, txn, with_seen, with_stored)

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


async def test_a_user_erased_after_the_decisions_read_is_not_cached_by_its_render(
        tailor_server, campaigns, profiles, messaging, catalog):
    """The erasure commits between the decision's profile read and the template's
    `recommend()` on the loop, which computes from that read: the user cache keeps nothing of
    the erased user (before, the batch's `since()` was taken after the erasure, at the render,
    and the entry was stored)."""
    profile_repo, recommender = tailor_server.profiles.repo, tailor_server.recommender
    original, armed = profile_repo.states_and_meta, [False]

    def erased_after_read(user_ids, with_states=True, txn=None, with_seen=False,
                          with_stored=False):
        found = original(user_ids, with_states, txn, with_seen, with_stored)
        if armed[0] and "u1" in user_ids:  # the erasure (its own thread in a server) lands now
            armed[0] = False
            profile_repo.erase("u1", tailor_server.profiles._erasers)
        return found
    profile_repo.states_and_meta = erased_after_read
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    category = catalog["category"][catalog["ids"][0]]
    await interested_user(profiles, catalog, "u1", category)
    await opt_in(profiles, "u1")
    armed[0] = True
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="u1"))
    assert not armed[0]  # the erasure ran after the decision's read
    assert "u1" not in recommender.cache
    await interested_user(profiles, catalog, "u2", category)  # nobody erased: cached as before
    await opt_in(profiles, "u2")
    await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="u2"))
    assert "u2" in recommender.cache

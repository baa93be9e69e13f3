"""ComposeMessage under a frequency cap, against a real server: the message is rendered while
its decision's record commits, and the cap, checked in that commit, decides what is answered."""
import asyncio

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb

from .conftest import email_spec, interested_user, opt_in

DAY = 86400


async def capped_mail_to_u1(campaigns, profiles, catalog) -> None:
    """Campaign "mail" capped at one email a day, and "u1" (Ann, opted in) to send it to."""
    spec = email_spec()
    spec.frequency_caps.append(cpb.FrequencyCap(channel="email", max=1, window_seconds=DAY))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    await interested_user(profiles, catalog, "u1", catalog["category"][catalog["ids"][0]],
                          first_name="Ann")
    await opt_in(profiles, "u1")


async def test_composes_over_a_cap_come_back_suppressed_with_nothing_rendered(
        campaigns, profiles, messaging, catalog):
    """A cap of one email a day and 16 concurrent composes for one user: one message, rendered;
    15 suppressed by the cap with no parts, headers or link; every answer's decision logged."""
    await capped_mail_to_u1(campaigns, profiles, catalog)
    got = await asyncio.gather(*(messaging.ComposeMessage(
        mpb.ComposeMessageRequest(campaign_id="mail", user_id="u1")) for _ in range(16)))
    sent = [m for m in got if not m.suppressed]
    assert len(sent) == 1 and sent[0].parts["subject"] == "Hi Ann" and sent[0].headers
    capped = [m for m in got if m.suppressed]
    assert {m.reason for m in capped} == {"frequency_cap"} and len(capped) == 15
    assert all(not (m.parts or m.headers or m.unsubscribe_url or m.variant_id or m.holdout)
               for m in capped)
    logged = {r.decision_id: r for r in [r async for r in campaigns.ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True,
                                   include_suppressed=True))]}
    assert set(logged) == {m.decision_id for m in got}
    assert logged[sent[0].decision_id].variant_id == "v1"
    assert {(logged[m.decision_id].variant_id, logged[m.decision_id].reason)
            for m in capped} == {("", "frequency_cap")}


async def test_a_decision_logged_before_is_rendered_as_logged_not_decided_again(
        campaigns, profiles, catalog, tailor_server):
    """SendCampaign's resume path: a decision with a fixed id is found by that id and rendered
    from its record (variant, channel, Message-ID); one the cap suppressed stays suppressed."""
    await capped_mail_to_u1(campaigns, profiles, catalog)
    composer, chooser = tailor_server.composer, tailor_server.composer.campaigns
    first, second = (chooser.fixed_decision_id(1.7e9, f"send-x:{seq}") for seq in (0, 1))
    decided, _ = await composer.decide_and_render("mail", "u1", {}, decision_id=first)
    capped, _ = await composer.decide_and_render("mail", "u1", {}, decision_id=second)
    assert (decided.decision_id, capped.decision_id, capped.reason) == (first, second,
                                                                        "frequency_cap")
    logged = await asyncio.to_thread(chooser.logged_decisions, "mail", [
        ("u1", first), ("u1", second), ("u2", first), ("u1", chooser.fixed_decision_id(1.7e9, "y"))])
    assert set(logged) == {first, second}  # another user's, or an unknown id: not found
    again, recipient = await composer.render_logged("mail", "u1", logged[first])
    assert recipient is not None and (again.variant_id, again.channel) == ("v1", "email")
    assert again.parts["subject"] == "Hi Ann" and first in again.headers["Message-ID"]
    still, nobody = await composer.render_logged("mail", "u1", logged[second])
    assert nobody is None and (still.suppressed, still.reason) == (True, "frequency_cap")
    exported = [r async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True, include_suppressed=True))]
    assert sorted(r.decision_id for r in exported) == sorted([first, second])  # none added


async def test_composes_repeating_a_request_id_get_one_decision_rendered_alike(
        campaigns, profiles, messaging, catalog):
    """16 concurrent composes with one request id (a client's retries) under a cap of one
    email a day: the same logged decision and message for all, not one sent and 15 capped;
    another id is a decision of its own (over the cap)."""
    await capped_mail_to_u1(campaigns, profiles, catalog)
    got = await asyncio.gather(*(messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="u1", request_id="r1")) for _ in range(16)))
    assert not got[0].suppressed and got[0].parts["subject"] == "Hi Ann"
    assert all((m.decision_id, dict(m.parts), m.suppressed) == (
        got[0].decision_id, dict(got[0].parts), False) for m in got)
    other = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id="u1", request_id="r2"))
    assert other.suppressed and other.reason == "frequency_cap"
    logged = [r async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True, include_suppressed=True))]
    assert sorted(r.decision_id for r in logged) == sorted([got[0].decision_id, other.decision_id])

"""A message that cannot go (no address, an address the adapter cannot carry, a template that
fails for this user) was received by nobody: its decision is withdrawn, as a ChooseVariant
whose caller gave up is. Before, it stayed pending: counted against the user's frequency caps
(their next real message was refused `frequency_cap`), counted in the stats, and closed with
the default reward, a pull of a variant nobody saw (a real relay on loopback, a real store)."""
import asyncio

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb

from .conftest import email_spec, relayed, stored_attributes
from .test_send_campaign import audience, until_done

DAY = 86400.0


@pytest.fixture
def settings(settings, sink):
    return relayed(settings, sink, delivery_attempts=1)


async def capped_campaign(campaigns, **content):
    spec = email_spec(**content)
    spec.frequency_caps.append(cpb.FrequencyCap(channel="email", max=1, window_seconds=DAY))
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))


async def pending(campaigns) -> list[str]:
    return [r.user_id async for r in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True)) if r.status == "pending"]


def compose(messaging, user: str, deliver: bool = True):
    return messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, deliver=deliver))


async def test_a_message_that_could_not_go_does_not_count_as_a_contact(
        tailor_server, sink, campaigns, profiles, messaging):
    await capped_campaign(campaigns)
    await audience(profiles, ["c1", "s1"], address=False)
    await audience(profiles, ["c2"])
    # as a Tailor before UpsertAttributes checked addresses stored it (refused now)
    await stored_attributes(tailor_server, "c2", email="not an address")
    for user in ("c1", "c2"):
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging, user)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(
        campaign_id="mail", user_ids=["s1"], rate_per_second={"email": 1000}))
    assert dict((await until_done(messaging, started.send_id)).failed_by_reason) == {
        "no email address": 1}
    assert await pending(campaigns) == []
    for user in ("c1", "c2", "s1"):  # the address given, the next message goes
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"email": f"{user}@example.com"}))
        got = await compose(messaging, user)
        assert (got.suppressed, got.reason, got.delivered) == (False, "", True)
    assert sorted(await pending(campaigns)) == ["c1", "c2", "s1"]


async def test_a_message_whose_template_fails_for_the_user_is_withdrawn(
        sink, campaigns, profiles, messaging):
    await capped_campaign(campaigns, subject="Hi {{ first_name }}")
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t1", attributes={"email": "t1@example.com"}))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="t1", channel="email",
                                                    opted_in=True, source="signup"))
    for deliver in (False, True):
        with pytest.raises(grpc.RpcError) as err:
            await compose(messaging, "t1", deliver)
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "first_name" in err.value.details()
    assert await pending(campaigns) == []
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="t1", attributes={"first_name": "Tia"}))
    got = await compose(messaging, "t1")
    assert (got.suppressed, got.parts["subject"], got.delivered) == (False, "Hi Tia", True)


async def test_a_compose_whose_caller_gave_up_leaves_no_contact(campaigns, profiles,
                                                                messaging):
    """The caller's deadline passed while its message rendered (after the decision was
    logged): nobody received it, so it is withdrawn, as a ChooseVariant's is. On main it
    stayed pending, and the caller's next compose was refused `frequency_cap`."""
    slow = ("{% set s = 'x' * 100000 %}{% for i in range(4000) %}{{ (s|upper)|length }}"
            "{% endfor %}")  # about 0.3 s of rendering (past it, the 1 s bound refuses the
    # render, and its decision is withdrawn all the same: see the test above)
    await capped_campaign(campaigns, text=slow)
    await audience(profiles, ["g1"])
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(
            campaign_id="mail", user_id="g1"), timeout=0.1)
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = asyncio.get_running_loop().time() + 10
    while await pending(campaigns) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)  # the withdrawal follows the render
    assert await pending(campaigns) == []
    # The cap of 1 is free again. Asked by a decision that renders nothing: a compose renders
    # the slow template again, past the render bound on a loaded machine (refused, whatever
    # the cap says).
    got = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="mail", user_id="g1"))
    assert (got.suppressed, got.reason) == (False, "")


async def test_a_message_whose_render_fails_at_its_turn_is_withdrawn(
        sink, campaigns, profiles, messaging, channel, demo_bundle):
    """A SendCampaign message showing an item that left the catalog is rendered again at its
    turn; when that render failed it was settled failed with nothing sent, and its decision
    stayed pending (counted toward the caps, the stats, closed with the default reward)."""
    import numpy as np

    from protos.tailor.v1 import catalog_pb2 as capb
    from protos.tailor.v1 import catalog_pb2_grpc
    with np.load(demo_bundle / "items.npz") as npz:
        names, cats, pop = npz["category_names"], npz["category"], npz["popularity"]
        ids = npz["item_ids"]
    in_cat = np.flatnonzero(cats == 0)
    top = str(ids[in_cat[np.argmax(pop[in_cat])]])  # what a user without history is shown
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(html=(
        f'{{% for it in recommend(1, category="{names[0]}") %}}'
        f'{{% if it.item_id != "{top}" %}}{{{{ 1 // 0 }}}}{{% endif %}}'
        '<i data-item="{{ it.item_id }}"></i>{% endfor %}'))))
    users = ["w1", "w2", "w3"]
    await audience(profiles, users)
    started = await messaging.SendCampaign(mpb.SendCampaignRequest(  # they go 2 s apart
        campaign_id="mail", user_ids=users, rate_per_second={"email": 0.5}))
    await asyncio.to_thread(sink.wait_for, 1)
    await catalog_pb2_grpc.CatalogServiceStub(channel).RemoveItems(
        capb.RemoveItemsRequest(item_ids=[top]))
    done = await until_done(messaging, started.send_id)
    assert (done.sent, dict(done.failed_by_reason)) == (
        1, {"RenderFailed: variant 'v1', part 'html', line 1: ZeroDivisionError": 2})
    assert await pending(campaigns) == ["w1"]

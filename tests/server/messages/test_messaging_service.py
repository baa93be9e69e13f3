"""MessagingService against a real server: compose (decision + render + headers), preview,
template errors refused at creation, channel limits."""
import re

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import messaging_pb2 as mpb
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc

from .conftest import email_spec, interested_user, opt_in


async def test_a_template_error_is_refused_at_creation_naming_variant_part_and_line(campaigns):
    spec = email_spec(html="<p>ok</p>\n{% for it in recommend(2) %}{{ coupon }}{% endfor %}")
    with pytest.raises(grpc.RpcError) as err:
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "variant 'v1', part 'html', line 2: unknown variable 'coupon'" in err.value.details()
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    bad = email_spec(subject="{% if %}")
    with pytest.raises(grpc.RpcError) as err:
        await campaigns.UpdateCampaign(cpb.UpdateCampaignRequest(spec=bad))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "part 'subject', line 1" in err.value.details()


async def test_compose_renders_the_users_name_escaped_and_items_of_their_top_category(
        campaigns, profiles, messaging, catalog, settings):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    user = "user-0451"  # long enough that no random token holds it by chance ("u1" did, 1 in 40)
    category = catalog["category"][catalog["ids"][0]]
    viewed = await interested_user(profiles, catalog, user, category, first_name="<Zoë & Co>")
    await opt_in(profiles, user)
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id=user))
    assert (msg.channel, msg.variant_id, msg.suppressed, msg.holdout) == ("email", "v1", False, False)
    assert msg.parts["subject"] == "Hi <Zoë & Co>"           # text parts are not escaped
    assert "<p>Hi &lt;Zoë &amp; Co&gt;,</p>" in msg.parts["html"]
    items = re.findall(r'data-item="([^"]+)"', msg.parts["html"])
    assert len(items) == 4 and len(set(items)) == 4
    assert {catalog["category"][i] for i in items} == {category}
    assert not set(items) & set(viewed)                        # seen items are excluded
    assert f'<img src="{catalog["images"][items[0]]}">' in msg.parts["html"]
    assert catalog["images"][items[0]].startswith("https://")
    base = f"http://127.0.0.1:{settings.public_http_port}/u/"
    assert msg.unsubscribe_url.startswith(base) and msg.unsubscribe_url in msg.parts["text"]
    assert msg.headers["List-Unsubscribe"] == f"<{msg.unsubscribe_url}>"
    assert msg.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg.headers["Message-ID"] == f"<{msg.decision_id}@tailor.invalid>"
    assert user not in msg.unsubscribe_url.rsplit("/", 1)[1]
    logged = [r async for r in campaigns.ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True))]
    assert [(r.decision_id, r.user_id) for r in logged] == [(msg.decision_id, user)]


async def test_the_composed_items_are_the_recommend_rpcs_answer(campaigns, profiles, messaging,
                                                                catalog, channel, tailor_server,
                                                                monkeypatch):
    """The template's recommend(4, category=...) is the Recommend pipeline for the recipient:
    the same items, in the same order, as a Recommend call with the same k, channel and
    category. ComposeMessage computes them on the event loop, from the profile its decision
    read; SendCampaign's composes (many at once) through the batch thread."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    category = catalog["category"][catalog["ids"][0]]
    await interested_user(profiles, catalog, "u2", category)
    await opt_in(profiles, "u2")
    rec, calls = tailor_server.recommender, []
    recommend = rec.recommend

    async def recording(query, request_id="", on_loop=False, read=None, record=True):
        calls.append((on_loop, read is not None))
        return await recommend(query, request_id, on_loop, read, record)

    monkeypatch.setattr(rec, "recommend", recording)
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="u2"))
    answer = await recommendation_pb2_grpc.RecommendationServiceStub(channel).Recommend(
        rpb.RecommendRequest(user_id="u2", k=4, channel="email", categories=[category]))
    assert re.findall(r'data-item="([^"]+)"', msg.parts["html"]) == [i.item_id for i in answer.items]
    await tailor_server.composer.decide_and_render("mail", "u2", {})  # SendCampaign's call
    # ComposeMessage (on the loop, from its decision's profile read), the Recommend RPC,
    # SendCampaign's (the batch thread reads the profiles of its batches)
    assert calls == [(True, True), (False, False), (False, False)]


async def test_a_user_without_profile_gets_no_marketing_but_a_transactional_message_with_defaults(
        campaigns, messaging, profiles):
    """Without a profile there is no opt-in, so a marketing email is suppressed (email needs
    one: `consent_defaults`); a transactional one (a receipt) needs none and renders with the
    defaults and the popular items."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                   user_id="nobody"))
    assert (msg.suppressed, msg.reason, msg.holdout) == (True, "no_consent", False)
    assert msg.decision_id and not msg.variant_id and not msg.parts and not msg.headers
    assert not msg.unsubscribe_url
    receipt = email_spec("receipt")
    receipt.purpose = "transactional"
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=receipt))
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="receipt",
                                                                   user_id="nobody"))
    assert (msg.suppressed, msg.reason, msg.variant_id) == (False, "", "v1")
    assert msg.parts["subject"] == "Hi there"
    assert len(re.findall(r'data-item="', msg.parts["html"])) == 4
    with pytest.raises(grpc.RpcError) as err:  # still no profile: the compose created none
        await profiles.GetProfile(ppb.GetProfileRequest(user_id="nobody"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


async def test_a_strict_variable_missing_for_this_user_is_failed_precondition(campaigns, messaging,
                                                                              profiles):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(
        subject="Hi\n{{ first_name }}")))
    await opt_in(profiles, "x")  # opted in, but no first_name
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id="x"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "variant 'v1', part 'subject', line 2" in err.value.details()


@pytest.mark.parametrize("text, attributes, problem", [
    ("{{ 100 // (profile.orders | int) }}", {"orders": "0"}, "ZeroDivisionError"),
    ("{{ profile.points + 1 }}", {"points": "12"}, "TypeError"),
    ('{{ {"en": "Hi"}[language] }}', {"language": "fr-secret"},
     "UndefinedError: a key or attribute taken from the data is undefined")])
async def test_a_template_failing_on_this_users_data_is_failed_precondition_without_the_data(
        campaigns, messaging, profiles, text, attributes, problem):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(
        text="{{ unsubscribe_url }}\n" + text)))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id="x", attributes=attributes))
    await opt_in(profiles, "x")
    for call, request in ((messaging.ComposeMessage, mpb.ComposeMessageRequest),
                          (messaging.PreviewMessage, mpb.PreviewMessageRequest)):
        with pytest.raises(grpc.RpcError) as err:
            await call(request(campaign_id="mail", user_id="x"))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert err.value.details() == f"variant 'v1', part 'text', line 2: {problem}"


async def test_sms_segments_are_reported_and_a_long_sms_is_refused(campaigns, messaging, profiles):
    await opt_in(profiles, "u", "sms")
    text = "Hi {{ first_name | default('there') }} " + "x" * 150 + "{{ unsubscribe_url }}"
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="sms", channel="sms", policy="fixed",
        variants=[cpb.Variant(id="s", content={"text": text})])))
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms", user_id="u"))
    n = len(msg.parts["text"])
    assert (msg.sms.encoding, msg.sms.units) == ("gsm7", n)
    assert msg.sms.segments == -(-n // 153) and msg.headers == {}
    long = cpb.CampaignSpec(campaign_id="sms2", channel="sms", policy="fixed", variants=[
        # UCS-2: 5 segments of 67 > 4, from data (written in the template, CreateCampaign
        # refuses it)
        cpb.Variant(id="s", content={"text": "{{ content.long }}", "long": "ç" * 300})])
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=long))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="sms2", user_id="u"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "5 SMS segments (300 ucs2 units), at most 4" in err.value.details()


async def test_preview_renders_a_sample_profile_and_logs_no_decision(campaigns, messaging, catalog):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    category = catalog["category"][catalog["ids"][-1]]
    msg = await messaging.PreviewMessage(mpb.PreviewMessageRequest(
        campaign_id="mail", sample_attributes={"first_name": "Ann"}, sample_interests=[category]))
    assert msg.parts["subject"] == "Hi Ann" and msg.decision_id == ""
    items = re.findall(r'data-item="([^"]+)"', msg.parts["html"])
    assert len(items) == 4 and {catalog["category"][i] for i in items} == {category}
    logged = [r async for r in campaigns.ExportDecisions(
        cpb.ExportDecisionsRequest(campaign_id="mail", include_pending=True))]
    assert logged == []
    with pytest.raises(grpc.RpcError) as err:
        await messaging.PreviewMessage(mpb.PreviewMessageRequest(campaign_id="mail",
                                                                 variant_id="nope"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_holdout_and_web_campaigns(campaigns, messaging, profiles):
    spec = email_spec()
    spec.params["holdout"] = 0.99
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    for user in ("u0", "u1", "u2"):  # each is held out with probability 0.99 (a fixed hash)
        await opt_in(profiles, user)  # else suppressed (no_consent), which is not the holdout
        msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail",
                                                                       user_id=user))
        if msg.holdout:
            break
    assert msg.holdout and msg.decision_id and not msg.parts and not msg.variant_id
    assert not msg.suppressed and msg.reason == ""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="web", variants=[cpb.Variant(id="a")])))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="web", user_id="u"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_deliver_on_a_server_without_a_relay_is_refused_before_any_decision(
        campaigns, profiles, messaging):
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="norelay", attributes={"email": "norelay@example.com"}))
    await opt_in(profiles, "norelay")
    for _ in range(2):  # a retry logs nothing either
        with pytest.raises(grpc.RpcError) as err:
            await messaging.ComposeMessage(mpb.ComposeMessageRequest(
                campaign_id="mail", user_id="norelay", deliver=True))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "SMTP relay" in err.value.details()
    logged = [d async for d in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="mail", include_pending=True, include_suppressed=True))]
    assert logged == []


async def _impressions_of(server, user: str) -> dict:
    """The user's stored impressions (request id -> record), once the log's writer committed
    what it buffered."""
    from server.impressions.records import decode
    log = server.impressions.log
    await log.flushed()
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, log.user_prefix(user))
    return {k.rsplit(b"\x1f", 1)[1].decode(): decode(v) for k, v in found}


async def test_a_message_logs_its_items_under_its_decision_once_it_stands_a_preview_never(
        campaigns, profiles, messaging, catalog, tailor_server):
    """The impression log says what users were shown: a preview (an admin looking at a
    variant) shows the user nothing, nor does a compose that fails to render; a composed
    message's items are logged once, under its decision id."""
    from contract.items import item_code
    from server.messages.compose import PREVIEW_USER
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    # html (with its recommend()) renders before text, which fails for a user without a name
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec(
        "fails", text="{{ unsubscribe_url }} {{ first_name }}")))
    user = "user-0733"
    category = catalog["category"][catalog["ids"][0]]
    await interested_user(profiles, catalog, user, category)
    await opt_in(profiles, user)
    for _ in range(2):
        await messaging.PreviewMessage(mpb.PreviewMessageRequest(campaign_id="mail", user_id=user))
    await messaging.PreviewMessage(mpb.PreviewMessageRequest(
        campaign_id="mail", sample_attributes={"first_name": "Ann"}, sample_interests=[category]))
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="fails", user_id=user))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert await _impressions_of(tailor_server, user) == {}
    assert await _impressions_of(tailor_server, PREVIEW_USER) == {}
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="mail", user_id=user))
    shown = re.findall(r'data-item="([^"]+)"', msg.parts["html"])
    logged = await _impressions_of(tailor_server, user)
    assert list(logged) == [msg.decision_id]
    assert logged[msg.decision_id].items.tolist() == [item_code(i) for i in shown]
    assert logged[msg.decision_id].channel == "email"


async def test_a_template_may_call_recommend_a_bounded_number_of_times(campaigns, messaging):
    """Each recommend() runs the Recommend pipeline (ComposeMessage: on the event loop), a
    thousand times the cost of a loop step: a loop over it held every call of the worker for
    as long as the step budget allowed (a thousand pipelines, until the exclusions ran out).
    One message's templates may call it `limits.message_recommend_calls` times."""
    from server.limits import Limits
    most = Limits().message_recommend_calls

    def looping(n: int) -> str:
        return "{% for i in range(" + str(n) + ") %}{{ recommend(1) | length }}{% endfor %}"
    for cid, n in (("ok", most), ("over", 500)):
        spec = email_spec(cid, html=looping(n))
        spec.purpose = "transactional"  # no consent needed
        await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=spec))
    msg = await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="ok", user_id="u"))
    assert msg.parts["html"] == "1" * most
    with pytest.raises(grpc.RpcError) as err:
        await messaging.ComposeMessage(mpb.ComposeMessageRequest(campaign_id="over", user_id="u"))
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "limits.message_recommend_calls" in err.value.details()


async def test_a_repeated_request_id_logs_the_messages_impressions_once(
        campaigns, profiles, messaging, catalog, tailor_server):
    """A ComposeMessage retried with its request_id (its answer lost) gets the decision logged
    for it, rendered again; the render's items were logged again too: one decision, two
    impression records, twice the impressions in GetModelStats."""
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=email_spec()))
    user = "user-0733"
    await interested_user(profiles, catalog, user, catalog["category"][catalog["ids"][0]])
    await opt_in(profiles, user)
    first = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, request_id="r-1"))
    again = await messaging.ComposeMessage(mpb.ComposeMessageRequest(
        campaign_id="mail", user_id=user, request_id="r-1"))
    assert again.decision_id == first.decision_id and again.parts == first.parts
    log = tailor_server.impressions.log
    await log.flushed()
    with log.store.read() as txn:
        records = log.store.table("impressions").scan_prefix(txn, log.user_prefix(user))
    assert [k.rsplit(b"\x1f", 1)[1].decode() for k, _ in records] == [first.decision_id]

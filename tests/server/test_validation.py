"""One id rule and one set of limits for every service, through a real server and real stubs."""
import time

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.profiles.events import TrackedEvent

BAD_USER_IDS = ["", "a\x1fb", "u" * 129, "é" * 65]  # 65 two-byte characters: 130 bytes
GOOD_USER_IDS = ["é" * 64, " ", "user:42"]
SPOOFING_USER_IDS = ["gpj.\u202eexe", "a\x9b[2Jb"]
"""A bidirectional control ("gpj.exe" reversed) and a C1 control (a terminal's CSI): taken
before, refused now everywhere but where a profile stored before must stay erasable."""
INVISIBLE_USER_IDS = {"ann\u200b": "U+200B", "a\u00adnn": "U+00AD", "\u2060ann": "U+2060",
                      "an\u200dn": "U+200D", "ann\U000e0020": "U+E0020"}
"""Ids that show as "ann" (a zero-width space, a soft hyphen, a word joiner, a zero-width
joiner, a tag space: format characters, Unicode Cf), each with the code point it is refused
for: taken before, refused now as the SPOOFING ones are."""


@pytest.fixture
async def stubs(channel):
    campaigns = cpb_grpc.CampaignServiceStub(channel)
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="c1", channel="email", variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])))
    return (rpb_grpc.RecommendationServiceStub(channel), ppb_grpc.ProfileServiceStub(channel),
            campaigns)


def user_calls(stubs, user_id):
    """(name, start the call) for every RPC that takes a user id directly, in an order that
    works for a good id (a call starts as soon as it is made: made one at a time)."""
    rec, prof, camp = stubs
    return [
        ("Recommend", lambda: rec.Recommend(rpb.RecommendRequest(user_id=user_id, k=3))),
        ("RecommendBatch", lambda: rec.RecommendBatch(rpb.RecommendBatchRequest(
            requests=[rpb.RecommendRequest(user_id=user_id, k=3)]))),
        ("UpsertAttributes", lambda: prof.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user_id, attributes={"locale": "fr"}))),
        ("SetConsent", lambda: prof.SetConsent(ppb.SetConsentRequest(
            user_id=user_id, channel="email", opted_in=True))),
        ("GetProfile", lambda: prof.GetProfile(ppb.GetProfileRequest(user_id=user_id))),
        ("ChooseVariant", lambda: camp.ChooseVariant(cpb.ChooseVariantRequest(
            campaign_id="c1", user_id=user_id))),
        ("DeleteProfile", lambda: prof.DeleteProfile(ppb.DeleteProfileRequest(user_id=user_id))),
    ]


def track(stubs, user_id):
    event = ppb.Event(event_id=f"e-{time.monotonic_ns()}", user_id=user_id, type="click",
                      timestamp=time.time())
    return stubs[1].TrackEvents(ppb.TrackEventsRequest(events=[event]))


@pytest.mark.parametrize("user_id", BAD_USER_IDS)
async def test_every_service_refuses_the_same_bad_user_ids(stubs, user_id):
    for name, call in user_calls(stubs, user_id):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "user_id" in err.value.details(), name
        if user_id:
            assert user_id not in err.value.details(), name  # ids are never echoed
    reply = await track(stubs, user_id)
    assert reply.accepted == 0 and reply.rejected[0].reason.startswith("user_id")


@pytest.mark.parametrize("user_id", GOOD_USER_IDS)
async def test_every_service_accepts_the_same_good_user_ids(stubs, user_id):
    assert (await track(stubs, user_id)).accepted == 1
    for _name, call in user_calls(stubs, user_id):
        await call()  # raises on any error status


async def test_limits_come_from_settings_and_name_the_field(stubs):
    rec, _, camp = stubs
    too_many = {f"k{i}": 1.0 for i in range(65)}
    calls = [("context", camp.ChooseVariant(cpb.ChooseVariantRequest(
                 campaign_id="c1", user_id="u1", context=too_many))),
             ("requests", rec.RecommendBatch(rpb.RecommendBatchRequest(
                 requests=[rpb.RecommendRequest(user_id="u1", k=1)] * 1001))),
             ("exclude_item_ids", rec.Recommend(rpb.RecommendRequest(
                 user_id="u1", k=1, exclude_item_ids=["x"] * 1001)))]
    for field, call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"{field}: "), err.value.details()
    await camp.ChooseVariant(cpb.ChooseVariantRequest(
        campaign_id="c1", user_id="u1", context=dict(list(too_many.items())[:64])))


BAD_CONTEXT_KEYS = {"": "is empty", "e\u200bmail": "(U+200B)", "a\x00b": "control character",
                    "x\u202e": "(U+202E)"}
"""Recommend context keys no attribute key may be, each with what its refusal names: the
impression log kept them as given, and `e\u200bmail` (shown as `email`) escaped the `pii_keys`
masking, its address stored and exported unmasked."""


@pytest.mark.parametrize("key", list(BAD_CONTEXT_KEYS))
async def test_recommend_refuses_context_keys_no_attribute_key_may_be(stubs, key):
    rec = stubs[0]
    context = {key: "carol@example.com", "page": "home"}
    calls = [("context key", lambda: rec.Recommend(rpb.RecommendRequest(
                 user_id="u1", k=1, context=context))),
             ("requests[0].context key", lambda: rec.RecommendBatch(rpb.RecommendBatchRequest(
                 requests=[rpb.RecommendRequest(user_id="u1", k=1, context=context)])))]
    for field, call in calls:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, field
        details = err.value.details()
        assert details.startswith(f"{field}: ") and BAD_CONTEXT_KEYS[key] in details, details
        assert "carol" not in details  # the value is never echoed
    reply = await rec.Recommend(rpb.RecommendRequest(
        user_id="u1", k=1, context={"email": "carol@example.com", "page": "home"}))
    assert len(reply.items) == 1


@pytest.mark.parametrize("user_id", SPOOFING_USER_IDS)
async def test_every_service_but_erasure_refuses_ids_that_spoof_what_is_shown(stubs, user_id):
    for name, call in user_calls(stubs, user_id):
        if name == "DeleteProfile":
            continue  # see the next test
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await call()
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert "user_id: contains a " in err.value.details(), name
        assert user_id not in err.value.details(), name
    reply = await track(stubs, user_id)
    assert reply.accepted == 0 and reply.rejected[0].reason.startswith("user_id contains a ")


async def test_a_profile_stored_under_such_an_id_before_can_still_be_erased_and_exported(
        stubs, tailor_server):
    """A profile stored before the rule (written here through the store API) keeps its
    user's rights: ExportProfile finds it, DeleteProfile erases it (its attributes may still
    change: the next test)."""
    import asyncio
    user_id = SPOOFING_USER_IDS[0]
    await asyncio.to_thread(tailor_server.profiles.repo.update_meta, user_id,
                            lambda meta: meta["attributes"].update(locale="fr"))
    prof = stubs[1]
    export = await tailor_server.profiles.export_user(user_id)
    assert export.profile.attributes == {"locale": "fr"}
    assert (await prof.DeleteProfile(ppb.DeleteProfileRequest(user_id=user_id))).records_deleted >= 1
    assert await asyncio.to_thread(tailor_server.profiles.repo.states_and_meta, [user_id], True) \
        == [(None, None)]


async def test_a_profile_stored_under_such_an_id_before_takes_attributes_and_unsubscribes(
        stubs, tailor_server):
    """UpsertAttributes and an unsubscribe event (TrackEvents, TrackEventStream) of a profile
    stored before the rule (one with attributes alone, one with events alone: written here
    through the store API) were refused, so its user could not be opted out by the feed that
    reports it; both are taken now, for a profile the store holds only: under such an id with
    no profile, both are refused and nothing is made. Other events of it stay refused."""
    import asyncio
    repo, prof = tailor_server.profiles.repo, stubs[1]
    with_meta, with_events, nobody = "ann\u202e", "bob\x9b", "cy\u2066"
    await asyncio.to_thread(repo.update_meta, with_meta,
                            lambda meta: meta["attributes"].update(locale="fr"))
    await asyncio.to_thread(repo.ingest, [TrackedEvent(
        "e-bob", with_events, "view", "web", "", "i1", 0.0, time.time() - 60)], [None])
    streamed = lambda request: prof.TrackEventStream(iter([request]))  # noqa: E731
    for user_id, track in ((with_meta, prof.TrackEvents), (with_events, streamed)):
        await prof.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user_id, attributes={"locale": "de"}))
        reply = await track(ppb.TrackEventsRequest(events=[
            _event("unsubscribe", user_id, channel="email"), _event("click", user_id)]))
        assert [r.index for r in reply.rejected] == [1]
        assert reply.rejected[0].reason.startswith("user_id contains a ")
        export = await tailor_server.profiles.export_user(user_id)
        assert export.profile.attributes == {"locale": "de"}
        assert _email_consent(export) is False
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await prof.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=nobody, attributes={"locale": "de"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "user_id: contains a bidirectional control character" in err.value.details()
    reply = await prof.TrackEvents(ppb.TrackEventsRequest(events=[
        _event("unsubscribe", nobody, channel="email")]))
    assert reply.accepted == 0 and reply.rejected[0].reason.startswith("user_id contains a ")
    assert await asyncio.to_thread(repo.states_and_meta, [nobody], True) == [(None, None)]


async def test_ids_holding_an_invisible_format_character_are_refused_but_a_stored_one_is_kept(
        stubs, tailor_server, channel):
    """"ann\u200b" showed as "ann" in logs, exports and the CLI, and was another key: a new id
    holding a format character is refused wherever a C1 or bidirectional one is (user ids of
    every call, a tracked event's user and item ids, a catalog item's id; an exclude id is a
    look-up and stays taken), naming the code point; a profile stored under one before is
    still read, takes attributes and an unsubscribe, and is erased."""
    import asyncio

    from protos.tailor.v1 import catalog_pb2 as kpb
    from protos.tailor.v1 import catalog_pb2_grpc as kpb_grpc
    rec, prof, catalog = stubs[0], stubs[1], kpb_grpc.CatalogServiceStub(channel)
    for user_id, point in INVISIBLE_USER_IDS.items():
        why = f"contains a format character ({point})"
        for name, call in user_calls(stubs, user_id):
            if name == "DeleteProfile":
                continue
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call()
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, name
            assert f"user_id: {why}" in err.value.details(), name
        item = _event("click", "u1")
        item.item_id = user_id
        reply = await prof.TrackEvents(ppb.TrackEventsRequest(events=[
            _event("click", user_id), item]))
        assert [r.reason for r in reply.rejected] == [f"user_id {why}", f"item_id {why}"]
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await catalog.UpsertItems(kpb.UpsertItemsRequest(items=[kpb.CatalogItem(
                item_id=user_id, category="books")]))
        assert err.value.details() == f"items[0].item_id: {why}; nothing of the call was " \
            "stored (1 entry: a call is stored whole or not at all)"
    await rec.Recommend(rpb.RecommendRequest(user_id="u1", k=3, exclude_item_ids=["ann\u200b"]))
    stored, repo = "ann\u200b", tailor_server.profiles.repo
    await asyncio.to_thread(repo.update_meta, stored,
                            lambda meta: meta["attributes"].update(locale="fr"))
    await prof.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id=stored, attributes={"locale": "de"}))
    reply = await prof.TrackEvents(ppb.TrackEventsRequest(events=[
        _event("unsubscribe", stored, channel="email")]))
    assert reply.accepted == 1
    export = await tailor_server.profiles.export_user(stored)
    assert export.profile.attributes == {"locale": "de"} and _email_consent(export) is False
    assert (await prof.DeleteProfile(ppb.DeleteProfileRequest(user_id=stored))).records_deleted >= 1
    assert await asyncio.to_thread(repo.states_and_meta, [stored], True) == [(None, None)]


def _event(kind: str, user_id: str, channel: str = "") -> ppb.Event:
    return ppb.Event(event_id=f"e-{time.monotonic_ns()}", user_id=user_id, type=kind,
                     channel=channel, timestamp=time.time() - 5)


async def test_a_campaign_stored_under_such_an_id_before_can_still_be_read_and_archived(
        stubs, tailor_server):
    """A campaign created before the rule (stored here through the repository) takes no new
    decisions, but its operator can still read it and retire it."""
    import asyncio
    from dataclasses import replace

    from server.campaigns.spec import Campaign, CampaignSpec, Variant
    campaign_id = "promo\u202e1gpj"
    spec = CampaignSpec(campaign_id="clean", variants=(Variant("a"), Variant("b"))).validated()
    spec = replace(spec, campaign_id=campaign_id)
    await asyncio.to_thread(tailor_server.campaigns.repo.create,
                            Campaign(spec, created_at=time.time(), updated_at=time.time()),
                            spec.new_state())
    camp = stubs[2]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await camp.ChooseVariant(cpb.ChooseVariantRequest(campaign_id=campaign_id, user_id="u1"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    got = await camp.GetCampaign(cpb.GetCampaignRequest(campaign_id=campaign_id))
    assert got.spec.campaign_id == campaign_id and not got.archived
    archived = await camp.ArchiveCampaign(cpb.ArchiveCampaignRequest(campaign_id=campaign_id))
    assert archived.archived


async def test_campaigns_stored_under_such_an_id_before_are_listed_past_and_their_stats_read(
        stubs, tailor_server):
    """ListCampaigns answered such a campaign's id as the next page's token and then refused
    it (INVALID_ARGUMENT: the campaigns after it could not be listed); GetCampaignStats and
    ExportDecisions of it are the operator's reads of what is stored, as GetCampaign is."""
    import asyncio
    from dataclasses import replace

    from server.campaigns.spec import Campaign, CampaignSpec, Variant
    spec = CampaignSpec(campaign_id="clean", variants=(Variant("a"), Variant("b"))).validated()
    for campaign_id in ("c0\u202e", "c2"):  # c0…, c1 (the fixture's), c2 in id order
        await asyncio.to_thread(tailor_server.campaigns.repo.create, Campaign(
            replace(spec, campaign_id=campaign_id), created_at=time.time(),
            updated_at=time.time()), spec.new_state())
    camp, listed, token = stubs[2], [], ""
    while True:
        page = await camp.ListCampaigns(cpb.ListCampaignsRequest(page_size=1, page_token=token))
        listed += [c.spec.campaign_id for c in page.campaigns]
        if not (token := page.next_page_token):
            break
    assert listed == ["c0\u202e", "c1", "c2"]
    stats = await camp.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="c0\u202e"))
    assert stats.campaign_id == "c0\u202e"
    assert [r async for r in camp.ExportDecisions(cpb.ExportDecisionsRequest(
        campaign_id="c0\u202e"))] == []


async def test_an_opt_out_of_a_profile_stored_under_such_an_id_is_recorded(stubs, tailor_server):
    """An opt-out is never refused for the id's spelling: SetConsent opted_in=false of a
    profile stored before the rule (written here through the store API) was INVALID_ARGUMENT,
    and the user stayed opted in to what the operator was told to stop. An opt-in is refused."""
    import asyncio
    user_id = SPOOFING_USER_IDS[1]
    from server.contact.consent import record_consent
    await asyncio.to_thread(tailor_server.profiles.repo.update_meta, user_id, lambda meta:
                            record_consent(meta, "email", "marketing", True, "signup", time.time() - 60, 10))
    assert _email_consent(await tailor_server.profiles.export_user(user_id)) is True
    prof = stubs[1]
    reply = await prof.SetConsent(ppb.SetConsentRequest(user_id=user_id, channel="email",
                                                        opted_in=False, source="support"))
    assert not reply.consent["email"].opted_in
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await prof.SetConsent(ppb.SetConsentRequest(user_id=user_id, channel="email",
                                                    opted_in=True, source="support"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _email_consent(await tailor_server.profiles.export_user(user_id)) is False


async def test_an_opt_out_under_such_an_id_makes_no_profile(stubs, tailor_server):
    """SetConsent opted_in=false takes such an id for the profile stored under it (the test
    above), and made one under an id none was stored under: after it, UpsertAttributes (taken
    for a stored profile since) set attributes, an address the index names, under an id the
    rule keeps out. Refused as UpsertAttributes refuses it, nothing made."""
    import asyncio
    prof, nobody = stubs[1], "dee\u202e"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await prof.SetConsent(ppb.SetConsentRequest(user_id=nobody, channel="email",
                                                    opted_in=False, source="support"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == ("user_id: contains a bidirectional control character "
                                   "(U+202E) (taken only for a profile stored before such ids "
                                   "were refused: none is)")
    assert await asyncio.to_thread(tailor_server.profiles.repo.states_and_meta, [nobody],
                                   True) == [(None, None)]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await prof.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=nobody, attributes={"email": "dee@example.com"}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT

def _email_consent(export) -> bool:
    """The marketing email consent of an access export's profile."""
    return _consent(export, "email")


def _consent(export, channel: str) -> bool:
    """The marketing consent on `channel` of an access export's profile."""
    return next(c["opted_in"] for c in export.profile.consent
                if c["channel"] == channel and c["purpose"] == "marketing")


async def test_an_unsubscribe_of_a_profile_stored_under_such_an_id_rewards_no_decision(
        stubs, tailor_server):
    """An unsubscribe of such a stored profile is taken to opt its user out; its
    attributes["decision_id"] credited that decision's reward (behaviour the rule keeps out for
    such ids, as it keeps out every other event's). The same unsubscribe of a usable id, in
    the same batch, still rewards its decision (and shows the effects were applied)."""
    import asyncio

    from server.campaigns.decision_ids import decision_ids
    from server.campaigns.records import DecisionRecord
    await stubs[2].CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="cu", channel="email", variants=[cpb.Variant(id="a"), cpb.Variant(id="b")],
        rewards=[cpb.RewardRule(event_type="unsubscribe", value=0.0),
                 cpb.RewardRule(event_type="email_click", value=1.0)])))
    stored, clean, now = "ann\u200b", "ann", time.time()
    ids = decision_ids(2, now)
    for user_id in (stored, clean):
        await asyncio.to_thread(tailor_server.profiles.repo.update_meta, user_id,
                                lambda meta: meta["attributes"].update(locale="fr"))
    await asyncio.to_thread(tailor_server.campaigns.repo.log_decisions, [
        DecisionRecord(d, "cu", u, now - 60, 0, 0.5, None, [], 0, "a", "pending", now + 86400,
                       False, "email") for d, u in zip(ids, (stored, clean))])
    events = [_event("unsubscribe", u, channel="email") for u in (stored, clean)]
    for ev, d in zip(events, ids):
        ev.attributes["decision_id"] = d
    assert (await stubs[1].TrackEvents(ppb.TrackEventsRequest(events=events))).accepted == 2
    log = tailor_server.campaigns.repo.log
    for _ in range(100):  # the effects are applied after the answer
        recs = await asyncio.to_thread(log.by_ids, list(zip((stored, clean), ids)))
        if recs[1].get("event_reward") is not None:
            break
        await asyncio.sleep(0.05)
    assert recs[1]["event_reward"] == 0.0
    assert recs[0].get("event_reward") is None and recs[0]["status"] == "pending"
    assert _email_consent(await tailor_server.profiles.export_user(stored)) is False


async def test_reports_of_a_message_sent_to_such_an_id_before_are_not_lost(stubs, tailor_server):
    """A message sent to a profile under such an id before the rule (or from a campaign stored
    under one) is reported afterwards: a complaint naming the message alone recorded an event
    the rule refuses, so nothing listed the user's address; a carrier's STOP report (21610)
    of a text of such a campaign, and an unsubscribe event naming it, were refused for the
    campaign id, so the user stayed opted in. The address is listed, the opt-outs taken."""
    import asyncio
    from dataclasses import replace

    from server.campaigns.spec import Campaign, CampaignSpec, Variant
    from server.contact.consent import record_consent
    from server.messages.reports import record_opt_out, record_report
    profiles, suppressions = tailor_server.profiles, tailor_server.suppressions
    user, campaign = "ann\u200b", "promo\u202e"
    spec = CampaignSpec(campaign_id="clean", variants=(Variant("a"), Variant("b"))).validated()
    await asyncio.to_thread(tailor_server.campaigns.repo.create, Campaign(  # its messages' campaign
        replace(spec, campaign_id=campaign), created_at=time.time(), updated_at=time.time()),
        spec.new_state())

    def stored(meta):
        meta["attributes"]["email"] = "ann@example.com"
        record_consent(meta, "sms", "marketing", True, "signup", time.time() - 60, 10)
        record_consent(meta, "email", "marketing", True, "signup", time.time() - 60, 10)
    for user_id in (user, "bo"):
        await asyncio.to_thread(profiles.repo.update_meta, user_id, stored)
    assert not await record_report(profiles, suppressions, "email_complaint", "", user, "c1",
                                   "d1", time.time())  # its event refused: not recorded
    assert (await suppressions.check("email", "ann@example.com")).reason == "complaint"
    assert await record_opt_out(profiles, suppressions, "sms", "", user, campaign, "d2",
                                time.time())
    assert _consent(await profiles.export_user(user), "sms") is False
    stop = _event("unsubscribe", "bo", channel="email")
    stop.campaign_id = campaign
    assert (await stubs[1].TrackEvents(ppb.TrackEventsRequest(events=[stop]))).accepted == 1
    assert _email_consent(await profiles.export_user("bo")) is False


async def test_an_unsubscribe_names_only_a_campaign_stored_under_such_an_id(stubs, tailor_server):
    """An unsubscribe is taken naming a campaign stored under an id refused since (the test
    above: the campaign its message came from), but it took any such id: a client's
    unsubscribe naming "never\u202e", under which no campaign was ever stored, was stored
    with it, a new id holding a bidirectional control in the events ExportEvents and training
    read. Refused as an unsubscribe of such a user id with no profile is; a stored one taken."""
    import asyncio
    from dataclasses import replace

    from server.campaigns.spec import Campaign, CampaignSpec, Variant
    spec = CampaignSpec(campaign_id="clean", variants=(Variant("a"), Variant("b"))).validated()
    await asyncio.to_thread(tailor_server.campaigns.repo.create, Campaign(
        replace(spec, campaign_id="old\u200b"), created_at=time.time(), updated_at=time.time()),
        spec.new_state())
    events = [_event("unsubscribe", "bo", channel=c) for c in ("email", "sms")]
    events[0].campaign_id, events[1].campaign_id = "never\u202e", "old\u200b"
    reply = await stubs[1].TrackEvents(ppb.TrackEventsRequest(events=events))
    assert [(r.index, r.reason) for r in reply.rejected] == [
        (0, "campaign_id contains a bidirectional control character (U+202E) (taken only for a "
            "campaign stored before such ids were refused: none is)")]
    assert reply.accepted == 1
    export = await tailor_server.profiles.export_user("bo")
    assert [ppb.Event.FromString(raw).campaign_id for raw in export.profile.events] == ["old\u200b"]

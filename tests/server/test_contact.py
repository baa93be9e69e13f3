"""The contact policy through a real server: consent enforced at decision time, transactional
campaigns, quiet hours in each user's zone, frequency caps held atomically across two worker
processes, `<channel>_sent` events counted once, suppressed decisions kept out of stats and
exports, and bad input named."""
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from unittest.mock import patch
from zoneinfo import ZoneInfo

import grpc
import pytest

from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc

DAY = 86400.0


@pytest.fixture
def settings(tmp_path):
    """No bundle needed: campaigns do not use the recommender."""
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets")


def _stubs(channel):
    return pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)


@pytest.fixture
def stubs(channel):
    return _stubs(channel)


def spec(cid="c1", channel="email", **kw) -> pb.CampaignSpec:
    return pb.CampaignSpec(campaign_id=cid, channel=channel, policy="bernoulli_ts",
                           variants=[pb.Variant(id="a", content={"s": "A"}), pb.Variant(id="b")],
                           reward_window_seconds=3600, **kw)


async def choose(stub, user, cid="c1") -> pb.ChooseVariantResponse:
    return await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id=cid, user_id=user))


async def consent(profiles, user, channel, opted_in):
    await profiles.SetConsent(ppb.SetConsentRequest(user_id=user, channel=channel,
                                                    opted_in=opted_in, source="test"))


async def test_opted_out_users_are_suppressed_and_kept_out_of_stats_and_exports(stubs):
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()))
    await consent(profiles, "in", "email", True)
    await consent(profiles, "out", "email", False)
    ok, out, unknown = await choose(stub, "in"), await choose(stub, "out"), await choose(stub, "nobody")
    assert not ok.suppressed and ok.variant_id in ("a", "b") and ok.channel == "email"
    for d in (out, unknown):  # email needs an opt-in by default: none given is no consent
        assert (d.suppressed, d.reason, d.variant_id, d.holdout, dict(d.content)) == \
               (True, "no_consent", "", False, {})
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert sum(v.decisions for v in st.variants) == 1 and st.pending == 1
    assert st.holdout_decisions == 0
    code = await _code(stub.ReportReward(pb.ReportRewardRequest(decision_id=out.decision_id, reward=1)))
    assert code == grpc.StatusCode.FAILED_PRECONDITION  # nothing was sent: no reward
    exported = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(include_pending=True))]
    assert [r.decision_id for r in exported] == [ok.decision_id]
    every = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
        include_pending=True, include_suppressed=True))]
    assert sorted((r.decision_id, r.status, r.reason) for r in every) == sorted([
        (ok.decision_id, "pending", ""), (out.decision_id, "suppressed", "no_consent"),
        (unknown.decision_id, "suppressed", "no_consent")])
    st_after = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert [v.pulls for v in st_after.variants] == [0, 0]


async def test_transactional_campaigns_skip_marketing_consent(stubs):
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(purpose="transactional")))
    await consent(profiles, "out", "email", False)
    d = await choose(stub, "out")
    assert not d.suppressed and d.variant_id and d.channel == "email"


@pytest.mark.parametrize("medium", ["push", "web", "app", "email"])
async def test_transactional_campaigns_stop_at_an_explicit_transactional_opt_out(stubs, medium):
    stub, profiles = stubs  # no quiet hours, window or context: nothing else reads the profile
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel=medium,
                                                                 purpose="transactional")))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="out", channel=medium, opted_in=False,
                                                    source="test", purpose="transactional"))
    d = await choose(stub, "out")
    assert (d.suppressed, d.reason, d.variant_id) == (True, "no_consent", "")
    planned = [x async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="c1", user_ids=["out", "other"])])) for x in a.decisions]
    assert [(x.user_id, x.suppressed, x.reason) for x in planned] == \
        [("out", True, "no_consent"), ("other", False, "")]


async def test_only_channels_the_user_may_be_contacted_on_are_chosen(stubs):
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channels=["email", "push"])))
    await consent(profiles, "pushed-out", "push", False)
    assert (await choose(stub, "nobody")).channel == "push"  # no email opt-in; push: opt_out
    await consent(profiles, "mailable", "email", True)
    # both channels allowed: channel choice (Thompson) picks one of them
    assert (await choose(stub, "mailable")).channel in ("email", "push")
    d = await choose(stub, "pushed-out")
    assert (d.suppressed, d.reason) == (True, "no_consent")


async def test_a_channel_over_its_cap_is_not_chosen_while_another_is_free(stubs):
    """A user pushed already today (cap: one push a day) is contacted by email, which the cap
    leaves free, rather than suppressed `frequency_cap` because channel choice drew push; only
    a user whose every allowed channel is capped is suppressed so (ChooseVariant and
    PlanCampaign alike), and the logged channel propensity is that of the free channel alone."""
    stub, profiles = stubs
    cap = [pb.FrequencyCap(channel="push", max=1, window_seconds=DAY)]
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("pushed", channel="push")))
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        channels=["push", "email"], frequency_caps=cap)))
    for user in ("ann", "bob"):
        await consent(profiles, user, "email", True)
    for user in ("ann", "bob", "cy"):  # cy never opted in to email: push is all cy has
        assert not (await choose(stub, user, "pushed")).suppressed
    picks = [await choose(stub, "ann") for _ in range(20)]
    assert [(d.suppressed, d.channel) for d in picks] == [(False, "email")] * 20
    planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="c1", user_ids=["bob", "cy"])])) for d in a.decisions]
    assert [(d.user_id, d.suppressed, d.reason, d.channel) for d in planned] == [
        ("bob", False, "", "email"), ("cy", True, "frequency_cap", "push")]
    assert planned[0].channel_propensity == 1.0
    d = await choose(stub, "cy")
    assert (d.suppressed, d.reason, d.channel) == (True, "frequency_cap", "push")
    exported = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(
        campaign_id="c1", include_pending=True))]
    assert len(exported) == 21 and {(r.channel, r.channel_propensity) for r in exported} == \
        {("email", 1.0)}


async def test_an_erased_user_is_not_decided_for_as_a_new_one_where_consent_counts(stubs):
    """A user erased (DeleteProfile) and not back since has no profile, like a user never
    seen; push needs no opt-in (default opt_out), so the decision path took them for a new
    user and answered a push. Their erasure says no to marketing on every channel whose
    consent is checked: suppressed no_consent (ChooseVariant and PlanCampaign alike). A user
    never seen, or one who came back after the erasure (new events), is decided as before;
    a transactional message (no consent needed) too."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push")))
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        "tx", channel="push", purpose="transactional")))
    for user in ("ann", "cy"):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"timezone": "Europe/Paris"}))
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="back", user_id="cy", type="view", item_id="i1", timestamp=time.time())]))
    d = await choose(stub, "ann")
    assert (d.suppressed, d.reason, d.variant_id) == (True, "no_consent", "")
    planned = [x async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="c1", user_ids=["ann", "bob", "cy"])])) for x in a.decisions]
    assert [(x.user_id, x.suppressed, x.reason) for x in planned] == [
        ("ann", True, "no_consent"), ("bob", False, ""), ("cy", False, "")]
    assert not (await choose(stub, "ann", "tx")).suppressed


async def test_an_erased_user_is_not_decided_for_on_email_or_sms_whose_default_is_none(tmp_path):
    """Email and sms `none` are `opt_out` (an unsubscribe or a STOP is honoured), but the
    erased-user check read the raw default: a user who unsubscribed and was then erased was
    taken for a new user on email and sms (a variant answered, a decision logged under the
    erased id) while push (`opt_out`) suppressed them. Every opt-out channel counts now;
    web, whose marketing needs nothing, is decided as before, and so is a user never seen."""
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", consent_defaults={
                            "email": "none", "sms": "none", "push": "opt_out", "web": "none"})
    async with serving(settings) as (_, ch):
        stub, profiles = pb_grpc.CampaignServiceStub(ch), ppb_grpc.ProfileServiceStub(ch)
        got = {}
        for medium in ("push", "email", "sms", "web"):
            await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(medium, channel=medium)))
            user = f"ann-{medium}"
            await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id=user, attributes={
                "email": "ann@example.org", "phone": "+447700900123"}))
            await consent(profiles, user, medium, False)
            await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=user))
            d = await choose(stub, user, medium)
            new = await choose(stub, f"new-{medium}", medium)
            got[medium] = (d.suppressed, d.reason, new.suppressed)
        planned = [x async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
            campaign_id="email", user_ids=["ann-email", "bob"])])) for x in a.decisions]
    assert got == {"push": (True, "no_consent", False), "email": (True, "no_consent", False),
                   "sms": (True, "no_consent", False), "web": (False, "", False)}
    assert [(x.user_id, x.suppressed, x.reason) for x in planned] == [
        ("ann-email", True, "no_consent"), ("bob", False, "")]


async def test_a_decision_in_flight_when_its_user_is_erased_is_not_stored(stubs, tailor_server):
    """A decision read before an erasure reached the campaigns writer after it: it was stored
    under the erased user's id (their decision record and a contact, after the tombstone).
    The writer checks the tombstones in its transaction: nothing is stored, and the answer
    is suppressed `erased`."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push")))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id="ann",
                                                                attributes={"city": "x"}))
    server = tailor_server
    pending = server.campaigns.decide("c1", "ann", {})  # read: a profile; its record queued
    server.profiles.repo.delete_user("ann", server.profiles._erasers)  # committed first
    d = await pending.logged()
    assert (d.suppressed, d.reason, d.variant_id) == (True, "erased", "")
    from server.errors import NotFound
    with pytest.raises(NotFound):  # nothing held about ann: no decision, no contact
        await server.profiles.export_user("ann")
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert sum(v.decisions for v in st.variants) == 0 and st.pending == 0
    later = await choose(stub, "bob")  # others are decided as before
    assert not later.suppressed


async def test_a_store_of_many_tombstones_does_not_stall_the_calls_after_an_erasure(settings):
    """Tombstones are never dropped. After each DeleteProfile, the campaigns writer reread
    every one of them inside its next decision transaction (the store's one write lock): with
    200,000, a ChooseVariant took 2.4-3.6 s instead of a few ms, and every other write (a
    SetConsent) waited as long; a worker deciding for a user without a profile, and the
    ingestion's late-event check, reread them too. Each now reads only the batch's users'
    tombstones (and the latest erasure time), never the list: here 100,000 tombstones, and
    every call after each erasure stays far under the time one reread took. The tombstones
    are written before the server starts, as years of erasures are: written while it serves,
    its poll read all 100,000 at once (1-3 s under load) alongside the calls measured."""
    from server.app import TailorServer
    first = TailorServer(settings)
    await first.start()
    store, tombs = first.store, first.tombstones
    for lo in range(0, 100_000, 25_000):  # years of erasures
        store.write(lambda txn, lo=lo: [tombs.erase_user(txn, f"gone-{i}")
                                        for i in range(lo, lo + 25_000)])
    await first.stop(grace=0.5)
    server = TailorServer(settings)
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        try:
            await _calls_after_erasures(*_stubs(channel))
        finally:
            await server.stop(grace=0.5)


async def _calls_after_erasures(stub, profiles) -> None:
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push")))
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id="ann",
                                                                attributes={"city": "x"}))

    def event(n: int) -> ppb.TrackEventsRequest:
        return ppb.TrackEventsRequest(events=[ppb.Event(
            event_id=f"e{n}", user_id="ann", type="view", item_id="i1",
            timestamp=time.time() - 60)])  # a minute old: before the erasures below
    await choose(stub, "ann"), await choose(stub, "new-0"), await profiles.TrackEvents(event(0))
    took = []
    for n in (1, 2):
        await profiles.DeleteProfile(ppb.DeleteProfileRequest(user_id=f"leaver-{n}"))
        for call in (profiles.TrackEvents(event(n)), choose(stub, f"new-{n}"), choose(stub, "ann")):
            started = time.perf_counter()
            await call
            took.append(time.perf_counter() - started)
    assert max(took) < 0.4, [round(t, 3) for t in took]  # one reread of the list: 1-3 s
    assert (await choose(stub, "ann")).variant_id in ("a", "b")  # ann is decided as before


async def test_quiet_hours_defer_to_the_next_local_morning_in_each_users_zone(stubs):
    stub, profiles = stubs
    now = datetime.now(UTC)
    tokyo = now.astimezone(ZoneInfo("Asia/Tokyo"))
    start, end = (tokyo - timedelta(hours=1)), (tokyo + timedelta(hours=2))
    quiet = pb.QuietHours(start=start.strftime("%H:%M"), end=end.strftime("%H:%M"))
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push", quiet_hours=quiet)))
    for user, tz in (("kenji", "Asia/Tokyo"), ("nina", "America/New_York")):
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(user_id=user,
                                                                    attributes={"timezone": tz}))
    kenji, nina, nobody = await choose(stub, "kenji"), await choose(stub, "nina"), await choose(stub, "x")
    # Tokyo has no DST: the quiet hours end at `end` minutes (seconds dropped by HH:MM)
    wake = end.replace(second=0, microsecond=0).timestamp()
    assert not kenji.suppressed and kenji.send_at == pytest.approx(wake)
    assert (nina.suppressed, nina.send_at) == (False, 0.0)  # 13-14 h behind Tokyo: daytime
    assert nobody.send_at == 0.0  # default zone UTC: 9 h behind Tokyo, outside a 3 h window
    await stub.UpdateCampaign(pb.UpdateCampaignRequest(spec=spec(
        channel="push", quiet_hours=pb.QuietHours(start=quiet.start, end=quiet.end,
                                                  action="suppress"))))
    d = await choose(stub, "kenji")
    assert (d.suppressed, d.reason, d.variant_id) == (True, "quiet_hours", "")


async def test_a_send_deferred_hours_ahead_leaves_a_contact_now_under_a_cap(stubs):
    stub, _ = stubs
    now = datetime.now(UTC)  # users without a zone: UTC; quiet from an hour ago to 10 h ahead
    night = pb.QuietHours(start=(now - timedelta(hours=1)).strftime("%H:%M"),
                          end=(now + timedelta(hours=10)).strftime("%H:%M"))
    cap = [pb.FrequencyCap(channel="push", max=1, window_seconds=3600)]
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        "night", channel="push", quiet_hours=night, frequency_caps=cap)))
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        "now", channel="push", frequency_caps=cap)))
    deferred = await choose(stub, "u", "night")
    assert not deferred.suppressed and deferred.send_at > time.time() + 9 * 3600
    planned = [d async for a in stub.PlanCampaign(iter([pb.PlanCampaignRequest(
        campaign_id="now", user_ids=["u"])])) for d in a.decisions]
    assert (planned[0].suppressed, planned[0].send_at) == (False, 0.0)
    again = await choose(stub, "u", "now")  # the planned push, now, is within the hour
    assert (again.suppressed, again.reason) == (True, "frequency_cap")


async def test_consent_defaults_naming_some_channels_keep_the_others_defaults(tmp_path):
    """Tightening push alone (`TAILOR_CONSENT_DEFAULTS='{"push": "opt_in"}'`) left email out of
    the dict, i.e. unchecked: email marketing went to users who never opted in."""
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", consent_defaults={"push": "opt_in"})
    assert settings.consent_defaults == {"email": "opt_in", "sms": "opt_in", "push": "opt_in",
                                         "web": "none", "app": "none"}
    async with serving(settings) as (_, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        for cid, channel in (("mail", "email"), ("push", "push")):
            await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(cid, channel)))
            d = await choose(stub, "never-asked", cid)
            assert (d.suppressed, d.reason) == (True, "no_consent"), channel


async def test_transactional_contacts_leave_the_global_marketing_caps_alone(tmp_path):
    """A global cap of one marketing email a day: receipts neither check it nor count toward
    it (two receipts took the day's one promo). A campaign's own caps count every contact."""
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets",
                        contact_frequency_caps=[("email", 1, DAY)])
    async with serving(settings) as (_, ch):
        stub, profiles = pb_grpc.CampaignServiceStub(ch), ppb_grpc.ProfileServiceStub(ch)
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("receipt",
                                                                     purpose="transactional")))
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("promo")))
        own = [pb.FrequencyCap(channel="email", max=3, window_seconds=DAY)]
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("own", frequency_caps=own)))
        await consent(profiles, "u", "email", True)
        got = [await choose(stub, "u", cid) for cid in ("receipt", "receipt", "promo", "promo")]
        assert [(d.suppressed, d.reason) for d in got] == [
            (False, ""), (False, ""), (False, ""), (True, "frequency_cap")]
        # the campaign's own cap of 3: the two receipts and the promo fill it
        assert (await choose(stub, "u", "own")).reason == "frequency_cap"
        await consent(profiles, "v", "email", True)
        await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
            event_id="s1", user_id="v", type="email_sent", timestamp=time.time())]))
        # a send without a decision id: its purpose unknown, counted as marketing
        assert (await choose(stub, "v", "promo")).reason == "frequency_cap"


async def test_a_cap_past_the_default_limit_binds_under_limits_from_the_config(tmp_path):
    """`[limits] frequency_cap_max = 200` in the config file (here: Settings built in the
    process, as `load_settings` builds them from the file): a campaign cap of 150 a day is
    accepted, but the campaigns writer process read its limits from the environment alone and
    kept 100 contacts a user, so the cap never bound."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", limits=Limits(frequency_cap_max=200))
    async with serving(settings) as (_, ch):
        stub = pb_grpc.CampaignServiceStub(ch)
        caps = [pb.FrequencyCap(channel="push", max=150, window_seconds=DAY)]
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push",
                                                                     frequency_caps=caps)))
        got = [await choose(stub, "u") for _ in range(152)]
        assert [d.reason for d in got].count("frequency_cap") == 2


async def test_quiet_hours_defer_across_a_dst_change_through_the_domain(tmp_path):
    """The decision time fixed through the domain layer: 2026-03-07 23:00 EST in New York."""
    from types import SimpleNamespace

    from server.campaigns import Campaigns
    from server.campaigns.spec import CampaignSpec, Variant
    from server.contact import QuietHours
    from server.profiles import Profiles
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    profiles = Profiles(store, SimpleNamespace(active=None))
    campaigns = Campaigns(store, profiles)
    await campaigns.start()
    try:
        await campaigns.create(CampaignSpec("c1", channel="push", variants=(Variant("a"),),
                                            quiet_hours=QuietHours("21:00", "08:00")))
        await profiles.upsert_attributes("u", {"timezone": "America/New_York"})
        now = datetime(2026, 3, 8, 4, tzinfo=UTC).timestamp()
        d = await campaigns.choose("c1", "u", {}, now=now)
        assert d.send_at == datetime(2026, 3, 8, 12, tzinfo=UTC).timestamp()  # 08:00 EDT
    finally:
        await campaigns.close()
        store.close()


async def test_a_send_event_with_the_decision_id_counts_once(stubs):
    stub, profiles = stubs
    caps = [pb.FrequencyCap(channel="push", max=2, window_seconds=DAY)]
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push", frequency_caps=caps)))
    first = await choose(stub, "u")
    now = time.time()
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="s1", user_id="u", type="push_sent", timestamp=now,
        attributes={"decision_id": first.decision_id})]))
    assert not (await choose(stub, "u")).suppressed  # the send was the first decision
    await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="s2", user_id="other", type="push_sent", timestamp=now)]))
    await choose(stub, "other")
    third = await choose(stub, "u")
    assert (third.suppressed, third.reason) == (True, "frequency_cap")
    assert (await choose(stub, "other")).reason == "frequency_cap"  # a send without a decision


async def test_a_send_window_in_a_dst_gap_decides_on_the_next_day_through_the_domain(tmp_path):
    """A 02:00-03:00 send window, decided in New York the day before spring forward (07:00 to
    24:00 EST on 2026-03-07): ChooseVariant failed INTERNAL, a PlanCampaign slice with such a
    user failed the whole stream."""
    from types import SimpleNamespace

    from server.campaigns import Campaigns
    from server.campaigns.plan import PlanRequest
    from server.campaigns.spec import CampaignSpec, Variant
    from server.contact import ContactPolicy, SendWindow
    from server.profiles import Profiles
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    profiles = Profiles(store, SimpleNamespace(active=None))
    campaigns = Campaigns(store, profiles, contact=ContactPolicy(layout=profiles.layout))
    await campaigns.start()
    try:
        await campaigns.create(CampaignSpec("c1", channel="push", variants=(Variant("a"),),
                                            send_window=SendWindow(2, 3)))
        for user in ("u", "v"):
            await profiles.upsert_attributes(user, {"timezone": "America/New_York"})
        now = datetime(2026, 3, 7, 12, tzinfo=UTC).timestamp()
        d = await campaigns.choose("c1", "u", {}, now=now)
        assert d.send_at == datetime(2026, 3, 9, 6, tzinfo=UTC).timestamp()  # 02:00 EDT

        async def requests():
            yield PlanRequest("c1", ["v", "w"])
        with patch("time.time", return_value=now):
            planned = [b async for b in campaigns.plan(requests())]
        assert planned[0].send_at[0] == d.send_at and not planned[0].reasons[0]
    finally:
        await campaigns.close()
        store.close()


def _choose_many(target: str, n: int) -> list[pb.ChooseVariantResponse]:
    """`n` concurrent calls over 8 channels, each its own connection (spread over workers)."""
    chans = [grpc.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
             for _ in range(8)]
    try:
        stubs = [pb_grpc.CampaignServiceStub(c) for c in chans]
        req = pb.ChooseVariantRequest(campaign_id="capped", user_id="u1")
        with ThreadPoolExecutor(n) as pool:
            calls = [pool.submit(stubs[i % 8].ChooseVariant, req, timeout=60) for i in range(n)]
            return [c.result() for c in calls]
    finally:
        for c in chans:
            c.close()


def test_a_cap_of_one_a_day_holds_under_concurrent_calls_across_two_workers(server_process, tmp_path):
    server = server_process(tmp_path / "data", workers=2, env={"TAILOR_LMDB_SYNC": "false"})
    with grpc.insecure_channel(server.target) as ch:
        pb_grpc.CampaignServiceStub(ch).CreateCampaign(pb.CreateCampaignRequest(spec=spec(
            "capped", channel="push",
            frequency_caps=[pb.FrequencyCap(channel="push", max=1, window_seconds=DAY)])), timeout=30)
    got = _choose_many(server.target, 64)
    passed = [d for d in got if not d.suppressed]
    assert len(passed) == 1 and passed[0].variant_id in ("a", "b")
    assert {d.reason for d in got if d.suppressed} == {"frequency_cap"}


@pytest.mark.parametrize("bad, field", [
    (dict(frequency_caps=[pb.FrequencyCap(channel="push", max=1, window_seconds=0)]),
     "frequency_caps[0].window_seconds"),
    (dict(frequency_caps=[pb.FrequencyCap(channel="push", max=0, window_seconds=DAY)]),
     "frequency_caps[0].max"),
    (dict(frequency_caps=[pb.FrequencyCap(channel="web", max=1, window_seconds=DAY)]),
     "frequency_caps[0].channel"),
    (dict(quiet_hours=pb.QuietHours(start="9pm", end="08:00")), "quiet_hours.start"),
    (dict(quiet_hours=pb.QuietHours(start="21:00", end="24:00")), "quiet_hours.end"),
    (dict(quiet_hours=pb.QuietHours(action="later")), "quiet_hours.action"),
    (dict(quiet_hours=pb.QuietHours(action="suppress")), "quiet_hours.start"),
    (dict(quiet_hours=pb.QuietHours(action="defer")), "quiet_hours.start"),
    (dict(channels=["push", "fax"]), "channels[1]"),
    (dict(purpose="promotional"), "purpose"),
    (dict(send_window=pb.SendWindow(start_hour=25)), "send_window.start_hour"),
])
async def test_bad_contact_fields_are_invalid_arguments_naming_the_field(module_bare_server, bad,
                                                                        field):
    stub = pb_grpc.CampaignServiceStub(module_bare_server[1])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(channel="push", **bad)))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith(field + ":"), err.value.details()


@pytest.mark.parametrize("name", ["Mars/Olympus_Mons", "Europe", "America/Argentina"])
async def test_an_unknown_time_zone_is_an_invalid_argument(module_bare_server, name):
    """A region of the zone database ("Europe") is no zone either (it was INTERNAL: zoneinfo
    opens its directory)."""
    profiles = ppb_grpc.ProfileServiceStub(module_bare_server[1])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id="u", attributes={"timezone": name}))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("attributes[timezone]:")


async def _code(coro) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await coro
    return err.value.code()


def test_a_data_dir_from_before_the_contacts_table_opens_read_only_then_gains_it(tmp_path):
    import lmdb

    from server.store import TABLES, Store
    env = lmdb.open(str(tmp_path / "store"), max_dbs=len(TABLES) + 4)
    for name in TABLES:
        if name != "contacts":
            env.open_db(name.encode())
    env.close()
    old = Store(tmp_path / "store", readonly=True)
    assert old.get("profiles", b"x") is None
    old.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.get("contacts", b"u\x1fcontacts") is None
    store.close()



def _opt_out_now(server, user, channel="email") -> None:
    """Commit an opt-out at once, blocking the loop (as SetConsent's transaction, from
    another worker, lands while a decision's record waits in the writer's queue)."""
    from server.contact.consent import MARKETING, record_consent
    server.profiles.repo.update_meta(user, lambda meta: record_consent(
        meta, channel, MARKETING, False, "test", time.time(), 10), time.time(), "consent change")


@pytest.mark.parametrize("plan", [False, True], ids=["choose", "plan"])
async def test_an_opt_out_committed_while_the_decision_waits_for_the_writer_suppresses_it(
        stubs, tailor_server, plan):
    """The verdict is read on the loop, the record committed later by the writer: an opt-out
    committed in between was answered by SetConsent, then the decision came back a contact
    (counted in stats and caps). The writer checks consent again in its transaction."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()))
    for u in ("ann", "bob"):
        await consent(profiles, u, "email", True)
    campaigns = tailor_server.campaigns
    if plan:
        from server.campaigns.plan import PlanRequest

        async def requests():
            yield PlanRequest("c1", ["ann", "bob"], {})
        queue = campaigns._plan_log.enqueue

        def queued(rows):  # the slice read and queued: the opt-out commits before the writer
            future = queue(rows)
            _opt_out_now(tailor_server, "ann")
            return future
        with patch.object(campaigns._plan_log, "enqueue", queued):
            batch = [b async for b in campaigns.plan(requests())][0]
        got = dict(zip(batch.user_ids, batch.reasons))
    else:
        pending = campaigns.decide("c1", "ann", {})  # read: opted in; its record queued
        _opt_out_now(tailor_server, "ann")  # committed before the writer takes the record
        got = {"ann": (await pending.logged()).reason,
               "bob": (await campaigns.decide("c1", "bob", {}).logged()).reason}
    assert got == {"ann": "no_consent", "bob": ""}
    st = await stub.GetCampaignStats(pb.GetCampaignStatsRequest(campaign_id="c1"))
    assert sum(v.decisions for v in st.variants) == 1
    assert campaigns.export_user("ann")["contacts"] == []


async def test_a_decision_reads_its_users_meta_record_once_and_stamps_the_bytes_read(
        stubs, tailor_server, monkeypatch):
    """The re-check's stamp comes from the contact policy's own read of the meta record: one
    lookup of it a decision (a second read for the stamp cost a get and a digest more on the
    loop), and the stamp is the digest of the bytes as stored, which the writer compares (the
    same: nothing opened or parsed there)."""
    from server.campaigns.recheck import digest
    from server.store import keys
    from server.store.table import Table
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()))
    await consent(profiles, "ann", "email", True)
    campaigns, key = tailor_server.campaigns, keys.profile_meta_key("ann")
    looked_up, get_many, get = [], Table.get_many, Table.get
    monkeypatch.setattr(Table, "get_many", lambda self, txn, ks: (
        looked_up.extend(k for k in ks if k == key), get_many(self, txn, ks))[1])
    monkeypatch.setattr(Table, "get", lambda self, txn, k: (
        looked_up.extend([k] if k == key else []), get(self, txn, k))[1])
    _, [contact], _ = campaigns.read_contacts(campaigns.live("c1")[0], ["ann"])
    monkeypatch.undo()
    assert looked_up == [key]
    store = campaigns._store
    with store.read() as txn:
        stored = txn.get(key, db=store.db("profiles"))
    assert stored is not None and contact.stamp == digest(bytes(stored))


async def test_an_address_listed_while_the_decision_waits_for_the_writer_suppresses_it(
        stubs, tailor_server):
    """As an opt-out: a bounce or AddSuppression committed between the decision's read and its
    commit is found by the writer (the address's keys, one get each): suppressed_address."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec()))
    await consent(profiles, "ann", "email", True)
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="ann", attributes={"email": "Ann@Example.org"}))
    sup = tailor_server.suppressions
    pending = tailor_server.campaigns.decide("c1", "ann", {})
    key = sup.lookup_keys("email", "ann@example.org")[0]  # as AddSuppression lists it
    sup.store.put("suppression", key, b'{"kind": "email", "reason": "bounce", "timestamp": 1}')
    d = await pending.logged()
    assert (d.suppressed, d.reason, d.variant_id) == (True, "suppressed_address", "")


async def test_a_channel_opted_out_while_the_decision_waits_falls_back_on_another_allowed(
        stubs, tailor_server):
    """A ChooseVariant of a campaign of several channels (some capped: the writer may fall
    back) whose chosen channel is opted out before the commit goes on the next one allowed,
    as over a cap, with that channel's propensity plus the refused one's."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        channel="", channels=["email", "push"],
        frequency_caps=[pb.FrequencyCap(channel="push", max=5, window_seconds=DAY)])))
    await consent(profiles, "ann", "email", True)
    await consent(profiles, "ann", "push", True)
    campaigns = tailor_server.campaigns
    pending = campaigns.decide("c1", "ann", {}, fallback=True)
    chosen = pending.choice.channel  # drawn (Thompson) between the two
    other = {"email": "push", "push": "email"}[chosen]
    _opt_out_now(tailor_server, "ann", chosen)
    d = await pending.logged()
    assert (d.suppressed, d.channel) == (False, other)
    [rec] = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(include_pending=True))]
    assert (rec.channel, rec.channel_propensity) == (other, 1.0)  # its own and the refused one's


@pytest.mark.parametrize("plan", [False, True], ids=["choose", "plan"])
async def test_a_channel_opted_out_while_the_decision_waits_falls_back_on_a_campaign_without_caps(
        stubs, tailor_server, plan):
    """No cap can fill a channel of a campaign without caps, but an opt-out committed between
    the read and the commit refuses one all the same: the decision goes on the other channel
    the policy allowed (its propensity plus the refused one's), as with caps, not suppressed."""
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        channel="", channels=["email", "push"])))
    for c in ("email", "push"):
        await consent(profiles, "ann", c, True)
    campaigns, chosen = tailor_server.campaigns, []
    if plan:
        from server.campaigns.plan import PlanRequest

        async def requests():
            yield PlanRequest("c1", ["ann"], {})
        queue = campaigns._plan_log.enqueue

        def queued(rows):  # the slice read and queued: the opt-out commits before the writer
            future = queue(rows)
            chosen.append(rows[0][13])  # DecisionRecord.channel
            _opt_out_now(tailor_server, "ann", chosen[0])
            return future
        with patch.object(campaigns._plan_log, "enqueue", queued):
            batch = [b async for b in campaigns.plan(requests())][0]
        got = (batch.reasons[0], batch.channels[0])
    else:
        pending = campaigns.decide("c1", "ann", {}, fallback=True)
        chosen.append(pending.choice.channel)
        _opt_out_now(tailor_server, "ann", chosen[0])
        d = await pending.logged()
        got = (d.reason, d.channel)
    other = {"email": "push", "push": "email"}[chosen[0]]
    assert got == ("", other)
    [rec] = [r async for r in stub.ExportDecisions(pb.ExportDecisionsRequest(include_pending=True))]
    assert (rec.status, rec.channel, rec.channel_propensity) == ("pending", other, 1.0)

"""Retention per event type and per record kind (raw events, decision records, audit files),
enforced by the server's sweep with the clock moved forward (`TailorServer.sweep_retention(now)`);
feature states keep what the dropped events added."""
import time

import pytest

from protos.tailor.v1 import campaign_pb2 as cpb
from protos.tailor.v1 import campaign_pb2_grpc as cpb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.security.audit import audit_files, verify_chain

DAY = 86400.0


@pytest.fixture
def settings(settings):
    settings.event_retention_days = 30.0
    settings.event_retention_days_by_type = {"view": 2.0}
    settings.decision_retention_days = 10.0
    settings.audit_retention_days = 5.0
    settings.audit_max_bytes = 100  # every audit line in a file of its own
    return settings


def ev(event_id, type, ts, value=0.0):
    return pb.Event(event_id=event_id, user_id="rita", type=type, item_id=f"i-{event_id}",
                    timestamp=ts, value=value)


async def _features(profiles):
    got = await profiles.GetProfile(pb.GetProfileRequest(user_id="rita"))
    return dict(got.features.counts), got.features.monetary, len(got.events)


async def test_each_kind_goes_after_its_own_retention_and_features_stay(tailor_server, channel):
    profiles = pb_grpc.ProfileServiceStub(channel)
    campaigns = cpb_grpc.CampaignServiceStub(channel)
    now = time.time()
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        ev("v1", "view", now - DAY), ev("p1", "purchase", now - DAY, 5.0),
        ev("c1", "click", now - DAY), ev("v-old", "view", now - 3 * DAY)]))
    assert reply.accepted == 3 and "2-day retention" in reply.rejected[0].reason  # the view's own
    await campaigns.CreateCampaign(cpb.CreateCampaignRequest(spec=cpb.CampaignSpec(
        campaign_id="r", channel="push", policy="bernoulli_ts", reward_window_seconds=3600,
        variants=[cpb.Variant(id="a"), cpb.Variant(id="b")])))
    choice = await campaigns.ChooseVariant(cpb.ChooseVariantRequest(campaign_id="r", user_id="rita"))
    await campaigns.ReportReward(cpb.ReportRewardRequest(decision_id=choice.decision_id, reward=1.0))
    for channel_name in ("email", "sms", "push"):  # audited calls, one file each
        await profiles.SetConsent(pb.SetConsentRequest(user_id="rita", channel=channel_name,
                                                       opted_in=True, source="t"))
    counts = {"view/web": 1.0, "purchase/web": 1.0, "click/web": 1.0}
    assert await _features(profiles) == (counts, 5.0, 3)
    audit_dir = tailor_server.settings.audit_dir
    files = len(audit_files(audit_dir))
    assert files >= 4

    assert await tailor_server.sweep_retention(now) == {
        "events": 0, "decisions": 0, "impressions": 0, "dead_letters": 0, "audit_files": 0,
        "replay_tokens": 0}
    assert await tailor_server.sweep_retention(now + 2 * DAY) == {
        "events": 1, "decisions": 0, "impressions": 0, "dead_letters": 0, "audit_files": 0,
        "replay_tokens": 0}  # the view, 3 days old then
    assert await _features(profiles) == (counts, 5.0, 2)
    assert await tailor_server.sweep_retention(now + 7 * DAY) == {
        "events": 0, "decisions": 0, "impressions": 0, "dead_letters": 0,
        "audit_files": files - 1, "replay_tokens": 0}  # all but the file in use
    assert verify_chain(audit_dir, tailor_server.secrets["audit"]).ok
    assert await tailor_server.sweep_retention(now + 12 * DAY) == {
        "events": 0, "decisions": 1, "impressions": 0, "dead_letters": 0, "audit_files": 0,
        "replay_tokens": 0}
    exported = [d async for d in campaigns.ExportDecisions(cpb.ExportDecisionsRequest(campaign_id="r"))]
    assert exported == []
    stats = await campaigns.GetCampaignStats(cpb.GetCampaignStatsRequest(campaign_id="r"))
    assert sum(v.decisions for v in stats.variants) == 1  # counters hold no user and stay
    assert (await tailor_server.sweep_retention(now + 40 * DAY))["events"] == 2
    assert await _features(profiles) == (counts, 5.0, 0)


@pytest.fixture
def forever(settings):
    settings.event_retention_days = float("inf")  # raw events kept for good, views 2 days
    return settings


async def test_events_kept_forever_leave_the_other_retentions_running(forever, tailor_server,
                                                                      channel):
    """`event_retention_days = inf` (keep raw events) was accepted, then every sweep failed
    (OverflowError) before the decisions, the impression log and the audit files were swept:
    none of them expired any more. Now the views still go after 2 days and the rest stays."""
    profiles = pb_grpc.ProfileServiceStub(channel)
    now = time.time()
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        ev("f-old", "purchase", now - 3000 * DAY, 5.0), ev("f-view", "view", now - DAY)]))
    assert reply.accepted == 2
    dropped = await tailor_server.sweep_retention(now + 5 * DAY)
    assert dropped["events"] == 1
    got = await profiles.GetProfile(pb.GetProfileRequest(user_id="rita"))
    assert [e.event_id for e in got.events] == ["f-old"]


@pytest.fixture
def impressions_forever(settings):
    settings.impression_retention_days = float("inf")
    return settings


async def test_impressions_kept_forever_leave_the_other_retentions_running(
        impressions_forever, tailor_server, channel):
    """`impression_retention_days = inf` failed the sweep (OverflowError) as raw events' did,
    so the audit files after it never expired; it keeps impressions for good."""
    profiles = pb_grpc.ProfileServiceStub(channel)
    now = time.time()
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        ev("i-buy", "purchase", now - DAY, 5.0)]))
    assert reply.accepted == 1
    dropped = await tailor_server.sweep_retention(now + 400 * DAY)
    assert dropped["events"] == 1 and dropped["impressions"] == 0


@pytest.fixture
def paced(settings):
    settings.retention_sweep_chunk_keys = 3
    settings.retention_sweep_write_records = 2
    settings.retention_sweep_rest = 0.0
    return settings


async def test_the_sweep_goes_at_the_pace_the_settings_set(paced, tailor_server, channel,
                                                           monkeypatch):
    """The sweep's keys per read snapshot, records per write and rest after each write were
    constants of `store.sweeps` (10,000, 1,000, 1x the write's time): an operator could not
    make a pass gentler or faster. Set to 3 keys, 2 records and no rest, 5 expired events go
    in writes of 2 and 1 (the first snapshot's 3 picks), then 2, with no rest between."""
    profiles = pb_grpc.ProfileServiceStub(channel)
    now = time.time()
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[
        ev(f"s{i}", "purchase", now - DAY, 1.0) for i in range(5)]))
    assert reply.accepted == 5
    repo, stopping = tailor_server.profiles.repo, tailor_server.store.stopping
    writes, rests = [], []
    drop, wait = repo._drop_keys, stopping.wait
    monkeypatch.setattr(repo, "_drop_keys",
                        lambda txn, doomed: writes.append(len(doomed)) or drop(txn, doomed))
    monkeypatch.setattr(stopping, "wait", lambda timeout=None: rests.append(timeout) or wait(timeout))
    assert (await tailor_server.sweep_retention(now + 31 * DAY))["events"] == 5
    assert writes == [2, 1, 2]
    assert rests == [0.0] * 3


def test_the_sweep_settings_default_to_the_sweeps_own_pace():
    """Moving the pace into Settings changed no default."""
    from server.config import Settings
    from server.store import SweepPace
    s = Settings()
    assert SweepPace(s.retention_sweep_chunk_keys, s.retention_sweep_write_records,
                     s.retention_sweep_rest) == SweepPace() == SweepPace(10_000, 1_000, 1.0)


def test_retention_and_future_tolerance_settings_are_bounded():
    from pydantic import ValidationError

    from server.config import Settings
    for bad in ({"event_retention_days": 0}, {"event_retention_days": -1},
                {"event_retention_days": float("nan")}, {"event_future_tolerance_s": -60},
                {"event_future_tolerance_s": float("inf")},
                {"event_future_tolerance_s": float("nan")}):
        with pytest.raises(ValidationError):
            Settings(**bad)
    assert Settings(event_retention_days=float("inf")).event_retention_days == float("inf")


def test_every_cutoff_comes_from_one_function_clamped_at_zero():
    """`server.retention.retention_cutoffs` computes every cutoff of a sweep; a retention kept
    for good gives 0 (nothing is older), which every store's time key can encode."""
    from server.config import Settings
    from server.retention import retention_cutoffs
    inf = float("inf")
    now = 100 * DAY
    cut = retention_cutoffs(Settings(event_retention_days=30, event_retention_days_by_type={
        "view": 2, "purchase": inf}, decision_retention_days=10, impression_retention_days=inf,
        audit_retention_days=5, dead_letter_retention_days=inf), now)
    assert (cut.events, dict(cut.events_by_type), cut.decisions, cut.impressions, cut.audit,
            cut.dead_letters) == (
        70 * DAY, {"view": 98 * DAY, "purchase": 0.0}, 90 * DAY, 0.0, 95 * DAY, 0.0)
    assert retention_cutoffs(Settings(), now).dead_letters == 70 * DAY  # 30 days by default
    cut = retention_cutoffs(Settings(event_retention_days=inf, decision_retention_days=inf,
                                     audit_retention_days=0), now)
    assert (cut.events, cut.decisions, cut.audit) == (0.0, 0.0, None)

"""Send-time and channel choice through a real server: the user's best hour inside the
campaign's send window, Thompson channel choice among consented channels, and both
propensities logged with the decision (ExportDecisions)."""
import asyncio
import time

import pytest

from kernels.channel_choice import win_probability_2
from protos.tailor.v1 import campaign_pb2 as pb
from protos.tailor.v1 import campaign_pb2_grpc as pb_grpc
from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as ppb_grpc

H, DAY = 3600.0, 86400.0
EPSILON = 0.1


@pytest.fixture
def settings(tmp_path):
    from server.config import Settings
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets", contact_send_time_epsilon=EPSILON)


@pytest.fixture
def stubs(channel):
    return pb_grpc.CampaignServiceStub(channel), ppb_grpc.ProfileServiceStub(channel)


def spec(cid, **kw) -> pb.CampaignSpec:
    return pb.CampaignSpec(campaign_id=cid, policy="bernoulli_ts", reward_window_seconds=3600,
                           variants=[pb.Variant(id="a"), pb.Variant(id="b")], **kw)


async def track(profiles, user, kind, times):
    events = [ppb.Event(event_id=f"{user}-{kind}-{i}", user_id=user, type=kind, timestamp=t)
              for i, t in enumerate(times)]
    resp = await profiles.TrackEvents(ppb.TrackEventsRequest(events=events))
    assert not resp.rejected


async def exported(stub):
    return {r.decision_id: r async for r in stub.ExportDecisions(
        pb.ExportDecisionsRequest(include_pending=True))}


async def test_send_at_is_the_users_best_hour_in_the_window_with_its_propensity(stubs):
    stub, profiles = stubs
    now = time.time()
    hour = (int(now // H) + 5) % 24          # the window's third hour, 5 hours from now (UTC)
    window = pb.SendWindow(start_hour=(hour - 2) % 24, end_hour=(hour + 3) % 24)
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("t", channel="push",
                                                                 send_window=window)))
    start = (now // H + 3) * H                # the window's next start: 3 hours from now
    slots = [start + j * H for j in range(5)]  # five local (UTC) hour slots
    best = slots[2]
    # a user who opened pushes at that hour of the week for four weeks
    await track(profiles, "owl", "push_open", [best - k * 7 * DAY for k in (1, 2, 3, 4)])
    for user, favourite in (("owl", best), ("nobody", slots[0])):  # no history: first slot
        d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="t", user_id=user))
        assert not d.suppressed and d.channel == "push" and d.send_at in slots
        rec = (await exported(stub))[d.decision_id]
        assert (rec.channel, rec.send_at, rec.channel_propensity) == ("push", d.send_at, 1.0)
        expected = 1 - EPSILON + EPSILON / 5 if d.send_at == favourite else EPSILON / 5
        assert rec.send_at_propensity == pytest.approx(expected)


async def test_channel_choice_follows_engagement_among_consented_channels(stubs):
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("c", channel="email",
                                                                 channels=["email", "push"])))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="fan", channel="email",
                                                    opted_in=True, source="test"))
    now = time.time() - 60
    await track(profiles, "fan", "email_sent", [now] * 20)
    await track(profiles, "fan", "push_sent", [now] * 20)
    await track(profiles, "fan", "push_open", [now] * 15)
    # push Beta(1 + 15, 9 + 5) against email Beta(1, 9 + 20) (the prior before any refit):
    # push wins all but ~1e-6 of draws; the logged propensity is that probability
    d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c", user_id="fan"))
    rec = (await exported(stub))[d.decision_id]
    assert (d.channel, rec.channel) == ("push", "push")
    assert rec.channel_propensity == pytest.approx(win_probability_2(16, 14, 1, 29), abs=1e-6)
    assert (d.send_at, rec.send_at_propensity) == (0.0, 1.0)  # no send window: now
    # without an email opt-in only push is allowed: no choice, propensity 1
    d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="c", user_id="stranger"))
    rec = (await exported(stub))[d.decision_id]
    assert (d.channel, rec.channel_propensity) == ("push", 1.0)


def _last_dst_change(zone, now: float) -> float:
    """The unix time of `zone`'s latest UTC-offset change before `now` (within a year)."""
    from datetime import datetime
    offset = [datetime.fromtimestamp(now - d * DAY, zone).utcoffset() for d in range(366)]
    d = next(d for d in range(1, 366) if offset[d] != offset[d - 1])
    return now - d * DAY


async def test_hours_of_week_count_the_users_local_time_across_dst(stubs):
    """The send-time model reads each user's hour-of-week engagement in local time (its
    population prior too). The events were binned in UTC: a Tokyo user who opens at 20:00
    had their hour at 11:00, and a New York user's 20:00 opens fell into two UTC hours across
    a DST change. They are binned in the user's `timezone` (else the server's default zone)."""
    from datetime import datetime
    from zoneinfo import ZoneInfo
    _, profiles = stubs
    now = time.time()
    for user, name in (("tk", "Asia/Tokyo"), ("ny", "America/New_York")):
        zone = ZoneInfo(name)
        await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
            user_id=user, attributes={"timezone": name}))
        around = _last_dst_change(ZoneInfo("America/New_York"), now)
        days = [datetime.fromtimestamp(around + k * DAY, zone).date() for k in range(-6, 7)]
        opens = [datetime(d.year, d.month, d.day, 20, 5, tzinfo=zone).timestamp() for d in days]
        await track(profiles, user, "push_open", [t for t in opens if t < now])
        got = await profiles.GetProfile(ppb.GetProfileRequest(user_id=user))
        hours = list(got.features.hour_of_week)
        busy = [h for h, v in enumerate(hours) if v > 1e-9]
        assert {h % 24 for h in busy} == {20}, (user, busy)
        assert len(busy) == 7  # one local hour on each day of the week


async def test_a_user_whose_zone_goes_back_to_utc_is_binned_in_utc_again(stubs):
    """The state keeps the offset of its latest event: a batch of UTC users only passed no
    offsets, so a user who left Tokyo kept Tokyo's +9 h for every later event."""
    from datetime import UTC, datetime
    _, profiles = stubs
    now = time.time()
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="mover", attributes={"timezone": "Asia/Tokyo"}))
    await track(profiles, "mover", "push_open", [now - 3 * DAY])
    await profiles.UpsertAttributes(ppb.UpsertAttributesRequest(
        user_id="mover", attributes={"timezone": ""}))  # the server's default: UTC
    at = (now // DAY - 1) * DAY + 7 * H  # 07:00 UTC yesterday
    resp = await profiles.TrackEvents(ppb.TrackEventsRequest(events=[ppb.Event(
        event_id="mover-utc", user_id="mover", type="push_open", timestamp=at)]))
    assert not resp.rejected
    hours = list((await profiles.GetProfile(ppb.GetProfileRequest(user_id="mover"))).features.hour_of_week)
    utc = datetime.fromtimestamp(at, UTC)
    assert hours[utc.weekday() * 24 + 7] > 0.5  # binned at 07:00, not at Tokyo's 16:00
    assert hours[utc.weekday() * 24 + 16] == 0.0


async def test_plan_campaign_answers_the_contact_propensities_export_decisions_logs(stubs):
    stub, profiles = stubs
    now = time.time()
    hour = (int(now // H) + 5) % 24
    window = pb.SendWindow(start_hour=(hour - 2) % 24, end_hour=(hour + 3) % 24)
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec(
        "p", channel="email", channels=["email", "push"], send_window=window)))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="fan", channel="email",
                                                    opted_in=True, source="test"))
    await track(profiles, "fan", "email_sent", [now - 60] * 20)
    await track(profiles, "fan", "push_sent", [now - 60] * 20)
    await track(profiles, "fan", "push_open", [now - 60] * 15)
    msg = pb.PlanCampaignRequest(campaign_id="p", user_ids=["fan", "stranger", "owl"])
    answered = [d async for r in stub.PlanCampaign(iter([msg]), timeout=30) for d in r.decisions]
    logged = await exported(stub)
    assert [d.user_id for d in answered] == ["fan", "stranger", "owl"]
    # fan chooses between two channels (push all but ~1e-6 of draws): not 1; every send time
    # is one of five slots, chosen with probability 1 - eps + eps/5 or eps/5: never 1
    assert answered[0].channel_propensity == pytest.approx(
        win_probability_2(16, 14, 1, 29), abs=1e-6)
    for d in answered:
        rec = logged[d.decision_id]
        assert (d.channel, d.send_at) == (rec.channel, rec.send_at)
        assert (d.channel_propensity, d.send_at_propensity) == (
            rec.channel_propensity, rec.send_at_propensity)
        assert d.send_at_propensity in (pytest.approx(1 - EPSILON + EPSILON / 5),
                                        pytest.approx(EPSILON / 5))


async def test_the_clients_export_carries_the_contact_choice_and_its_propensities(
        stubs, tailor_server):
    """`TailorClient.export_decisions` (and so `campaign export`) gives each decision's
    channel, send time and their propensities, as ExportDecisions does."""
    from clients.client import TailorClient
    stub, profiles = stubs
    await stub.CreateCampaign(pb.CreateCampaignRequest(spec=spec("x", channel="email",
                                                                 channels=["email", "push"])))
    await profiles.SetConsent(ppb.SetConsentRequest(user_id="fan", channel="email",
                                                    opted_in=True, source="test"))
    await track(profiles, "fan", "push_open", [time.time() - 60] * 15)
    d = await stub.ChooseVariant(pb.ChooseVariantRequest(campaign_id="x", user_id="fan"))
    rec = (await exported(stub))[d.decision_id]
    assert rec.channel_propensity < 1.0

    def export():
        with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=30) as client:
            return list(client.export_decisions("x", include_pending=True))
    (got,) = await asyncio.to_thread(export)
    assert (got["channel"], got["send_at"], got["channel_propensity"], got["send_at_propensity"],
            got["reason"]) == (rec.channel, rec.send_at, rec.channel_propensity,
                               rec.send_at_propensity, "")

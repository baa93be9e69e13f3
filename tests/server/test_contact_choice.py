"""ContactPolicy with send-time and channel choice: a batch decides as each contact alone."""
import datetime as dt
from collections import Counter

import numpy as np
import pytest

from kernels import feature_layout as FL
from kernels import features as F
from kernels.features import Events
from server.contact import ContactHistory, ContactPolicy, FrequencyCap, QuietHours, SendWindow
from server.contact.policy import Contact
from server.profiles.schema import ProfileSchema

LAYOUT = ProfileSchema().layout()
MONDAY = dt.datetime(2024, 1, 1, tzinfo=dt.UTC).timestamp()
H = 3600.0
OPT_IN = {"consent": {"email": {"opted_in": True}}}


class Spec:
    purpose, channel, channels = "marketing", "email", ("email", "push")
    frequency_caps = ()
    quiet_hours = QuietHours()
    send_window = SendWindow(8, 12)


def user(kind_times):
    types = [LAYOUT.type_code(k) for k, _ in kind_times]
    chans = [LAYOUT.channel_code(k.split("_")[0]) for k, _ in kind_times]
    return F.update(LAYOUT, FL.new_state(LAYOUT), Events(types, chans, [t for _, t in kind_times]))


def policy(seed=0):
    return ContactPolicy(layout=LAYOUT, epsilon=0.0, n_mc=64, rng=np.random.default_rng(seed))


def test_a_batch_decides_as_each_contact_alone():
    now = MONDAY  # Monday 00:00 UTC; the window is Monday 08:00-12:00 UTC
    pusher = user([("push_sent", now - 7 * 86400 + 10 * H)] * 20
                  + [("push_open", now - 7 * 86400 + 10 * H)] * 15
                  + [("email_sent", now - 7 * 86400 + 10 * H)] * 20)
    contacts = [Contact("p", OPT_IN, pusher), Contact("n", None, None), Contact("m", OPT_IN, None)]
    batch = policy().verdicts(Spec, contacts, now)
    alone = [policy().verdicts(Spec, [c], now)[0] for c in contacts]
    # pusher: push (Beta(16, 14) vs Beta(1, 29)) at Monday 10:00, their opens' hour
    assert (batch[0].channel, batch[0].send_at, batch[0].send_at_propensity) == \
           ("push", now + 10 * H, 1.0)
    # no email consent: push without a choice; no history: the uniform prior's first slot
    assert (batch[1].channel, batch[1].channel_propensity, batch[1].send_at) == \
           ("push", 1.0, now + 8 * H)
    assert batch[2].channel in ("email", "push") and 0 < batch[2].channel_propensity < 1
    for b, a in zip(batch[:2], alone[:2]):
        assert b == a


def test_quiet_hours_apply_at_the_chosen_time():
    class Quiet(Spec):
        channels = ("push",)
        quiet_hours = QuietHours("07:00", "09:00", "defer")
    v = policy().verdicts(Quiet, [Contact("n", None, None)], MONDAY)[0]
    assert v.send_at == MONDAY + 9 * H  # chosen 08:00 is quiet: deferred to 09:00


def test_no_layout_means_no_choice():
    v = ContactPolicy().verdicts(Spec, [Contact("m", OPT_IN, None)], MONDAY)[0]
    assert (v.channel, v.send_at, v.channel_propensity, v.send_at_propensity) == \
           ("email", 0.0, 1.0, 1.0)
    assert not ContactPolicy().needs_state(Spec) and policy().needs_state(Spec)


def test_inside_the_window_the_first_slot_is_now():
    v = policy().verdicts(Spec, [Contact("n", None, None)], MONDAY + 9.5 * H)[0]
    assert v.send_at == 0.0 and v.send_at_propensity == pytest.approx(1.0)


class Quiet08(Spec):
    channels = ("push",)
    quiet_hours = QuietHours("07:00", "09:00", "defer")  # the window's 08:00 slot is quiet


def test_quiet_slots_are_no_candidates_so_each_send_time_has_its_logged_propensity():
    """Uniform exploration over the window 08-12 with 08:00 quiet: 09, 10 and 11 each 1/3 (a
    quiet 08:00 deferred to 09:00 made 09:00 twice as likely as its logged 1/4)."""
    pol = ContactPolicy(layout=LAYOUT, epsilon=1.0, n_mc=64, rng=np.random.default_rng(0))
    verdicts = pol.verdicts(Quiet08, [Contact(str(i), None, None) for i in range(3000)], MONDAY)
    sent = Counter(v.send_at for v in verdicts)
    assert sorted(sent) == [MONDAY + 9 * H, MONDAY + 10 * H, MONDAY + 11 * H]
    assert all(v.send_at_propensity == pytest.approx(1 / 3) for v in verdicts)
    assert all(abs(k / 3000 - 1 / 3) < 0.04 for k in sent.values())


def test_the_greedy_choice_is_the_best_hour_outside_quiet_hours():
    week_ago = MONDAY - 7 * 86400
    opener = user([("push_open", week_ago + 8 * H)] * 6 + [("push_open", week_ago + 11 * H)] * 3)
    v = policy().verdicts(Quiet08, [Contact("o", None, opener)], MONDAY)[0]  # epsilon 0
    assert (v.send_at, v.send_at_propensity) == (MONDAY + 11 * H, 1.0)  # not 08:00 put off to 09


@pytest.mark.parametrize("action, expected", [("defer", (False, 13 * H)), ("suppress", (True, 0.0))])
def test_a_window_quiet_throughout_sends_when_quiet_hours_end_or_not_at_all(action, expected):
    class Night(Spec):
        channels = ("push",)
        quiet_hours = QuietHours("07:00", "13:00", action)
    pol = ContactPolicy(layout=LAYOUT, epsilon=1.0, n_mc=64, rng=np.random.default_rng(0))
    for v in pol.verdicts(Night, [Contact(str(i), None, None) for i in range(50)], MONDAY):
        assert (v.suppressed, v.send_at and v.send_at - MONDAY) == expected
        assert v.send_at_propensity == 1.0  # every slot quiet: the window's start, always


def test_quiet_slots_follow_the_users_zone():
    """Paris is UTC+1 in January: the window 08-12 local is 07-11 UTC, and quiet hours
    09:00-10:00 local take its 08:00 UTC slot."""
    class Paris(Quiet08):
        quiet_hours = QuietHours("09:00", "10:00", "defer")
    paris = {"attributes": {"timezone": "Europe/Paris"}}
    pol = ContactPolicy(layout=LAYOUT, epsilon=1.0, n_mc=64, rng=np.random.default_rng(0))
    verdicts = pol.verdicts(Paris, [Contact(str(i), paris, None) for i in range(600)], MONDAY)
    assert sorted({v.send_at for v in verdicts}) == [MONDAY + 7 * H, MONDAY + 9 * H,
                                                     MONDAY + 10 * H]
    assert all(v.send_at_propensity == pytest.approx(1 / 3) for v in verdicts)


@pytest.mark.parametrize("zone, day", [("America/New_York", (2026, 3, 8)),
                                       ("America/New_York", (2026, 11, 1)),
                                       ("Asia/Kolkata", (2026, 1, 5))])
def test_the_quiet_mask_answers_as_quiet_until_over_a_day(zone, day):
    from zoneinfo import ZoneInfo

    from server.contact.quiet_hours import quiet_mask, quiet_until
    tz, quiet = ZoneInfo(zone), QuietHours("01:30", "06:00")
    start = dt.datetime(*day, tzinfo=dt.UTC).timestamp()
    for lo in (start, start + 12 * H):  # spans with and without the change
        at = lo + 900.0 * np.arange(48)
        assert quiet_mask(quiet, tz, at).tolist() == [quiet_until(quiet, tz, t) != 0 for t in at]


def _ten_oclock_prior():
    """A population prior whose users engage at 10:00 local, every day (hours 10, 34, ...)."""
    from kernels.contact_population import Population
    from server.contact.prior import PriorSource
    p = np.full(168, 0.1)
    p[[d * 24 + 10 for d in range(7)]] = 10.0
    flat = Population.uninformed(LAYOUT)
    source = PriorSource(LAYOUT, lambda limit, start: (np.zeros((0, LAYOUT.size)), b""))
    source._current = Population(p / p.sum(), 50.0, flat.channels, flat.channel_a, flat.channel_b)
    return source


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "Asia/Kathmandu", "America/New_York",
                                  "Asia/Tokyo"])
def test_send_times_are_cut_and_scored_in_the_users_zone_without_a_state(zone):
    """A user with a `timezone` but no feature state yet (no event tracked): the window 08-13
    local, the population engaging at 10:00 local. The slots are that zone's whole hours and
    the greedy one is 10:00 local (the slots were cut and scored as UTC hours: 08:00 in Kolkata
    and New York, 09:00 in Tokyo, and 09:30, 10:30 ... in Kolkata when exploring)."""
    from zoneinfo import ZoneInfo

    class Morning(Spec):
        channels = ("push",)
        send_window = SendWindow(8, 13)
    now = dt.datetime(2026, 12, 6, 20, tzinfo=dt.UTC).timestamp()  # Sunday: every window is Monday's
    tz, meta = ZoneInfo(zone), {"attributes": {"timezone": zone}}
    greedy = ContactPolicy(layout=LAYOUT, prior=_ten_oclock_prior(), epsilon=0.0, n_mc=64,
                           rng=np.random.default_rng(0)).verdicts(Morning, [Contact("u", meta, None)], now)[0]
    assert dt.datetime.fromtimestamp(greedy.send_at, tz).strftime("%a %H:%M") == "Mon 10:00"
    explore = ContactPolicy(layout=LAYOUT, epsilon=1.0, n_mc=64, rng=np.random.default_rng(0))
    times = {dt.datetime.fromtimestamp(v.send_at, tz).strftime("%H:%M") for v in explore.verdicts(
        Morning, [Contact(str(i), meta, None) for i in range(300)], now)}
    assert times == {"08:00", "09:00", "10:00", "11:00", "12:00"}


def test_a_state_binned_before_a_dst_change_is_scored_at_todays_offset():
    """A New York user whose last events came in summer (the state's offset -240) and who opens
    at 10:00 local; in December (offset -300) the greedy slot is still 10:00 local, not 09:00."""
    from zoneinfo import ZoneInfo
    ny = ZoneInfo("America/New_York")

    class Morning(Spec):
        channels = ("push",)
        send_window = SendWindow(8, 13)
    july = [dt.datetime(2026, 7, d, 10, tzinfo=ny).timestamp() for d in range(6, 11)]
    state = F.update(LAYOUT, FL.new_state(LAYOUT), Events(
        [LAYOUT.type_code("push_open")] * 5, [LAYOUT.channel_code("push")] * 5, july,
        tz_offset_min=[-240] * 5))
    now = dt.datetime(2026, 12, 6, 20, tzinfo=dt.UTC).timestamp()
    v = policy().verdicts(Morning, [Contact("u", {"attributes": {"timezone": "America/New_York"}},
                                            state)], now)[0]
    assert dt.datetime.fromtimestamp(v.send_at, ny).strftime("%a %H:%M") == "Mon 10:00"


@pytest.mark.parametrize("zone, night, best, expected", [
    ("America/New_York", (2026, 3, 8), 4, "04:00"),  # 02:00 -> 03:00: an hour off after it
    ("Australia/Lord_Howe", (2026, 10, 4), 4, "04:00"),  # 02:00 -> 02:30: :30 after it
])
def test_a_window_across_a_dst_change_is_cut_and_scored_in_each_hours_own_offset(
        zone, night, best, expected):
    """The window 00-06 local on a spring-forward night: its slots are the local hours that
    exist (00, 01, 03, 04, 05), each scored at its own offset; one offset a row (the start's)
    put the slots after the change at :30 in Lord Howe and scored them an hour off in New York
    (a 04:00 audience sent at 05:00)."""
    from zoneinfo import ZoneInfo

    class Night(Spec):
        channels = ("push",)
        send_window = SendWindow(0, 6)
    tz, meta = ZoneInfo(zone), {"attributes": {"timezone": zone}}
    now = dt.datetime(*night, tzinfo=tz).timestamp() - 12 * H  # the day before, at noon
    explore = ContactPolicy(layout=LAYOUT, epsilon=1.0, n_mc=64, rng=np.random.default_rng(0))
    times = {dt.datetime.fromtimestamp(v.send_at, tz).strftime("%H:%M") for v in explore.verdicts(
        Night, [Contact(str(i), meta, None) for i in range(300)], now)}
    assert times == {"00:00", "01:00", "03:00", "04:00", "05:00"}
    prior = _ten_oclock_prior()
    p = np.full(168, 0.1)
    p[[d * 24 + best for d in range(7)]] = 10.0
    prior._current = type(prior.current)(p / p.sum(), 50.0, prior.current.channels,
                                         prior.current.channel_a, prior.current.channel_b)
    greedy = ContactPolicy(layout=LAYOUT, prior=prior, epsilon=0.0, n_mc=64,
                           rng=np.random.default_rng(0)).verdicts(Night, [Contact("u", meta, None)], now)[0]
    assert dt.datetime.fromtimestamp(greedy.send_at, tz).strftime("%H:%M") == expected


class PushCapped(Spec):
    """Email and push, the window Monday 08-12 UTC, one push an hour."""
    frequency_caps = (FrequencyCap("push", 1, H),)


def _pusher():
    """Engages on push, at 10:00 (the greedy slot: Monday 10:00)."""
    week_ago = MONDAY - 7 * 86400
    return user([("push_sent", week_ago + 10 * H)] * 20 + [("push_open", week_ago + 10 * H)] * 15
                + [("email_sent", week_ago + 10 * H)] * 20)


def test_the_channels_caps_are_judged_at_the_chosen_send_time_not_the_windows_start():
    """A push is already scheduled at 10:00. The caps were judged at the window's start
    (08:00: push free), push was chosen for the 10:00 slot, and the check at 10:00 suppressed
    the user `frequency_cap` with email free. At the time the message goes, push is capped:
    email then."""
    history = ContactHistory([[MONDAY + 10 * H, "push", "scheduled-push"]])
    v = policy().verdicts(PushCapped, [Contact("p", OPT_IN, _pusher(), history)], MONDAY)[0]
    assert (v.suppressed, v.channel, v.send_at) == (False, "email", MONDAY + 10 * H)
    assert v.channel_propensity == 1.0  # push was no candidate at 10:00


def test_a_channel_capped_at_the_windows_start_but_free_at_the_send_time_may_be_chosen():
    """A push went at 08:00: capped at the window's start, free at 10:00, when the message
    goes. It was left out (email at 10:00, propensity 1); the user's best channel is push."""
    history = ContactHistory([[MONDAY + 8 * H, "push", "early-push"]])
    v = policy().verdicts(PushCapped, [Contact("p", OPT_IN, _pusher(), history)], MONDAY)[0]
    assert (v.suppressed, v.channel, v.send_at) == (False, "push", MONDAY + 10 * H)

"""The contact policy's pure parts: consent, quiet hours in local time (DST, several zones),
frequency-cap counting, and the verdicts that combine them. Expected instants are worked out
by hand from the zones' offsets (New York: EST UTC-5, EDT UTC-4 from 2026-03-08 02:00 local
to 2026-11-01 02:00 local)."""
from datetime import UTC, datetime

import pytest

from server.config import DEFAULT_CONSENT
from server.contact import (
    Contact,
    ContactHistory,
    ContactPolicy,
    FrequencyCap,
    QuietHours,
    SendWindow,
)
from server.contact.quiet_hours import quiet_until, zone
from server.errors import InvalidArgument

NY = zone("tz", "America/New_York")
NIGHT = QuietHours("21:00", "08:00")


def utc(*args) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


def test_consent_needs_an_opt_in_for_email_and_no_opt_out_for_push():
    from server.contact import consent_reason
    opted_in = {"consent": {"email": {"opted_in": True, "source": "form", "timestamp": 1.0}}}
    opted_out = {"consent": {"push": {"opted_in": False, "source": "app", "timestamp": 1.0}}}
    assert consent_reason(None, "email", "marketing", DEFAULT_CONSENT) == "no_consent"
    assert consent_reason(opted_in, "email", "marketing", DEFAULT_CONSENT) is None
    assert consent_reason(None, "push", "marketing", DEFAULT_CONSENT) is None
    assert consent_reason(opted_out, "push", "marketing", DEFAULT_CONSENT) == "no_consent"
    assert consent_reason(opted_out, "push", "transactional", DEFAULT_CONSENT) is None
    assert consent_reason(None, "web", "marketing", DEFAULT_CONSENT) is None


def test_deferral_over_the_spring_forward_night_is_one_real_hour_shorter():
    # 2026-03-07 23:00 EST = 03-08 04:00 UTC; 08:00 EDT = 12:00 UTC: 8 real hours, not 9
    assert quiet_until(NIGHT, NY, utc(2026, 3, 8, 4)) == utc(2026, 3, 8, 12)
    # 2026-10-31 23:00 EDT = 11-01 03:00 UTC; 08:00 EST = 13:00 UTC: 10 real hours, not 9
    assert quiet_until(NIGHT, NY, utc(2026, 11, 1, 3)) == utc(2026, 11, 1, 13)


def test_deferral_in_the_repeated_fall_back_hour_ends_at_its_second_pass():
    # 2026-11-01 01:00-01:59 comes twice: EDT (05:xx UTC), then EST (06:xx UTC)
    late = QuietHours("22:00", "01:30")
    assert quiet_until(late, NY, utc(2026, 11, 1, 5, 15)) == utc(2026, 11, 1, 5, 30)  # EDT
    assert quiet_until(late, NY, utc(2026, 11, 1, 6, 15)) == utc(2026, 11, 1, 6, 30)  # EST
    short = QuietHours("01:00", "01:30")
    assert quiet_until(short, NY, utc(2026, 11, 1, 6, 10)) == utc(2026, 11, 1, 6, 30)
    assert quiet_until(short, NY, utc(2026, 11, 1, 6, 40)) == 0.0


def test_send_windows_keep_their_local_hours_across_a_dst_change():
    window = SendWindow(9, 11)
    # 2026-03-07 20:00 EST, the evening before spring forward: 09:00-11:00 EDT the next day
    assert ContactPolicy._window(window, NY, utc(2026, 3, 8, 1)) == \
        (utc(2026, 3, 8, 13), utc(2026, 3, 8, 15))
    # 2026-10-31 20:00 EDT, the evening before fall back: 09:00-11:00 EST the next day
    assert ContactPolicy._window(window, NY, utc(2026, 11, 1)) == \
        (utc(2026, 11, 1, 14), utc(2026, 11, 1, 16))
    # inside a window over midnight (22-06) at 01:00 EST: from now to 06:00 EDT
    assert ContactPolicy._window(SendWindow(22, 6), NY, utc(2026, 3, 8, 6)) == \
        (utc(2026, 3, 8, 6), utc(2026, 3, 8, 10))
    assert ContactPolicy._window(window, NY, utc(2026, 6, 1, 14)) == \
        (utc(2026, 6, 1, 14), utc(2026, 6, 1, 15))  # 10:00 EDT: inside, until 11:00


def test_a_send_window_inside_the_spring_forward_gap_is_the_next_days():
    """02:00-03:00 does not exist in New York on 2026-03-08: from 07:00 EST on the 7th (its
    window over) the next is the 9th's (it was an empty span, and every decision on it a
    ValueError: INTERNAL)."""
    window = SendWindow(2, 3)
    assert ContactPolicy._window(window, NY, utc(2026, 3, 7, 12)) == \
        (utc(2026, 3, 9, 6), utc(2026, 3, 9, 7))  # 02:00-03:00 EDT on the 9th

    class Spec:
        purpose, channel, channels = "marketing", "push", ()
        frequency_caps, quiet_hours, send_window = (), QuietHours(), window
    from server.profiles.schema import ProfileSchema
    policy = ContactPolicy(layout=ProfileSchema().layout())
    meta = {"attributes": {"timezone": "America/New_York"}}
    verdict = policy.verdicts(Spec, [Contact("u", meta)], utc(2026, 3, 7, 12))[0]
    assert (verdict.send_at, verdict.send_at_propensity) == (utc(2026, 3, 9, 6), 1.0)


def test_quiet_hours_follow_each_users_zone():
    now = utc(2026, 6, 15, 20)  # Paris 22:00 CEST (quiet), Los Angeles 13:00 PDT (not)
    assert quiet_until(NIGHT, zone("tz", "Europe/Paris"), now) == utc(2026, 6, 16, 6)
    assert quiet_until(NIGHT, zone("tz", "America/Los_Angeles"), now) == 0.0
    # early morning is quiet too, until 08:00 the same day (Tokyo 07:00 JST = 22:00 UTC before)
    assert quiet_until(NIGHT, zone("tz", "Asia/Tokyo"), utc(2026, 6, 15, 22)) == utc(2026, 6, 15, 23)


def test_quiet_hours_within_a_day_and_their_bounds():
    noon = QuietHours("12:00", "14:00")
    assert quiet_until(noon, NY, utc(2026, 6, 1, 16)) == utc(2026, 6, 1, 18)  # 12:00 EDT
    assert quiet_until(noon, NY, utc(2026, 6, 1, 18)) == 0.0  # end excluded
    assert quiet_until(noon, NY, utc(2026, 6, 1, 15, 59)) == 0.0


def test_quiet_hours_answers_change_at_the_minute_they_should():
    """`quiet_until` keeps its answer for the rest of a UTC minute: a call in the next minute,
    or back in an earlier one, is answered afresh."""
    noon = QuietHours("12:00", "14:00")
    assert quiet_until(noon, NY, utc(2026, 6, 1, 15, 59, 59)) == 0.0  # 11:59:59 EDT
    assert quiet_until(noon, NY, utc(2026, 6, 1, 16)) == utc(2026, 6, 1, 18)
    assert quiet_until(noon, NY, utc(2026, 6, 1, 16, 0, 59)) == utc(2026, 6, 1, 18)
    assert quiet_until(noon, NY, utc(2026, 6, 1, 15, 59, 30)) == 0.0
    assert quiet_until(noon, NY, utc(2026, 6, 1, 17, 59, 59)) == utc(2026, 6, 1, 18)
    assert quiet_until(noon, NY, utc(2026, 6, 1, 18)) == 0.0


def test_quiet_hours_in_a_zone_whose_offset_has_seconds():
    # Monrovia was UTC-0:44:30 until 1972: its local minutes start at 30 s past UTC ones, so
    # 12:44:29 UTC (11:59:59 local) and 12:44:30 UTC (12:00:00 local) get different answers
    monrovia, noon = zone("tz", "Africa/Monrovia"), QuietHours("12:00", "14:00")
    assert quiet_until(noon, monrovia, utc(1970, 6, 1, 12, 44, 29)) == 0.0
    assert quiet_until(noon, monrovia, utc(1970, 6, 1, 12, 44, 30)) == utc(1970, 6, 1, 14, 44, 30)
    assert quiet_until(noon, monrovia, utc(1970, 6, 1, 12, 44, 29)) == 0.0


@pytest.mark.parametrize("quiet, field", [
    (QuietHours("25:00", "08:00"), "quiet_hours.start"), (QuietHours("21:00", "8"), "quiet_hours.end"),
    (QuietHours("21:00", "21:00"), "quiet_hours.end"),
    (QuietHours("21:00", "08:00", "skip"), "quiet_hours.action")])
def test_bad_quiet_hours_name_the_field(quiet, field):
    with pytest.raises(InvalidArgument) as err:
        quiet.checked()
    assert err.value.field == field


def test_caps_count_a_decision_and_its_send_event_once():
    h, day = ContactHistory(), 86400.0
    caps = (("push", 2, day),)
    assert h.add(100.0, "push", "d1")
    assert not h.add(150.0, "push", "d1")  # push_sent naming d1: the same contact
    assert not h.blocked_by(caps, 200.0)
    assert h.add(200.0, "push", "")  # a send without a decision id counts
    assert h.blocked_by(caps, 300.0)
    assert not h.blocked_by(caps, 100.0 + day + 1)  # rolling window: the first one aged out
    assert not h.blocked_by((("email", 1, day),), 300.0)
    assert h.blocked_by((("*", 2, day),), 300.0)


def test_caps_count_contacts_within_the_window_on_either_side_of_the_decision():
    hour = 3600.0
    h = ContactHistory([[1000.0 + 17 * hour, "push", "deferred"]])  # sent tomorrow morning
    caps = (("push", 1, hour),)
    assert not h.blocked_by(caps, 1000.0)  # now: 17 h before it, outside a 1 h window
    assert h.blocked_by(caps, 1000.0 + 16.5 * hour)  # half an hour before it
    assert h.blocked_by(caps, 1000.0 + 17.5 * hour)  # half an hour after it
    assert not h.blocked_by(caps, 1000.0 + 16 * hour)  # exactly a window away: outside
    assert not h.blocked_by(caps, 1000.0 + 18 * hour)


def test_pruning_past_the_bound_keeps_the_contacts_nearest_to_now():
    """Sends scheduled a day ahead do not push out the contacts of the last hour."""
    from server.limits import Limits
    hour, now = 3600.0, 1_000_000.0
    recent = [[now - 60.0 * i, "email", f"r{i}"] for i in range(3)]
    ahead = [[now + 24 * hour + i, "email", f"a{i}"] for i in range(5)]
    h = ContactHistory(recent + ahead)
    h.prune(now, Limits(frequency_cap_max=4))
    assert [e[2] for e in h.entries] == ["r2", "r1", "r0", "a0"]
    assert h.blocked_by((("email", 3, hour),), now)


def test_verdicts_pick_the_first_consented_channel_then_apply_quiet_hours_and_caps():
    class Spec:
        purpose, channel, channels = "marketing", "email", ("email", "push")
        frequency_caps = (FrequencyCap("push", 1, 86400.0),)
        quiet_hours = NIGHT
        send_window = SendWindow()
    policy = ContactPolicy(DEFAULT_CONSENT, "America/New_York")
    paris = {"attributes": {"timezone": "Europe/Paris"}, "consent": {}}
    now = utc(2026, 6, 15, 20)
    seen = ContactHistory([[now - 3600, "push", "d0"]])
    got = policy.verdicts(Spec, [Contact("a", None), Contact("b", paris), Contact("c", None, None, seen)],
                          now)
    assert [(v.suppressed, v.reason, v.channel, v.send_at) for v in got] == [
        (False, "", "push", 0.0),  # New York 16:00: not quiet
        (False, "", "push", utc(2026, 6, 16, 6)),  # Paris 22:00: deferred to 08:00 CEST
        (True, "frequency_cap", "push", 0.0)]
    Spec.quiet_hours = QuietHours("21:00", "08:00", "suppress")
    assert policy.verdicts(Spec, [Contact("b", paris)], now)[0].reason == "quiet_hours"
    Spec.channels = ("email",)
    assert policy.verdicts(Spec, [Contact("a", None)], now)[0].reason == "no_consent"
    Spec.purpose = "transactional"
    assert not policy.verdicts(Spec, [Contact("a", None)], now)[0].suppressed


def test_a_channel_is_passed_over_for_its_caps_at_the_time_the_message_would_go():
    class Spec:
        purpose, channel, channels = "marketing", "push", ("push", "email")
        frequency_caps = (FrequencyCap("push", 1, 7200.0),)
        quiet_hours = NIGHT
        send_window = SendWindow()
    policy = ContactPolicy(DEFAULT_CONSENT, "America/New_York")
    mail = {"opted_in": True, "source": "form", "timestamp": 1.0}
    ny = {"attributes": {}, "consent": {"email": {"marketing": mail}}}
    paris = {"attributes": {"timezone": "Europe/Paris"}, "consent": {"email": {"marketing": mail}}}
    now = utc(2026, 6, 15, 20)
    pushed = ContactHistory([[now - 3600, "push", "d0"]])  # an hour ago: push capped for 1 h more
    got = policy.verdicts(Spec, [Contact("a", ny, None, pushed), Contact("b", paris, None, pushed),
                                 Contact("c", None, None, pushed)], now)
    assert [(v.suppressed, v.reason, v.channel, v.send_at) for v in got] == [
        (False, "", "email", 0.0),  # New York 16:00: now, push capped; email is free
        (False, "", "push", utc(2026, 6, 16, 6)),  # Paris 22:00: at 08:00 CEST push is free
        (True, "frequency_cap", "push", 0.0)]  # no email opt-in: push alone, capped
    Spec.frequency_caps = (FrequencyCap("*", 1, 7200.0),)  # every channel capped
    got = policy.verdicts(Spec, [Contact("a", ny, None, pushed)], now)[0]
    assert (got.suppressed, got.reason, got.channel) == (True, "frequency_cap", "push")


def test_global_caps_join_the_campaigns_except_for_transactional_ones():
    class Spec:
        purpose, channel, channels = "marketing", "sms", ()
        frequency_caps = (FrequencyCap("sms", 1, 3600.0), FrequencyCap("email", 9, 60.0))
        quiet_hours = QuietHours()
    policy = ContactPolicy(DEFAULT_CONSENT, "UTC", [("*", 5, 86400.0), ("push", 2, 60.0)])
    # the global caps count marketing contacts only (the fourth element)
    assert policy.caps(Spec, "sms") == (("sms", 1, 3600.0), ("*", 5, 86400.0, True))
    assert policy.caps(Spec, "web") == ()  # placements are neither capped nor counted
    Spec.purpose = "transactional"
    assert policy.caps(Spec, "sms") == (("sms", 1, 3600.0),)


@pytest.mark.parametrize("field, value", [
    ("consent_defaults", {"email": "maybe"}), ("contact_default_timezone", "Nowhere/City"),
    ("contact_default_timezone", "Europe"),  # a region of the zone database, not a zone
    ("consent_defaults", {"emial": "opt_in"}), ("consent_defaults", {"Email": "opt_in"}),
    ("contact_frequency_caps", [("web", 1, 60.0)]), ("contact_frequency_caps", [("*", 0, 60.0)]),
    # past what a contact history keeps (`Limits.frequency_cap_max` newest contacts, those of
    # `frequency_cap_window_seconds`): a cap that could never bind
    ("contact_frequency_caps", [("push", 101, 86400.0)]),
    ("contact_frequency_caps", [("*", 5, 400 * 86400.0)]),
    ("contact_frequency_caps", [("*", 5, float("inf"))])])
def test_bad_contact_settings_are_refused(field, value):
    from pydantic import ValidationError

    from server.config import Settings
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})


def test_global_caps_may_go_as_far_as_the_limits_kept_for_them():
    from server.config import Settings
    from server.limits import Limits
    limits = Limits(frequency_cap_max=200, frequency_cap_window_seconds=800 * 86400.0)
    caps = (("push", 150, 86400.0), ("*", 5, 700 * 86400.0))
    assert Settings(limits=limits, contact_frequency_caps=caps).contact_frequency_caps == caps


def test_marketing_only_caps_leave_transactional_contacts_out():
    h = ContactHistory()
    h.add(1000.0, "email", "r1", transactional=True)
    h.add(1010.0, "email", "m1")
    assert ContactHistory.decode(h.encode()).entries == h.entries  # both forms round-trip
    assert [e.get("purpose") for e in h.exported()] == ["transactional", None]
    assert h.blocked_by([("email", 2, 60.0)], 1020.0)  # a campaign's cap: both count
    assert not h.blocked_by([("email", 2, 60.0, True)], 1020.0)  # marketing only: one
    assert h.blocked_by([("*", 1, 60.0, True)], 1020.0)
    policy = ContactPolicy(DEFAULT_CONSENT, "UTC", [("email", 1, 60.0)])

    class Spec:
        purpose, channel, channels = "marketing", "email", ()
        frequency_caps = (FrequencyCap("email", 3, 60.0),)
    assert policy.caps(Spec, "email") == (("email", 3, 60.0), ("email", 1, 60.0, True))


def test_a_user_allowed_only_where_the_caller_cannot_send_says_so_not_no_consent():
    """A caller that sends on some channels only (`Contact.reachable`: a server without an SMS
    adapter): a user opted in to SMS alone was suppressed `no_consent`; now
    `channel_unavailable` on sms, or `suppressed_address` when that number is listed. A user
    who consented nowhere, or only on a placement (no message goes there), is `no_consent`."""
    class Spec:
        purpose, channel, channels = "marketing", "email", ("email", "sms", "web")
        frequency_caps, quiet_hours, send_window = (), QuietHours(), SendWindow()
    sms = {"consent": {"sms": {"opted_in": True, "source": "form", "timestamp": 1.0},
                       "web": {"opted_in": False, "source": "app", "timestamp": 1.0}}}
    mail = frozenset({"email"})
    policy = ContactPolicy()

    def verdict(meta, reachable, **more):
        v = policy.verdicts(Spec, [Contact("a", meta, reachable=reachable, **more)], 0.0)[0]
        return v.suppressed, v.reason, v.channel
    assert verdict(sms, mail) == (True, "channel_unavailable", "sms")
    assert verdict(sms, mail, suppressed=frozenset({"sms"})) == (
        True, "suppressed_address", "sms")
    assert verdict(sms, mail, erased=True) == (True, "no_consent", "email")
    assert verdict(None, mail) == (True, "no_consent", "email")  # web: no message goes there
    assert verdict(sms, None) == (False, "", "sms")  # ChooseVariant: its caller sends


def test_a_user_allowed_on_a_channel_the_caller_cannot_send_on_is_not_told_their_address_is_listed():
    """`[email, sms, push]` on a server with an SMTP relay only: a user who opted out of email,
    whose number is listed and who may have push (opt_out by default) would be contacted on
    push by a server with a push adapter: `channel_unavailable` on push, as on the reachable
    channels a channel that takes them outranks a listed one. It was `suppressed_address` on
    sms. Listed is said only when no channel left out would take them."""
    class Spec:
        purpose, channel, channels = "marketing", "email", ("email", "sms", "push")
        frequency_caps, quiet_hours, send_window = (), QuietHours(), SendWindow()
    meta = {"consent": {"sms": {"opted_in": True, "source": "form", "timestamp": 1.0}},
            "attributes": {"email": "a@example.com", "phone": "+447700900123",
                           "push_token": "t"}}
    listed = frozenset({"sms"})
    policy = ContactPolicy()

    def verdict(reachable, meta=meta):
        v = policy.verdicts(Spec, [Contact("a", meta, suppressed=listed, reachable=reachable,
                                           addressed=reachable is not None)], 0.0)[0]
        return v.suppressed, v.reason, v.channel
    assert verdict(frozenset({"email"})) == (True, "channel_unavailable", "push")
    assert verdict(frozenset({"email", "push"})) == (False, "", "push")  # the adapter there
    off = {**meta, "consent": {**meta["consent"], "push": {
        "opted_in": False, "source": "app", "timestamp": 1.0}}}
    assert verdict(frozenset({"email"}), off) == (True, "suppressed_address", "sms")

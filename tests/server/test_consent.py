"""Consent per channel and purpose: the check the decision path uses (derived by hand), and
the stored state and history through a real server."""
import itertools
import time

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.contact.consent import closed_by_stop, consent_reason, record_consent

DEFAULTS = {"email": "opt_in", "sms": "opt_in", "push": "opt_out", "web": "none"}


def state(opted_in: bool) -> dict:
    return {"opted_in": opted_in, "source": "test", "timestamp": 1.0}


@pytest.mark.parametrize("consent, channel, purpose, expected", [
    (None, "email", "marketing", "no_consent"),           # opt_in channel, never asked
    (None, "push", "marketing", None),                    # opt_out channel, never asked
    (None, "sms", "marketing", "no_consent"),
    (None, "app", "marketing", None),                     # not in the defaults: not checked
    ({"web": {"marketing": state(False)}}, "web", "marketing", None),  # "none": not checked
    (None, "email", "transactional", None),               # needs no marketing consent
    ({"email": {"marketing": state(True)}}, "email", "marketing", None),
    ({"email": {"marketing": state(False)}}, "email", "marketing", "no_consent"),
    ({"push": {"marketing": state(False)}}, "push", "marketing", "no_consent"),
    ({"email": {"marketing": state(False)}}, "email", "transactional", None),
    ({"email": {"transactional": state(False)}}, "email", "transactional", "no_consent"),
    ({"email": {"transactional": state(True)}}, "email", "marketing", "no_consent"),
    ({"email": state(True)}, "email", "marketing", None),            # layout 1 record
    ({"email": state(False)}, "email", "transactional", None),       # layout 1: marketing only
])
def test_consent_reason(consent, channel, purpose, expected):
    meta = None if consent is None else {"attributes": {}, "consent": consent}
    assert consent_reason(meta, channel, purpose, DEFAULTS) == expected


def test_history_keeps_the_latest_changes_and_late_opt_ins_do_not_overwrite():
    meta = {"consent": {}}
    for i, (opted_in, ts) in enumerate([(True, 10.0), (False, 20.0), (True, 15.0), (False, 30.0)]):
        record_consent(meta, "email", "marketing", opted_in, f"s{i}", ts, keep=3)
    assert [c["source"] for c in meta["consent_history"]] == ["s1", "s2", "s3"]
    assert meta["consent"]["email"]["marketing"] == {"opted_in": False, "source": "s3",
                                                     "timestamp": 30.0}
    record_consent(meta, "email", "marketing", True, "late", 25.0, keep=3)
    assert meta["consent"]["email"]["marketing"]["source"] == "s3"  # 25 < 30: history only
    assert meta["consent_history"][-1]["source"] == "late"
    record_consent(meta, "email", "marketing", True, "again", 31.0, keep=3)
    record_consent(meta, "email", "marketing", False, "late-out", 5.0, keep=3)
    assert meta["consent"]["email"]["marketing"]["source"] == "late-out"  # opt-outs always hold


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_replayed_changes_never_reopen_a_channel_closed_later(order):
    """After an opt-in at 0 the user opts out at 3; an opt-out from 1 and an opt-in from 2
    arrive late, in any order around the real opt-out: the channel stays closed by it."""
    meta = {"consent": {}}
    record_consent(meta, "email", "marketing", True, "signup", 0.0, keep=10)
    changes = [(False, "unsubscribe", 3.0), (False, "replayed out", 1.0), (True, "replayed in", 2.0)]
    for i in order:
        opted_in, source, ts = changes[i]
        record_consent(meta, "email", "marketing", opted_in, source, ts, keep=10)
    assert meta["consent"]["email"]["marketing"] == {"opted_in": False, "source": "unsubscribe",
                                                     "timestamp": 3.0}


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_a_withdrawal_holds_over_a_stop_in_any_order_and_dates(order):
    """A signup opt-in at 0; a STOP reply at 5 and a carrier's 21610 at 7; an operator's opt-out
    dated 3 (before both) arrives in any order around them: the operator's opt-out is current,
    dated the latest, and nothing is closed by a STOP alone (no START reopens it). Before,
    the later-dated STOP stayed current and the next START reopened the channel."""
    meta = {"consent": {}}
    record_consent(meta, "sms", "marketing", True, "signup", 0.0, keep=10)
    changes = [("sms reply STOP", 5.0), ("sms carrier STOP (21610)", 7.0), ("preferences", 3.0)]
    for i in order:
        record_consent(meta, "sms", "marketing", False, *changes[i], keep=10)
    assert meta["consent"]["sms"]["marketing"] == {"opted_in": False, "source": "preferences",
                                                   "timestamp": 7.0}
    assert not closed_by_stop(meta, "sms", "marketing")
    record_consent(meta, "sms", "marketing", True, "late", 6.0, keep=10)  # before the 21610
    # it lifts the withdrawal (arrived after it, dated later), not the 21610 after it (rr18c)
    assert meta["consent"]["sms"]["marketing"] == {"opted_in": False,
                                                   "source": "sms carrier STOP (21610)",
                                                   "timestamp": 7.0}
    record_consent(meta, "sms", "marketing", True, "prefs again", 8.0, keep=10)
    record_consent(meta, "sms", "marketing", False, "sms reply STOP", 9.0, keep=10)
    assert closed_by_stop(meta, "sms", "marketing")  # withdrawn, given back, then a STOP


def test_a_state_stored_with_a_stop_current_over_a_withdrawal_is_not_the_stops_alone():
    """A state stored before a withdrawal held over a STOP's: the STOP's current, the
    withdrawal in the history. Only an opt-in arriving after the withdrawal and dated no
    earlier lifts it."""
    def entry(opted_in, source, ts):
        return {"channel": "sms", "purpose": "transactional", "opted_in": opted_in,
                "source": source, "timestamp": ts}
    stop = entry(False, "sms reply STOP", 9.0)
    for history, alone in [([entry(False, "preferences", 5.0), stop], False),
                           ([entry(False, "preferences", 5.0), entry(True, "stale", 4.0), stop],
                            False),
                           ([entry(False, "preferences", 5.0), entry(True, "prefs", 6.0), stop],
                            True),
                           ([stop], True)]:
        meta = {"consent": {"sms": {"transactional": stop}}, "consent_history": history}
        assert closed_by_stop(meta, "sms", "transactional") is alone


def test_a_stop_repeated_over_a_withdrawal_adds_one_entry():
    meta = {"consent": {}}
    record_consent(meta, "sms", "marketing", False, "preferences", 1.0, keep=10)
    for ts in (2.0, 3.0, 4.0):
        record_consent(meta, "sms", "marketing", False, "sms reply STOP", ts, keep=10)
    assert [h["source"] for h in meta["consent_history"]] == ["preferences", "sms reply STOP"]
    assert meta["consent"]["sms"]["marketing"] == {"opted_in": False, "source": "preferences",
                                                   "timestamp": 4.0}


def test_a_re_subscribe_repeating_a_stale_opt_in_is_kept_in_the_history():
    """A withdrawal at 5 keeps a stale opt-in (dated 2) out of the current state; the user then
    re-subscribes at 6 under the same source. It is the current state, and it is a change:
    the history keeps it, so a STOP after it is a STOP alone (a START reopens it). Before, the
    last-entry de-dupe dropped it, and the STOP read as over the withdrawal."""
    meta = {"consent": {}}
    for opted_in, source, ts in [(True, "app", 1.0), (False, "one-click unsubscribe (c1)", 5.0),
                                 (True, "app", 2.0), (True, "app", 6.0)]:
        record_consent(meta, "sms", "marketing", opted_in, source, ts, keep=10)
    assert [(h["opted_in"], h["timestamp"]) for h in meta["consent_history"]][-1] == (True, 6.0)
    record_consent(meta, "sms", "marketing", False, "sms reply STOP", 7.0, keep=10)
    assert closed_by_stop(meta, "sms", "marketing")


@pytest.mark.parametrize("order", [(0, 1, 2), (0, 2, 1), (2, 0, 1)])
def test_an_opt_in_between_a_withdrawal_and_a_stop_leaves_the_stop_alone_in_any_order(order):
    """An operator's opt-out at 1, the user's re-subscribe at 2 (arriving after the opt-out),
    a STOP at 3, in any order of arrival that keeps the re-subscribe after the opt-out: the
    STOP alone closes the texts, dated its own time, and a START reopens them. Before, the
    re-subscribe arriving after the STOP (dated before it) left the opt-out current (dated 3),
    never reopened."""
    meta = {"consent": {}}
    record_consent(meta, "sms", "transactional", True, "signup", 0.0, keep=10)
    changes = [(False, "preferences", 1.0), (True, "app", 2.0), (False, "sms reply STOP", 3.0)]
    for i in order:
        record_consent(meta, "sms", "transactional", *changes[i], keep=10)
    assert meta["consent"]["sms"]["transactional"] == {"opted_in": False,
                                                       "source": "sms reply STOP",
                                                       "timestamp": 3.0}
    assert closed_by_stop(meta, "sms", "transactional")


@pytest.fixture
def settings(tmp_path):
    from server.config import Settings
    from server.limits import Limits
    return Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                    secrets_dir=tmp_path / "secrets", limits=Limits(consent_history=4))


@pytest.fixture
def stub(channel):
    return pb_grpc.ProfileServiceStub(channel)


def consent(user, channel, opted_in, source, purpose="", ts=0.0):
    return pb.SetConsentRequest(user_id=user, channel=channel, opted_in=opted_in, source=source,
                                purpose=purpose, timestamp=ts)


async def test_consent_by_purpose_with_history_through_the_server(stub):
    t0 = time.time() - 100
    await stub.SetConsent(consent("ida", "email", True, "signup", ts=t0))
    await stub.SetConsent(consent("ida", "email", False, "prefs", "transactional", t0 + 1))
    await stub.SetConsent(consent("ida", "sms", True, "checkout", "marketing", t0 + 2))
    await stub.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="u1", user_id="ida", type="unsubscribe", channel="email", timestamp=t0 + 3)]))
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="ida"))
    current = {(c.channel, c.purpose): (c.opted_in, c.source) for c in profile.consents}
    assert current == {("email", "marketing"): (False, "unsubscribe event"),
                       ("email", "transactional"): (False, "prefs"),
                       ("sms", "marketing"): (True, "checkout")}
    assert {k: (v.opted_in, v.purpose) for k, v in profile.consent.items()} == \
        {"email": (False, "marketing"), "sms": (True, "marketing")}
    assert [(c.channel, c.purpose, c.opted_in) for c in profile.consent_history] == [
        ("email", "marketing", True), ("email", "transactional", False),
        ("sms", "marketing", True), ("email", "marketing", False)]
    await stub.SetConsent(consent("ida", "push", True, "app", ts=t0 + 4))
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="ida"))
    assert len(profile.consent_history) == 4  # Limits.consent_history: the oldest went
    assert profile.consent_history[0].source == "prefs"
    assert profile.consent_history[-1].timestamp == pytest.approx(t0 + 4)


async def test_an_unknown_purpose_is_invalid_naming_the_field(stub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetConsent(consent("jo", "email", True, "x", "newsletter"))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details().startswith("purpose:")


async def test_an_unsubscribe_without_its_channel_is_refused_not_read_as_web(stub):
    """An unsubscribe event needs the channel it opts out of: with none given it was taken as
    "web" (the default of types without a channel of their own), recorded as a web opt-out
    nobody asks for, and the user's email opt-in stayed: their mail kept coming."""
    t0 = time.time() - 100
    await stub.SetConsent(consent("kim", "email", True, "signup", ts=t0))
    reply = await stub.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="u1", user_id="kim", type="unsubscribe", timestamp=t0 + 1)]))
    assert reply.accepted == 0 and [r.index for r in reply.rejected] == [0]
    assert reply.rejected[0].reason.startswith("channel ")
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="kim"))
    assert [(c.channel, c.opted_in) for c in profile.consents] == [("email", True)]


async def test_a_source_the_servers_stop_handling_writes_is_refused_naming_it(stub):
    """SetConsent took `sms reply STOP` or the carrier's `sms carrier STOP (21610)` as any
    source: a client's or operator's SMS opt-out so named was reopened by the next START from
    the number, as if a STOP had closed it. Refused now, naming the source and why (and
    `unsubscribe event`, which a carrier's 21610 records and START reopens too); nothing is
    written. Sources that only mention them are taken."""
    t0 = time.time() - 100
    await stub.SetConsent(consent("lee", "sms", True, "signup", "transactional", t0))
    for source in ("sms reply STOP", "sms reply START", "sms carrier STOP (21610)",
                   "sms carrier STOP (21610) again", "unsubscribe event",
                   "unsubscribe event (shared address)"):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.SetConsent(consent("lee", "sms", False, source, "transactional", t0 + 1))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert err.value.details().startswith(f"source: {source[:16]!r}")
        assert "reserved for the server's own SMS STOP handling" in err.value.details()
    await stub.SetConsent(consent("lee", "sms", False, "support: sms reply STOP", "", t0 + 2))
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="lee"))
    assert [(c.purpose, c.opted_in, c.source) for c in profile.consent_history] == [
        ("transactional", True, "signup"), ("marketing", False, "support: sms reply STOP")]


SPOOFING_SOURCES = {"\u200bsms reply STOP": "(U+200B)", "sms reply\u00a0STOP\u202e": "(U+202E)",
                    "form\nsms reply STOP": "control character", "a\x00b": "control character"}
"""Sources holding a character no id or key may, each with what its refusal names: taken as
given before, the first showing in the consent history as the STOP handling's own."""


@pytest.mark.parametrize("source", list(SPOOFING_SOURCES))
async def test_a_source_holding_a_control_or_format_character_is_refused(stub, source):
    t0 = time.time() - 100
    await stub.SetConsent(consent("noa", "sms", True, "signup", ts=t0))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.SetConsent(consent("noa", "sms", False, source, ts=t0 + 1))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith("source: ") and SPOOFING_SOURCES[source] in details, details
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="noa"))
    assert [(c.opted_in, c.source) for c in profile.consent_history][-1] == (True, "signup")

"""Event validation: byte limits count UTF-8 bytes, whatever the string's length in characters;
a message type's channel is its own."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.profiles import EventRules, TrackedEvent
from server.profiles.events import check_event


def event(event_id="e1", item_id="", attributes=None):
    return TrackedEvent(event_id, "ann", "view", "", "", item_id, 0.0, time.time() - 60, attributes or {})


@pytest.mark.parametrize("value, ok", [("a" * 128, True), ("a" * 129, False), ("€" * 42, True),
                                       ("€" * 43, False), ("😀" * 32, True), ("😀" * 33, False)])
def test_id_limits_are_in_bytes(value, ok):
    assert (check_event(event(event_id=value), EventRules()) is None) == ok
    assert (check_event(event(item_id=value), EventRules()) is None) == ok


@pytest.mark.parametrize("field", ["event_id", "user_id", "item_id", "campaign_id"])
@pytest.mark.parametrize("char, why", [("\x00", "a control character (0x00-0x1F or 0x7F)"),
                                       ("\x1f", "the control character 0x1F"),
                                       ("\ud800", "a lone surrogate"),
                                       ("\x9b", "a C1 control character (U+009B)"),
                                       ("\u202e", "a bidirectional control character (U+202E)"),
                                       ("\u2029", "a line or paragraph separator (U+2029)"),
                                       ("\u200b", "a format character (U+200B)")])
def test_a_control_character_is_named_in_the_id_that_holds_it(field, char, why):
    ev = event()
    setattr(ev, field, "x" + char)
    assert f"{field} contains {why}" in check_event(ev, EventRules())
    if char not in "\x1f\ud800":  # an attribute key as a profile's (check_key; 0x1F as 0x00)
        ev = event(attributes={"k" + char: "v"})
        assert check_event(ev, EventRules()) == f"attributes key {'k' + char!r} contains {why}"
    ev = event()  # a surrogate pair split across two ids: two lone surrogates, the first named
    ev.user_id, ev.item_id = "\ud83d", "\ude00"
    assert check_event(ev, EventRules()).startswith("user_id contains a lone surrogate")


def test_default_channel_is_filled_and_attribute_limits_hold():
    ev = event()
    assert check_event(ev, EventRules()) is None and ev.channel == "web"
    too_big = event(attributes={"k": "v" * 2000})
    assert check_event(too_big, EventRules()) == "attributes take 2001 bytes, at most 1024"


async def test_a_channel_contradicting_its_message_type_is_rejected(module_bare_server):
    """An email_sent marked push counted as a push send in the profile's channel rates, while
    the frequency caps counted it as an email: the type names the channel, another is refused."""
    stub = pb_grpc.ProfileServiceStub(module_bare_server[1])
    ts = time.time() - 60
    events = [pb.Event(event_id="mix1", user_id="mixed", type="email_sent", channel="push", timestamp=ts),
              pb.Event(event_id="mix2", user_id="mixed", type="email_open", channel="sms", timestamp=ts),
              pb.Event(event_id="mix3", user_id="mixed", type="sms_click", channel="email", timestamp=ts)]
    reply = await stub.TrackEvents(pb.TrackEventsRequest(events=events))
    assert reply.accepted == 0 and [r.index for r in reply.rejected] == [0, 1, 2]
    assert reply.rejected[0].reason == ("channel 'push' contradicts type 'email_sent', an event of "
                                        "the email channel (give 'email' or leave channel empty)")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetProfile(pb.GetProfileRequest(user_id="mixed"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.parametrize("type, channel", [("email_sent", ""), ("email_sent", "email"),
                                           ("push_open", "push"), ("click", "app"), ("view", "email")])
def test_channels_a_type_allows_are_accepted(type, channel):
    ev = TrackedEvent("e1", "ann", type, channel, "", "", 0.0, time.time() - 60)
    assert check_event(ev, EventRules()) is None


async def test_an_id_another_users_event_holds_is_rejected_not_a_duplicate(tmp_path):
    """Ids counted per user by a client ("0", "1", ... for each) made every user after the first
    lose their events, answered as duplicates (seen before, nothing changed): bob's three
    purchases were dropped and his profile never existed."""
    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    t = time.time() - 60
    async with serving(settings) as (_, ch):
        stub = pb_grpc.ProfileServiceStub(ch)

        async def track(*events):
            return await stub.TrackEvents(pb.TrackEventsRequest(events=[
                pb.Event(event_id=i, user_id=u, type="purchase", value=10.0, timestamp=t)
                for i, u in events]))
        first = await track(("0", "ann"), ("1", "ann"))
        again = await track(("1", "ann"), ("0", "bob"), ("1", "bob"), ("2", "bob"), ("2", "cy"),
                            ("2", "bob"))
        assert (first.accepted, again.accepted, again.duplicates) == (2, 1, 2)
        assert list(again.accepted_ids) == ["2"]  # bob's; cy's "2" came after it
        assert [(r.index, r.event_id) for r in again.rejected] == [(1, "0"), (2, "1"), (4, "2")]
        assert all("another user's event" in r.reason for r in again.rejected)
        profile = await stub.GetProfile(pb.GetProfileRequest(user_id="bob"))
        assert [e.event_id for e in profile.events] == ["2"] and profile.features.monetary == 10.0


async def test_a_stream_rejecting_more_events_than_its_reply_lists_ends_saying_what_it_did(
        tmp_path):
    """A TrackEventStream's one reply lists every rejected event (about 150 bytes each): a
    backfill whose ids another user's events held (480,000 of them) made a reply over the
    message limit, answered RESOURCE_EXHAUSTED "Sent message larger than max" with nothing said
    of what was stored. Past `limits.stream_rejected_events` the stream ends RESOURCE_EXHAUSTED
    with its counts; its valid events stay tracked."""
    from server.config import Settings
    from server.limits import Limits
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets", grpc_max_message_bytes=1 << 20,
                        limits=Limits(stream_rejected_events=5000))
    t = time.time() - 60

    def message(user, start, n=1000):
        return pb.TrackEventsRequest(events=[pb.Event(event_id=f"{i}", user_id=user, type="view",
                                                      item_id="i1", timestamp=t)
                                             for i in range(start, start + n)])

    async def stream(*messages):
        async def gen():
            for m in messages:
                yield m
        return await stub.TrackEventStream(gen())
    async with serving(settings) as (_, ch):
        stub = pb_grpc.ProfileServiceStub(ch)
        assert (await stream(*(message("ann", s) for s in range(0, 8000, 1000)))).accepted == 8000
        within = await stream(*(message("bob", s) for s in range(0, 5000, 1000)))
        assert (within.accepted, len(within.rejected)) == (0, 5000)  # at the bound: listed
        with pytest.raises(grpc.RpcError) as err:
            await stream(*(m for s in range(0, 8000, 1000)
                           for m in (message("bob", s), message("cy", 10_000 + s, 1))))
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "8000 rejected, more than the 5000" in err.value.details()
        assert "16 messages tracked: 8 accepted, 0 duplicates, 8000 rejected" in \
            err.value.details()
        cy = await stub.GetProfile(pb.GetProfileRequest(user_id="cy", max_events=20))
        assert len(cy.events) == 8  # what was read before the end stays tracked



def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _tracked_with_unknown_field(event: pb.Event, size: int) -> bytes:
    """A TrackEventsRequest holding `event` with a field this server does not know (number 99)
    of `size` bytes, serialised."""
    raw = event.SerializeToString() + _varint(99 << 3 | 2) + _varint(size) + b"\xde" * size
    return b"\x0a" + _varint(len(raw)) + raw


async def test_fields_the_server_does_not_know_are_not_stored(module_bare_server):
    """An Event's unknown fields were stored with it, past every bound on an event (attributes
    at most 1 KiB): one view carrying 5 MB in field 99 was accepted and kept 5 MB in the store,
    answered by GetProfile and ExportEvents. They are dropped; the event is stored as sent."""
    ch = module_bare_server[1]
    stub = pb_grpc.ProfileServiceStub(ch)
    t = time.time() - 60
    sent = [pb.Event(event_id=f"unknown{i}", user_id="unknown-fields", type="view", item_id="i1",
                     channel="web", timestamp=t + i) for i in range(2)]
    raw = dict(request_serializer=bytes, response_deserializer=pb.TrackEventsResponse.FromString)
    track = ch.unary_unary("/tailor.v1.ProfileService/TrackEvents", **raw)
    stream = ch.stream_unary("/tailor.v1.ProfileService/TrackEventStream", **raw)
    assert (await track(_tracked_with_unknown_field(sent[0], 1 << 20))).accepted == 1
    assert (await stream(iter([_tracked_with_unknown_field(sent[1], 1 << 20)]))).accepted == 1
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="unknown-fields",
                                                         parts=["events"]))
    assert [e.SerializeToString() for e in profile.events] == \
        [e.SerializeToString() for e in sent[::-1]]  # newest first
    exported = [e async for e in stub.ExportEvents(pb.ExportEventsRequest(start=t - 1))
                if e.user_id == "unknown-fields"]
    assert sorted(e.SerializeToString() for e in exported) == \
        sorted(e.SerializeToString() for e in sent)


async def test_a_long_stream_holds_no_more_than_its_read_ahead_window(tmp_path):
    """A TrackEventStream kept every committed message's result, accepted ids included, until
    its end: a 2,000,000-event stream grew its worker by ~150 bytes an event (68 -> 437 MB
    anonymous memory), so a bulk load of tens of millions of events outgrew the machine. What
    the worker holds of the committed messages is now counts (and the rejections it lists)."""
    import gc

    from server.config import Settings
    from server.limits import Limits
    from server.profiles import TrackResult
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets",
                        limits=Limits(stream_read_ahead_events=300))
    t = time.time() - 60
    held = []

    def ids_held() -> int:
        return sum(len(o.accepted_ids) for o in gc.get_objects() if isinstance(o, TrackResult))

    async with serving(settings) as (_, ch):
        stub = pb_grpc.ProfileServiceStub(ch)

        async def committed(user: str) -> None:
            for _ in range(500):
                try:
                    await stub.GetProfile(pb.GetProfileRequest(user_id=user, parts=["features"]))
                    return
                except grpc.RpcError:
                    await asyncio.sleep(0.02)
            raise AssertionError(f"{user}'s events never committed")

        async def messages():
            for m in range(30):
                if m == 29:  # messages 0..24 are committed: the server has read them
                    await committed("long24")
                    held.append(ids_held())
                yield pb.TrackEventsRequest(events=[
                    pb.Event(event_id=f"long{m}.{i}", user_id=f"long{m}", type="view",
                             timestamp=t) for i in range(200)])
        reply = await stub.TrackEventStream(messages())
    assert reply.accepted == 6000 and not reply.rejected
    assert held[0] <= 300 + 2 * 200, held  # 4,800 to 5,800 ids before


async def test_unknown_fields_a_store_already_holds_are_not_answered(module_bare_server):
    """A store written before the converter dropped unknown fields holds events carrying them
    (the previous version stored the wire message whole: a view with 1 MB in field 99 was
    answered 1,048,616 bytes by GetProfile and ExportEvents, after the upgrade too). Such a
    record, stored as that version did (through `Profiles.track`, the event's source the
    message as parsed), is answered without them."""
    from server.profiles import TrackedEvent
    server, ch = module_bare_server
    stub = pb_grpc.ProfileServiceStub(ch)
    t = time.time() - 60
    sent = pb.Event(event_id="old-unknown", user_id="old-unknown-fields", type="view",
                    item_id="i1", channel="web", timestamp=t)
    source = pb.TrackEventsRequest.FromString(_tracked_with_unknown_field(sent, 1 << 20)).events[0]
    assert source.ByteSize() > 1 << 20
    result = await asyncio.create_task(server.profiles.track([TrackedEvent(
        sent.event_id, sent.user_id, sent.type, sent.channel, "", sent.item_id, 0.0, t, {},
        source, "", 0)]), context=server.context)  # its keys: another server may have started
    assert len(result.accepted_ids) == 1
    profile = await stub.GetProfile(pb.GetProfileRequest(user_id="old-unknown-fields",
                                                         parts=["events"]))
    assert [e.SerializeToString() for e in profile.events] == [sent.SerializeToString()]
    exported = [e async for e in stub.ExportEvents(pb.ExportEventsRequest(start=t - 1))
                if e.user_id == "old-unknown-fields"]
    assert [e.SerializeToString() for e in exported] == [sent.SerializeToString()]

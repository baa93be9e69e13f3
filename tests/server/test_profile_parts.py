"""GetProfile `parts`: callers ask for the parts they need; none named still gives everything."""
import time

import grpc
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc


@pytest.fixture
async def stub(channel):
    stub = pb_grpc.ProfileServiceStub(channel)
    events = [pb.Event(event_id=f"e{i}", user_id="carol", type="click", item_id=f"i{i}",
                       timestamp=time.time() - 60 * (i + 1)) for i in range(3)]
    assert (await stub.TrackEvents(pb.TrackEventsRequest(events=events))).accepted == 3
    await stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id="carol",
                                                           attributes={"locale": "fr_FR"}))
    await stub.SetConsent(pb.SetConsentRequest(user_id="carol", channel="email", opted_in=True,
                                               source="form"))
    return stub


def _fields(msg) -> list[str]:
    return [f.name for f, _ in msg.ListFields()]


async def test_no_parts_named_gives_every_part(stub):
    full = await stub.GetProfile(pb.GetProfileRequest(user_id="carol"))
    assert len(full.events) == 3 and len(full.recent_items) == 3 and full.HasField("features")
    assert dict(full.attributes) == {"locale": "fr_FR"} and full.consent["email"].opted_in
    named = pb.GetProfileRequest(user_id="carol", parts=["attributes", "consent", "features",
                                                          "recent_items", "events"])
    every = await stub.GetProfile(named)
    assert _fields(every.features) == _fields(full.features)  # decayed values move with the clock
    every.ClearField("features")
    full.ClearField("features")
    assert every == full


async def test_only_the_parts_asked_for_are_filled(stub):
    full = await stub.GetProfile(pb.GetProfileRequest(user_id="carol"))
    attrs = await stub.GetProfile(pb.GetProfileRequest(user_id="carol", parts=["attributes"]))
    assert dict(attrs.attributes) == {"locale": "fr_FR"} and not attrs.events
    assert not attrs.HasField("features") and not attrs.recent_items and not attrs.consents
    assert attrs.created_at == full.created_at > 0 and attrs.updated_at == full.updated_at
    feats = await stub.GetProfile(pb.GetProfileRequest(user_id="carol", parts=["features", "events"],
                                                       max_events=2))
    assert _fields(feats.features) == _fields(full.features)
    assert list(feats.events) == list(full.events[:2])
    assert not feats.attributes and not feats.consent and not feats.recent_items


async def test_an_unknown_part_is_refused_naming_the_field(stub):
    with pytest.raises(grpc.RpcError) as err:
        await stub.GetProfile(pb.GetProfileRequest(user_id="carol", parts=["passwords"]))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parts" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:
        await stub.GetProfile(pb.GetProfileRequest(user_id="carol", parts=["events"] * 6))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "parts" in err.value.details()

"""Map keys that show as other keys, through a real server: `\\u0435mail` (a Cyrillic `е`)
showed as `email` but matched no `pii_keys` pattern, so its address was stored, shown by
GetProfile to callers without `pii-reader`, exported, and logged in impressions, unmasked.
Such keys are refused now wherever keys are taken; those a store written before holds are
masked."""
import asyncio
import time

import grpc
import pytest

from protos.tailor.v1 import model_admin_pb2 as apb
from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.profiles.events import TrackedEvent

ADDRESS = "carol@example.com"
LOOKALIKES = {"\u0435mail": "mixes Cyrillic and Latin letters (U+0435 CYRILLIC SMALL LETTER IE",
              "ph\u03bfne": "mixes Latin and Greek letters (U+0070 LATIN SMALL LETTER P, "
                            "U+03BF GREEK SMALL LETTER OMICRON)",
              "\uff45\uff4d\uff41\uff49\uff4c": "is not in NFKC form (U+FF45 FULLWIDTH LATIN",
              "e\u115fmail": "holds U+115F HANGUL CHOSEONG FILLER, which shows as nothing"}
"""Keys shown as `email` or `phone`, each with what its refusal says."""


@pytest.fixture
def stubs(module_server):
    channel = module_server[1]
    return (pb_grpc.ProfileServiceStub(channel), rpb_grpc.RecommendationServiceStub(channel),
            apb_grpc.ModelAdminServiceStub(channel))


async def _refused(call, field: str, key: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await call
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = err.value.details()
    assert details.startswith(f"{field}: {key!r} {LOOKALIKES[key]}"), details
    assert "carol" not in details  # the value is never echoed


@pytest.mark.parametrize("key", list(LOOKALIKES))
async def test_upserting_a_lookalike_key_is_refused_and_nothing_of_the_call_stored(stubs, key):
    prof = stubs[0]
    user = f"new-{ord(key[0]):x}"
    await _refused(prof.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id=user, attributes={key: ADDRESS, "locale": "fr"})), "attributes key", key)
    with pytest.raises(grpc.aio.AioRpcError) as err:  # no profile was made
        await prof.GetProfile(pb.GetProfileRequest(user_id=user))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await prof.UpsertAttributes(pb.UpsertAttributesRequest(user_id=user, attributes={"locale": "fr"}))
    await _refused(prof.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id=user, attributes={"locale": "de", key: ADDRESS})), "attributes key", key)
    got = await prof.GetProfile(pb.GetProfileRequest(user_id=user))
    assert dict(got.attributes) == {"locale": "fr"}  # the call's other attribute neither


async def test_an_event_with_a_lookalike_attribute_key_is_rejected_alone(stubs):
    prof, ts = stubs[0], time.time() - 60
    key = "\u0435mail"
    events = [pb.Event(event_id="look1", user_id="tracked", type="view", item_id="i1",
                       timestamp=ts, attributes={key: ADDRESS}),
              pb.Event(event_id="look2", user_id="tracked", type="view", item_id="i1",
                       timestamp=ts, attributes={"email": ADDRESS})]
    reply = await prof.TrackEvents(pb.TrackEventsRequest(events=events))
    assert reply.accepted == 1 and [r.index for r in reply.rejected] == [0]
    assert reply.rejected[0].reason.startswith(f"attributes key {key!r} {LOOKALIKES[key]}")
    got = await prof.GetProfile(pb.GetProfileRequest(user_id="tracked"))
    assert [dict(e.attributes) for e in got.events] == [{"email": "c***@example.com"}]


async def test_recommend_refuses_a_lookalike_context_key_and_logs_no_impression(stubs):
    rec, admin = stubs[1], stubs[2]
    for key in LOOKALIKES:
        context = {key: ADDRESS, "page": "home"}
        await _refused(rec.Recommend(rpb.RecommendRequest(user_id="shown", k=1, context=context)),
                       "context key", key)
        await _refused(rec.RecommendBatch(rpb.RecommendBatchRequest(requests=[
            rpb.RecommendRequest(user_id="shown", k=1, context=context)])),
            "requests[0].context key", key)
    reply = await rec.Recommend(rpb.RecommendRequest(user_id="shown", k=1,
                                                     context={"email": ADDRESS, "page": "home"}))
    rows = [r async for r in admin.ExportImpressions(apb.ExportImpressionsRequest())]
    assert [(r.request_id, dict(r.context)) for r in rows] == [
        (reply.request_id, {"email": "c***@example.com", "page": "home"})]


async def test_lookalike_keys_a_store_holds_from_before_are_masked(stubs, module_server):
    """A store written before the rule (here through the store API) holds them as given:
    GetProfile and ExportEvents mask their values for a caller without `pii-reader`, and a
    client can still remove such an attribute (an empty value)."""
    prof, repo = stubs[0], module_server[0].profiles.repo
    held = dict.fromkeys(LOOKALIKES, ADDRESS) | {"e\u200bmail": ADDRESS, "locale": "fr"}
    await asyncio.to_thread(repo.update_meta, "held", lambda meta: meta["attributes"].update(held))
    await asyncio.to_thread(repo.ingest, [TrackedEvent(
        "held-e1", "held", "view", "web", "", "i1", 0.0, time.time() - 60, dict(held))], [None])
    masked = {k: "c***@example.com" for k in held} | {"locale": "fr"}
    got = await prof.GetProfile(pb.GetProfileRequest(user_id="held"))
    assert got.pii_masked and dict(got.attributes) == masked
    assert [dict(e.attributes) for e in got.events] == [masked]
    exported = [e async for e in prof.ExportEvents(pb.ExportEventsRequest())
                if e.user_id == "held"]
    assert [dict(e.attributes) for e in exported] == [masked]
    await prof.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="held", attributes=dict.fromkeys(LOOKALIKES, "")))
    got = await prof.GetProfile(pb.GetProfileRequest(user_id="held"))
    assert set(got.attributes) == {"e\u200bmail", "locale"}


async def test_a_whole_script_lookalike_key_is_taken_and_masked(stubs):
    """`\u0456\u0440` (Cyrillic `і` and `р`) shows as `ip`: one script, so the write takes
    it (TS #39's mixed-script rule does); its value is masked as an `ip`'s."""
    prof = stubs[0]
    await prof.UpsertAttributes(pb.UpsertAttributesRequest(
        user_id="whole", attributes={"\u0456\u0440": "10.0.0.1", "\u0438\u043c\u044f": "Carol"}))
    got = await prof.GetProfile(pb.GetProfileRequest(user_id="whole"))
    assert dict(got.attributes) == {"\u0456\u0440": "1***", "\u0438\u043c\u044f": "Carol"}

"""A TrackEvents request (or a TrackEventStream message) of more events than
`limits.events_per_batch` is refused before its events are converted (server/services/profile.py
`ProfileConverter.to_events`): the count was checked only after every event had been copied
into a `TrackedEvent` on the event loop, so one 59 MiB request of 4.5 million tiny events held
a worker's loop for over 60 s (its health checks timed out) and took it past 3 GB."""
import time

import grpc
import pytest
import pytest_asyncio

import server.services.profile as profile_service
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.config import Settings
from server.limits import Limits
from tests.conftest import serving

MOST = 5


@pytest_asyncio.fixture(scope="module")
async def profiles(tmp_path_factory):
    """A ProfileServiceStub of a bare server that takes at most MOST events a batch."""
    tmp = tmp_path_factory.mktemp("event-batch-bound")
    settings = Settings(port=0, data_dir=tmp / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp / "secrets", limits=Limits(events_per_batch=MOST))
    async with serving(settings) as (_, channel):
        yield pb_grpc.ProfileServiceStub(channel)


@pytest.fixture
def built(monkeypatch):
    """The TrackedEvents the profile servicer builds."""
    made, make = [], profile_service.TrackedEvent

    def counted(*args):
        made.append(args[0])
        return make(*args)

    monkeypatch.setattr(profile_service, "TrackedEvent", counted)
    return made


def _events(n: int) -> list[pb.Event]:
    now = time.time()
    return [pb.Event(event_id=f"bound-{i}", user_id="u-bound", type="view", item_id="i1",
                     timestamp=now) for i in range(n)]


async def test_too_many_events_are_refused_before_any_is_converted(profiles, built):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.TrackEvents(pb.TrackEventsRequest(events=_events(MOST * 40)), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert err.value.details() == f"events: {MOST * 40} entries, at most {MOST}"
    assert built == []


async def test_a_stream_message_of_too_many_events_is_refused_before_it_is_converted(profiles, built):
    async def batches():
        yield pb.TrackEventsRequest(events=_events(MOST * 40))

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.TrackEventStream(batches(), timeout=20)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"events: {MOST * 40} entries, at most {MOST}" in err.value.details()
    assert built == []


async def test_a_batch_at_the_bound_is_still_taken(profiles, built):
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=_events(MOST)), timeout=20)
    assert reply.accepted == MOST and len(built) == MOST

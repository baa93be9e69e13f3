"""A TrackEvents call beside a TrackEventStream: it goes into the next write transaction, ahead of
the stream's read-ahead, which commits `limits.stream_commit_events` at a time, in order."""
import asyncio
import threading
import time

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc
from server.limits import Limits
from tests.conftest import serving

MESSAGES, EVENTS_A_MESSAGE, BOUND = 80, 50, 200


def _message(user: str, n: int, now: float) -> ppb.TrackEventsRequest:
    return ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=f"{user}-{j}", user_id=user, type="view", item_id=str(j % 50),
                  timestamp=now - j) for j in range(n)])


async def _until_queued(n: int) -> None:
    """Until `n` calls wait for the ingest batcher (its queue depth gauge): a bound on a hang only."""
    from prometheus_client import REGISTRY
    deadline = time.monotonic() + 30
    while REGISTRY.get_sample_value("tailor_batch_queue_depth", {"batcher": "ingest"}) != n:
        assert time.monotonic() < deadline, "the calls never queued"
        await asyncio.sleep(0.01)


async def test_a_track_events_call_commits_next_ahead_of_a_streams_read_ahead(settings, monkeypatch):
    """Beside a 200,000-event stream, TrackEvents calls waited ~1 s (up to 1.5 s) for the
    stream's messages queued before them, all in one transaction. Here the stream's first
    transaction is held until its other 79 messages and then a TrackEvents call have queued:
    the call commits in the next transaction, and no transaction carries more than BOUND of the
    stream's events, which commit in the order sent."""
    from server.profiles.handler import Profiles
    settings.limits = Limits(stream_commit_events=BOUND)
    ingest, gate, commits = Profiles._ingest_many, threading.Event(), []

    def held_ingest(self, batches):
        commits.append([b.user_ids[0] for b in batches])
        if len(commits) == 1:
            assert gate.wait(30)  # the stream's first message, until the rest have queued
        return ingest(self, batches)
    monkeypatch.setattr(Profiles, "_ingest_many", held_ingest)
    async with serving(settings) as (_, channel):
        stub = pgrpc.ProfileServiceStub(channel)
        now = time.time()

        async def messages():
            for m in range(MESSAGES):
                yield _message(f"s{m:02}", EVENTS_A_MESSAGE, now)

        stream = asyncio.ensure_future(stub.TrackEventStream(messages(), timeout=60))
        await _until_queued(MESSAGES - 1)
        click = asyncio.ensure_future(stub.TrackEvents(_message("click", 2, now), timeout=60))
        await _until_queued(MESSAGES)
        gate.set()
        assert (await click).accepted == 2
        assert (await stream).accepted == MESSAGES * EVENTS_A_MESSAGE
    assert commits[0] == ["s00"] and commits[1][0] == "click"
    streamed = [user for users in commits for user in users if user != "click"]
    assert streamed == [f"s{m:02}" for m in range(MESSAGES)]
    assert max(sum(u != "click" for u in users) for users in commits) == BOUND // EVENTS_A_MESSAGE

"""Overload: calls arriving while the calls queued for a batcher have waited longer than
`limits.batch_queue_seconds` are refused RESOURCE_EXHAUSTED at once, nothing of them done,
and nothing the server answered as accepted is lost."""
import asyncio
import collections
import logging
import time

import grpc

from protos.tailor.v1 import profile_pb2 as ppb
from protos.tailor.v1 import profile_pb2_grpc as pgrpc
from server import metrics
from server.limits import Limits
from tests.conftest import serving

EVENTS_A_CALL = 400


def _events(user: str, now: float) -> ppb.TrackEventsRequest:
    return ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=f"{user}-{j}", user_id=user, type="view", item_id=str(j % 50),
                  timestamp=now - j) for j in range(EVENTS_A_CALL)])


async def test_track_events_past_the_queue_bound_are_refused_and_nothing_answered_is_lost(
        settings, caplog, monkeypatch):
    from server import errors
    monkeypatch.setattr(errors, "_shed_lines", {}, raising=False)  # none of an earlier test's
    caplog.set_level(logging.INFO, "tailor.errors")
    settings.limits = Limits(batch_queue_seconds=0.05)
    from server.profiles.handler import Profiles
    ingest = Profiles._ingest_many

    def slow_ingest(self, batches):  # each commit 0.2 s at least, on a fast machine too: an
        time.sleep(0.2)  # idle machine committed every wave within the bound (nothing refused)
        return ingest(self, batches)
    monkeypatch.setattr(Profiles, "_ingest_many", slow_ingest)
    shed = metrics.SHED_CALLS.labels("ingest")
    shed_before = shed._value.get()
    async with serving(settings) as (_, channel):
        stub = pgrpc.ProfileServiceStub(channel)
        now = time.time()

        async def track(user: str):
            try:
                return await stub.TrackEvents(_events(user, now), timeout=60)
            except grpc.aio.AioRpcError as err:
                return err

        # waves 0.1 s apart, each arriving behind the batches the waves before it queued
        calls = []
        for wave in range(6):
            calls += [asyncio.ensure_future(track(f"w{wave}u{i}")) for i in range(25)]
            await asyncio.sleep(0.1)
        answers = dict(zip([f"w{w}u{i}" for w in range(6) for i in range(25)],
                           await asyncio.gather(*calls)))
        refused = {u: a for u, a in answers.items() if isinstance(a, grpc.aio.AioRpcError)}
        accepted = {u: a for u, a in answers.items() if u not in refused}
        assert refused and accepted
        assert {a.code() for a in refused.values()} == {grpc.StatusCode.RESOURCE_EXHAUSTED}
        # one message for all (a load test's report groups failures by it)
        assert {a.details() for a in refused.values()} == {
            "server overloaded: calls queued for the ingest batches have waited over "
            "limits.batch_queue_seconds (0.05 s); nothing of this call was done: send it again "
            "after a pause"}
        assert all(a.accepted == EVENTS_A_CALL for a in accepted.values())
        assert shed._value.get() - shed_before == len(refused)

        stored = collections.Counter()
        async for ev in stub.ExportEvents(ppb.ExportEventsRequest(), timeout=60):
            stored[ev.user_id] += 1
    assert stored == {u: EVENTS_A_CALL for u in accepted}  # every one answered; none refused
    # refused with its answer, not as a failed write logged apart (one WARNING line a call)
    assert "failed: Overloaded" not in caplog.text
    # nor one INFO line a refusal (a flood when overloaded): one line a batcher per interval
    lines = [r.getMessage() for r in caplog.records if "server overloaded" in r.getMessage()]
    assert 1 <= len(lines) <= 2 < len(refused), lines


async def test_a_stream_is_not_refused_for_its_own_batches_queued_behind_its_commits(settings):
    """A TrackEventStream reads up to `stream_read_ahead_events` ahead of its commits: its
    batches queue behind its own (long) transactions, and must not count as overload. A stream
    of 8,000 events in batches of 400 under a 1 ms bound failed with RESOURCE_EXHAUSTED at its
    second or third message before; every event is accepted now."""
    settings.limits = Limits(batch_queue_seconds=0.001)
    async with serving(settings) as (_, channel):
        stub = pgrpc.ProfileServiceStub(channel)
        now = time.time()

        async def messages():
            for m in range(20):
                yield _events(f"s{m}", now)

        reply = await stub.TrackEventStream(messages(), timeout=120)
        assert reply.accepted == 20 * EVENTS_A_CALL


async def test_a_worker_loop_blocked_for_a_second_shows_in_the_loop_lag_histogram(tailor_server):
    """A loop busy with other work delays every call without queueing any batch: its lag is
    `tailor_event_loop_lag_seconds`, measured from the server's start on."""
    from prometheus_client import REGISTRY

    def late() -> float:  # observations over 0.5 s
        sample = REGISTRY.get_sample_value
        return (sample("tailor_event_loop_lag_seconds_count")
                - sample("tailor_event_loop_lag_seconds_bucket", {"le": "0.5"}))

    await asyncio.sleep(0.3)  # a pass under way
    before = late()
    time.sleep(1.0)  # noqa: ASYNC251 - the point: the loop held, as by a CPU-bound callback
    await asyncio.sleep(0.3)
    assert late() - before >= 1


async def test_a_recommend_batch_is_refused_whole_or_not_at_all(settings):
    """A RecommendBatch's entries are checked against the bound once, before any is queued:
    entry by entry, the entries queued first made the later ones' wait pass a 1 ms bound on
    an idle server (500 entries: the first ~100 queued, the rest refused), so a `partial` call
    got some entries answered and others 'nothing of this call was done', and a whole call
    was refused after its queued entries ran."""
    from protos.tailor.v1 import recommendation_pb2 as rpb
    from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc
    settings.limits = Limits(batch_queue_seconds=0.001)
    async with serving(settings) as (_, channel):
        stub = rgrpc.RecommendationServiceStub(channel)
        requests = [rpb.RecommendRequest(user_id=str(u), k=2) for u in range(500)]
        for partial in (True, False):
            reply = await stub.RecommendBatch(
                rpb.RecommendBatchRequest(requests=requests, partial=partial), timeout=60)
            assert [r.HasField("error") for r in reply.responses] == [False] * len(requests)

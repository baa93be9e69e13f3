"""UserCache: reuse of a user's encoder output and candidates while the history is unchanged."""
import numpy as np
import pytest

from server.recommend import RecQuery
from server.recommend.handler import bundle_histories
from server.recommend.pipeline import recommend_batch
from server.recommend.user_cache import UserCache


class _Key:
    """Stands for a bundle: the cache only needs a weakly referenceable key."""


def _input(weights):
    return np.array([[3, 5, 0]], np.int64), np.array([weights], np.float32)


def test_same_input_hits_and_changed_input_misses():
    cache, key = UserCache(10), _Key()
    items, w = _input([1.0, 2.0, 0.0])
    stored = cache.store(key, "u", items[0], w[0], np.ones(4, np.float32))
    assert cache.lookup(key, ["u"], items, w) == [stored]
    assert cache.lookup(key, ["u"], items, w.copy()) == [stored]          # equal, not the same
    assert cache.lookup(key, ["u"], items, np.nextafter(w, 0)) == [None]  # the clock's decay
    assert cache.lookup(key, ["u"], items, w * (1 + 2e-4)) == [None]     # a weight that moved
    assert cache.lookup(key, ["u"], *_input([1.0, 2.0, 1.0])) == [None]  # a new item
    assert cache.lookup(key, ["v"], items, w) == [None]
    assert cache.lookup(_Key(), ["u"], items, w) == [None]               # another bundle
    # several entries found in one batch (compared together) and one found in a batch of three
    other = cache.store(key, "o", items[0], w[0] * 2, np.ones(4, np.float32))
    rows, ws = np.repeat(items, 3, axis=0), np.stack([w[0], w[0] * 2, w[0] * 2])
    assert cache.lookup(key, ["u", "o", "v"], rows, ws) == [stored, other, None]
    ws[1, 0] = np.nextafter(ws[1, 0], 0)
    assert cache.lookup(key, ["u", "o", "v"], rows, ws) == [stored, None, None]
    assert cache.lookup(key, ["v", "o", "x"], rows, np.stack([w[0] * 2] * 3)) == [None, other, None]
    rows[1, 1] = 4
    assert cache.lookup(key, ["v", "o", "x"], rows, np.stack([w[0] * 2] * 3)) == [None, None, None]


def test_oldest_entries_go_first_and_zero_keeps_none():
    cache, key = UserCache(2), _Key()
    items, w = _input([1.0, 1.0, 0.0])
    for u in ("a", "b", "c"):
        cache.store(key, u, items[0], w[0], np.zeros(4, np.float32))
    hits = [cache.lookup(key, [u], items, w)[0] is not None for u in ("a", "b", "c")]
    assert hits == [False, True, True] and len(cache) == 2
    off = UserCache(0)
    off.store(key, "a", items[0], w[0], np.zeros(4, np.float32))
    assert off.lookup(key, ["a"], items, w) == [None]


def test_candidates_are_kept_per_depth_and_scores_per_list():
    cache, key = UserCache(1), _Key()
    items, w = _input([1.0, 1.0, 0.0])
    entry = cache.store(key, "a", items[0], w[0], np.zeros(4, np.float32))
    found = (np.array([7, 9]), np.array([0.5, 0.4], np.float32))
    entry.keep(150, found)
    assert entry.candidates(150) is found and entry.candidates(120) is None
    scores = np.array([0.9, 0.1], np.float32)
    assert entry.scores_for(found[0]) is None
    entry.keep_scores(found[0], scores)
    assert entry.scores_for(np.array([7, 9])) is scores
    assert entry.scores_for(np.array([7])) is None and entry.scores_for(np.array([9, 7])) is None


def test_an_entry_read_before_its_users_erasure_is_not_stored(monkeypatch):
    """`store(since=...)` keeps nothing of a user erased after `since`; other users are kept,
    and past the erasures it remembers (`ERASED_KEPT`) it keeps nothing of an older batch."""
    from server.recommend import user_cache
    monkeypatch.setattr(user_cache, "ERASED_KEPT", 2)
    cache, key = UserCache(10), _Key()
    items, w = _input([1.0, 1.0, 0.0])
    vector = np.zeros(4, np.float32)
    since = cache.since()
    cache.erase(["a"])
    cache.store(key, "a", items[0], w[0], vector, since)
    cache.store(key, "b", items[0], w[0], vector, since)
    cache.store(key, "c", items[0], w[0], vector, cache.since())
    assert "a" not in cache and "b" in cache and "c" in cache
    cache.erase(["x"])
    cache.erase(["y"])  # "a" is no longer remembered: a batch from before it stores nobody
    cache.store(key, "d", items[0], w[0], vector, since)
    cache.store(key, "a", items[0], w[0], vector, cache.since())  # read after: kept
    assert "d" not in cache and "a" in cache


@pytest.fixture
def bundle(tailor_server):
    return tailor_server.registry.current()


def _answers(results):
    return [(r.rows.tolist(), np.round(r.scores, 5).tolist()) for r in results]


def test_cached_answers_match_uncached_ones_and_follow_a_new_event(bundle, demo_bundle):
    with np.load(demo_bundle / "users.npz") as npz:  # ids: the server's copy holds keyed hashes
        users = [str(u) for u in npz["user_ids"][:40]]
    queries = [RecQuery(u, 10) for u in users]
    cache = UserCache(100)
    uncached = _answers(recommend_batch(bundle, queries, bundle_histories))
    first = _answers(recommend_batch(bundle, queries, bundle_histories, cache=cache))
    again = _answers(recommend_batch(bundle, queries[:7], bundle_histories, cache=cache))
    assert first == uncached and again == uncached[:7] and len(cache) == len(users)

    def with_new_item(b, ids):  # every user just looked at the first result it was given
        out = []
        for h, r in zip(bundle_histories(b, ids), uncached):
            out.append((np.append(h[0], r[0][0]), np.append(h[1], np.float32(8.0))))
        return out
    fresh = _answers(recommend_batch(bundle, queries, with_new_item))
    assert _answers(recommend_batch(bundle, queries, with_new_item, cache=cache)) == fresh
    assert fresh != uncached


async def _held_recommend(server, channel, user: str):
    """(the Recommend call of `user`, held in its batch once it has read the user's profile;
    the event that lets it go on)."""
    import asyncio
    import threading

    from protos.tailor.v1 import recommendation_pb2 as rpb
    from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc
    rec = server.recommender
    read, go_on, live_of = threading.Event(), threading.Event(), rec.live_of

    def held_read(user_ids):
        found = live_of(user_ids)
        if user in user_ids:
            read.set()
            go_on.wait(30)
        return found
    rec.live_of = held_read
    call = asyncio.ensure_future(rgrpc.RecommendationServiceStub(channel).Recommend(
        rpb.RecommendRequest(user_id=user, k=5)))
    assert await asyncio.to_thread(read.wait, 30)
    return call, go_on


async def _track_views(channel, user: str, bundle) -> None:
    import time

    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc as pgrpc
    ids = bundle.items["item_ids"]
    await pgrpc.ProfileServiceStub(channel).TrackEvents(ppb.TrackEventsRequest(events=[
        ppb.Event(event_id=f"{user}-{n}", user_id=user, type="view", item_id=str(ids[r]),
                  timestamp=time.time()) for n, r in enumerate(bundle.popular[:5].tolist())]))


async def test_a_batch_under_way_stores_no_entry_of_a_user_erased_meanwhile(tailor_server, channel,
                                                                          bundle):
    """Erased while their Recommend was computed from the profile read before: the answer goes
    out, but the cache keeps nothing of them (before, the batch stored their history rows and
    vector after the erasure had dropped them)."""
    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc as pgrpc
    await _track_views(channel, "erased-mid-call", bundle)
    call, go_on = await _held_recommend(tailor_server, channel, "erased-mid-call")
    try:
        await pgrpc.ProfileServiceStub(channel).DeleteProfile(
            ppb.DeleteProfileRequest(user_id="erased-mid-call"))
    finally:
        go_on.set()
    assert not (await call).cold_start
    assert "erased-mid-call" not in tailor_server.recommender.cache
    await _track_views(channel, "kept", bundle)  # a user nobody erased is kept as before
    call, go_on = await _held_recommend(tailor_server, channel, "kept")
    go_on.set()
    await call
    assert "kept" in tailor_server.recommender.cache


async def test_another_workers_erasure_reaches_a_batch_under_way(tailor_server, channel, bundle):
    """The poll that tells this worker of another worker's erasures (`forget_erased`) names the
    users of batches under way too, so such a batch does not store the erased user."""
    await _track_views(channel, "erased-elsewhere", bundle)
    call, go_on = await _held_recommend(tailor_server, channel, "erased-elsewhere")
    try:
        tailor_server.recommender.forget_erased(
            lambda user_ids: [u for u in user_ids if u == "erased-elsewhere"])
    finally:
        go_on.set()
    await call
    assert "erased-elsewhere" not in tailor_server.recommender.cache


class _SlowEraser:
    """The erasure transaction's last eraser: holds it open (the Recommender's `erase_user`
    has run, nothing is committed) until the test lets it go."""

    def __init__(self):
        import threading
        self.inside, self.go_on = threading.Event(), threading.Event()

    def erase_user(self, txn, user_id: str) -> int:
        self.inside.set()
        self.go_on.wait(30)
        return 0


async def test_a_batch_that_reads_before_the_erasure_commits_stores_no_entry(tailor_server,
                                                                            channel, bundle):
    """A Recommend whose batch reads the profile while the erasure's transaction is still open
    (after the Recommender's `erase_user` ran in it, before the commit) reads the user's data
    as it was: once the erasure has answered, the cache holds nothing of them (before, the
    batch's `since` was taken after the in-transaction erase and its entry was stored)."""
    import asyncio
    import threading

    from protos.tailor.v1 import profile_pb2 as ppb
    from protos.tailor.v1 import profile_pb2_grpc as pgrpc
    from protos.tailor.v1 import recommendation_pb2 as rpb
    from protos.tailor.v1 import recommendation_pb2_grpc as rgrpc
    user, rec, slow = "erased-at-commit", tailor_server.recommender, _SlowEraser()
    await _track_views(channel, user, bundle)
    tailor_server.profiles.add_eraser(slow)
    read, live_of = threading.Event(), rec.live_of

    def noted_read(user_ids):
        found = live_of(user_ids)
        if user in user_ids:
            read.set()
        return found
    rec.live_of = noted_read
    erasure = asyncio.ensure_future(pgrpc.ProfileServiceStub(channel).DeleteProfile(
        ppb.DeleteProfileRequest(user_id=user)))
    try:
        assert await asyncio.to_thread(slow.inside.wait, 30)
        call = asyncio.ensure_future(rgrpc.RecommendationServiceStub(channel).Recommend(
            rpb.RecommendRequest(user_id=user, k=5)))
        assert await asyncio.to_thread(read.wait, 30)
    finally:
        slow.go_on.set()
    await erasure
    assert not (await call).cold_start  # computed from the profile as it was before
    assert user not in rec.cache

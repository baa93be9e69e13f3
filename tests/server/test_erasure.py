"""Erasure reaches learned state: tombstones (keyed hashes only), cold start for an erased
bundle user at once, a returning user starting fresh, and bundles judged by their data cutoff
against each tombstone — through a real server and real bundles."""
import asyncio
import json
import re
import time

import grpc
import numpy as np
import pytest

from clients import TailorClient, TailorError
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.store import keys


@pytest.fixture
def profiles(channel):
    return pb_grpc.ProfileServiceStub(channel)


@pytest.fixture
def recs(channel):
    return rpb_grpc.RecommendationServiceStub(channel)


@pytest.fixture
def bundle_users(demo_bundle) -> list[str]:
    with np.load(demo_bundle / "users.npz") as npz:
        return [str(u) for u in npz["user_ids"][:5]]


@pytest.fixture
def client(tailor_server):
    with TailorClient(f"127.0.0.1:{tailor_server.port}", timeout=60) as c:
        yield c


def _with_cutoff(copy_bundle, demo_bundle, cutoff: float, version: str):
    """A copy of the demo bundle as if trained on data up to `cutoff` (same users)."""
    bundle = copy_bundle(demo_bundle)
    path = bundle / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["version"] = version
    manifest["data"]["cutoff"] = cutoff
    path.write_text(json.dumps(manifest))
    return bundle


async def _cold(recs, user: str) -> bool:
    return (await recs.Recommend(rpb.RecommendRequest(user_id=user, k=5))).cold_start


async def test_an_erased_bundle_user_is_cold_start_at_once_and_a_returning_one_starts_fresh(
        profiles, recs, tailor_server, bundle_users):
    user, other = bundle_users[0], bundle_users[1]
    assert not await _cold(recs, user) and not await _cold(recs, other)
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))
    assert await _cold(recs, user)
    assert not await _cold(recs, other)  # nobody else is touched
    # The tombstone holds a keyed hash and a time, never the id.
    tombs = tailor_server.tombstones.listing()
    assert len(tombs) == 1 and abs(tombs[0].at - time.time()) < 60
    assert all(tailor_server.store.scan(t, keys.user_prefix(user)) == [] for t in keys.USER_TABLES)
    assert tailor_server.store.scan("meta", keys.TOMBSTONE_PREFIX)[0][0].endswith(
        tombs[0].digest.encode())
    # New consented activity after the erasure counts, from nothing: the old bundle row does not.
    item = str(tailor_server.registry.active.items["item_ids"][0])
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="back-1", user_id=user, type="purchase", item_id=item, timestamp=time.time())]))
    assert not await _cold(recs, user)
    trained, _ = tailor_server.registry.active.history(user) or (None, None)
    assert trained is None  # the row stays masked
    profile = await profiles.GetProfile(pb.GetProfileRequest(user_id=user))
    assert len(profile.events) == 1


async def test_a_retried_or_late_event_from_before_the_erasure_does_not_bring_the_user_back(
        profiles):
    """The client's retry of a batch acknowledged before the erasure (or a late replay) is
    refused event by event, with the reason; the same user's activity after it is stored."""
    old = time.time() - 7200
    batch = [pb.Event(event_id="order-1", user_id="ann", type="purchase", value=99.0,
                      timestamp=old),
             pb.Event(event_id="view-1", user_id="bob", type="view", item_id="i1", timestamp=old)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=batch))).accepted == 2
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="ann"))
    again = await profiles.TrackEvents(pb.TrackEventsRequest(events=batch + [pb.Event(
        event_id="order-2", user_id="ann", type="purchase", value=5.0, timestamp=time.time())]))
    assert (again.accepted, again.duplicates, list(again.accepted_ids)) == (1, 1, ["order-2"])
    [refused] = again.rejected
    assert (refused.index, refused.event_id) == (0, "order-1") and "erased" in refused.reason
    profile = await profiles.GetProfile(pb.GetProfileRequest(user_id="ann"))
    assert [e.event_id for e in profile.events] == ["order-2"]
    assert profile.features.monetary == pytest.approx(5.0)


async def test_a_bundle_trained_after_an_erasure_that_holds_the_user_is_refused(
        profiles, recs, client, tailor_server, bundle_users, copy_bundle, demo_bundle):
    user = bundle_users[2]
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))
    later = _with_cutoff(copy_bundle, demo_bundle, time.time() + 3600, "after-erasure")
    with pytest.raises(TailorError) as err:
        await asyncio.to_thread(client.push_bundle, later)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    # The user is not named (as a word: demo ids are numbers, which the cutoff's digits hold).
    assert "erased" in str(err.value) and not re.search(rf"\b{re.escape(user)}\b", str(err.value))
    assert tailor_server.registry.active.version != "after-erasure"


async def test_a_bundle_trained_before_an_erasure_loads_with_the_user_masked(
        profiles, recs, client, tailor_server, bundle_users, copy_bundle, demo_bundle):
    user, kept = bundle_users[3], bundle_users[4]
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))
    before = _with_cutoff(copy_bundle, demo_bundle, time.time() - 3600, "before-erasure")
    await asyncio.to_thread(client.push_bundle, before)
    active = tailor_server.registry.active
    assert active.version == "before-erasure"
    assert active.row_of(user) is None and active.row_of(kept) is not None  # masked at load
    assert await _cold(recs, user) and not await _cold(recs, kept)


async def test_a_returning_user_does_not_block_a_bundle_trained_on_their_new_activity(
        profiles, client, tailor_server, bundle_users, copy_bundle, demo_bundle):
    user = bundle_users[2]
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))
    item = str(tailor_server.registry.active.items["item_ids"][0])
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="new-1", user_id=user, type="view", item_id=item, timestamp=time.time())]))
    later = _with_cutoff(copy_bundle, demo_bundle, time.time() + 3600, "retrained")
    await asyncio.to_thread(client.push_bundle, later)
    assert tailor_server.registry.active.version == "retrained"
    assert tailor_server.registry.active.row_of(user) is not None


def test_another_worker_sees_a_new_tombstone_on_its_next_read(tmp_path):
    """Workers share tombstones through the store: a cached list is reread when the count moves."""
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store import Store
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    here, there = Tombstones(store, ring, clock=lambda: 100.0), Tombstones(store, ring)
    assert there.erased_at(["x", "y"]) == [None, None]  # cached: no tombstone
    store.write(lambda txn: here.erase_user(txn, "x"))
    assert there.erased_at(["x", "y"]) == [100.0, None]
    rotated = Tombstones(store, ring.rotated(), clock=lambda: 200.0)
    store.write(lambda txn: rotated.erase_user(txn, "y"))  # under the new key
    assert rotated.erased_at(["x", "y"]) == [100.0, 200.0]  # the old kid still matches
    assert Tombstones(store, Keyring.generate("erasure")).erased_at(["x", "y"]) == [None, None]
    store.close()


def test_write_transactions_look_up_their_users_tombstones_not_the_list(tmp_path):
    """The late-event check reads the latest erasure time and the batch's users' tombstones
    (under every key id in use), not the list; a store whose note is not of its count (a
    restore carried tombstones in) is checked from the list until the next erasure notes
    it again."""
    from server.profiles.tombstones import Tombstones, digest
    from server.security.secrets import Keyring
    from server.store import Store
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    store.write(lambda txn: Tombstones(store, ring, clock=lambda: 100.0).erase_user(txn, "x"))
    tombs = Tombstones(store, ring.rotated(), clock=lambda: 200.0)
    store.write(lambda txn: tombs.erase_user(txn, "y"))  # under the new key

    def late(users, ts):
        return store.write(lambda txn: tombs.before_erasure(txn, users, ts))
    assert late(["x", "y", "z", "x", "y"], [100.0, 150.0, 50.0, 101.0, 201.0]) == [0, 1]
    assert store.write(lambda txn: tombs.find(txn, ["x", "y", "z"])) == [
        (100.0, 100.0), (200.0, 200.0), None]
    carried = keys.tombstone_key(ring.kid, digest(ring.key, "z"))  # as a restore adds one
    store.write(lambda txn: (tombs._meta.put(txn, carried, b'{"at": 300.0}'),
                             tombs._meta.put(txn, keys.TOMBSTONE_COUNT, b"3")))
    assert late(["z", "z"], [250.0, 301.0]) == [0]
    store.write(lambda txn: tombs.erase_user(txn, "w"))  # at 200: the note is made whole
    noted = json.loads(store.get("meta", keys.TOMBSTONE_LATEST))
    assert (noted["count"], noted["until"], sorted(noted["kids"])) == (
        4, 300.0, sorted(kid for kid, _ in tombs.ring.keys))
    assert late(["z", "w"], [250.0, 150.0]) == [0, 1]
    store.close()


def test_a_reader_of_an_older_snapshot_never_hides_an_erasure_from_the_ingestion(tmp_path):
    """The tombstone cache is shared by a worker's threads. A reader whose snapshot predates an
    erasure (a Recommend batch's read) reread the list after the ingestion's write transaction
    had, and put its older `latest erasure` back: the ingestion then compared its events with
    that older time, skipped the lookup, and stored a late event of the user just erased (their
    profile back). Here the reader's reread is run at the one point between the two (the end of
    the ingestion's cache update), on real LMDB snapshots."""
    import threading

    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store import Store
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    times = iter([100.0, 200.0])
    tombs = Tombstones(store, ring, clock=lambda: next(times))
    store.write(lambda txn: tombs.erase_user(txn, "old"))  # erased at 100
    opened, go, done = threading.Event(), threading.Event(), threading.Event()

    def stale_reader():
        with store.read() as txn:  # before x's erasure: one tombstone
            opened.set()
            go.wait(10)
            tombs.current(txn)
        done.set()
    reader = threading.Thread(target=stale_reader)
    reader.start()
    opened.wait(10)
    store.write(lambda txn: tombs.erase_user(txn, "x"))  # erased at 200
    # a store written before the latest-erasure note (or a restore carried tombstones in):
    # the check reads the cached list, the case this race is about
    store.write(lambda txn: tombs._meta.delete(txn, keys.TOMBSTONE_LATEST))

    class ReaderAfterFirstUpdate:  # the cache's real lock; the reader runs once it is let go
        def __init__(self, lock):
            self.lock, self.fired = lock, False

        def __enter__(self):
            self.lock.acquire()

        def __exit__(self, *exc):
            self.lock.release()
            if not self.fired:
                self.fired = True
                go.set()
                done.wait(10)
    tombs._lock = ReaderAfterFirstUpdate(tombs._lock)
    late = store.write(lambda txn: tombs.before_erasure(txn, ["x", "y"], [150.0, 150.0]))
    reader.join(10)
    assert tombs._lock.fired and done.is_set()
    assert late == [0]  # x's event from before x's erasure (150 <= 200) is late
    store.close()


async def test_an_event_committed_just_before_the_final_erasure_leaves_no_dedupe_key(
        profiles, tailor_server, monkeypatch):
    """An event of the user committed between the erasure's event chunks and its final
    transaction goes with its dedupe key: the same event id is new again afterwards."""
    from server.profiles import TrackedEvent
    store, repo = tailor_server.store, tailor_server.profiles.repo
    late = TrackedEvent("late-1", "rae", "view", "web", "", "i1", 0.0, time.time() - 60, {})
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="early-1", user_id="rae", type="view", item_id="i1", timestamp=time.time() - 60)]))
    write, erasures = store.write, []

    def racing_write(fn, erasure=False):  # the erasure's own writes (not a retention sweep's)
        erasures.append(erasure and fn.__qualname__.startswith("ProfileRepository.erase."))
        if erasures[-1] and erasures.count(True) == 2:  # the final transaction: the ingestion got in first
            repo.ingest([late], [None])
        return write(fn, erasure)
    monkeypatch.setattr(store, "write", racing_write)
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="rae"))
    monkeypatch.undo()
    assert erasures.count(True) == 2
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(  # after the erasure
        event_id="late-1", user_id="rae", type="view", item_id="i1", timestamp=time.time())]))
    assert (reply.accepted, reply.duplicates) == (1, 0)


async def test_an_erasure_that_fails_after_the_shred_leaves_the_user_whole_and_tracked(
        profiles, tailor_server, monkeypatch):
    """The erasure's last transaction fails after the user's data key was destroyed (a failed
    fsync, a crash before the commit): nothing of it is kept (the events its earlier chunks
    deleted stay deleted), so the user's profile still opens and every later batch naming
    them is stored; DeleteProfile asked again erases."""
    store, now = tailor_server.store, time.time()

    def event(eid: str, user: str) -> pb.Event:
        return pb.Event(event_id=eid, user_id=user, type="view", item_id="i1", timestamp=now)
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[event("ivy-1", "ivy")]))
    await profiles.UpsertAttributes(pb.UpsertAttributesRequest(user_id="ivy",
                                                               attributes={"tier": "gold"}))
    shred = store.shred

    def failing_shred(txn, user_id):
        shred(txn, user_id)
        raise OSError(5, "Input/output error")  # the transaction aborts after the shred
    monkeypatch.setattr(store, "shred", failing_shred)
    with pytest.raises(grpc.aio.AioRpcError):
        await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="ivy"))
    monkeypatch.undo()
    reply = await profiles.TrackEvents(pb.TrackEventsRequest(
        events=[event("ivy-2", "ivy"), event("ned-1", "ned")]))
    assert (reply.accepted, list(reply.rejected)) == (2, [])
    profile = await profiles.GetProfile(pb.GetProfileRequest(user_id="ivy"))
    assert [e.event_id for e in profile.events] == ["ivy-2"]  # ivy-1: the first chunk's
    assert profile.attributes["tier"] == "gold" and sum(profile.features.counts.values()) == 2
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="ivy"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.GetProfile(pb.GetProfileRequest(user_id="ivy"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert store.scan("datakeys") != []  # ned's key only
    assert len(store.scan("datakeys")) == 1


async def test_a_retried_consent_change_from_before_the_erasure_does_not_bring_the_user_back(
        profiles):
    """A consent webhook acknowledged before the erasure and replayed after it (with its own
    timestamp) recreated the erased person's profile with their consent record; it is refused
    as a late event is, and a change dated after the erasure is kept."""
    before = time.time() - 60
    change = pb.SetConsentRequest(user_id="zoe", channel="email", opted_in=True,
                                  source="crm webhook", timestamp=before)
    await profiles.SetConsent(change)
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="zoe"))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.SetConsent(change)
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "erased" in err.value.details() and "zoe" not in err.value.details()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.GetProfile(pb.GetProfileRequest(user_id="zoe"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    await profiles.SetConsent(pb.SetConsentRequest(user_id="zoe", channel="email", opted_in=False,
                                                   source="crm webhook"))  # now: after it
    profile = await profiles.GetProfile(pb.GetProfileRequest(user_id="zoe", parts=["consent"]))
    assert not profile.consent["email"].opted_in and len(profile.consent_history) == 1


def test_another_workers_user_cache_forgets_an_erased_user(server_process, demo_bundle):
    """Each worker's Recommend user cache holds a served user's history rows and vector by id.
    DeleteProfile drops them in the worker that erases; the other worker learned nothing of
    it and kept them until the user asked again or eviction. Now it forgets them when it
    reads the new tombstone (within the poll interval, serving nothing meanwhile)."""
    from tests.server.test_rpc_metrics import scrape, value
    server = server_process(bundle=demo_bundle, workers=2,
                            env={"TAILOR_BUNDLE_POLL_SECONDS": "0.1", "TAILOR_LMDB_SYNC": "false"})

    def cached(want: float, timeout: float = 5.0) -> float:
        deadline = time.time() + timeout
        while (got := value(scrape(server.metrics_port), "tailor_user_cache_users")) != want \
                and time.time() < deadline:
            time.sleep(0.1)
        return got
    with grpc.insecure_channel(server.target) as ch:
        pb_grpc.ProfileServiceStub(ch).TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
            event_id="w-1", user_id="1", type="view", item_id="2", timestamp=time.time() - 60)]))
    for _ in range(60):  # new connections until both workers served (and cached) the user
        with grpc.insecure_channel(server.target) as ch:
            reply = rpb_grpc.RecommendationServiceStub(ch).Recommend(
                rpb.RecommendRequest(user_id="1", k=5))
        assert not reply.cold_start
        if cached(2, timeout=0.3) == 2:
            break
    assert cached(2) == 2  # one entry in each worker
    with grpc.insecure_channel(server.target) as ch:
        pb_grpc.ProfileServiceStub(ch).DeleteProfile(pb.DeleteProfileRequest(user_id="1"))
    assert cached(0) == 0


async def test_the_digest_caches_drop_user_ids_once_an_erasure_is_read(
        profiles, recs, tailor_server, bundle_users):
    """The serving path caches each user's keyed hash by (key, raw user id): tombstone
    lookups, impression keys, store keys (`user_token`), and the contact policy the keys of
    their address. An erased user's id (or address) stayed in them (in every worker) after the
    erasure; they are emptied when a worker reads new tombstones."""
    from server.impressions import writer
    from server.profiles import tombstones
    from server.store import tokens
    user, other = bundle_users[0], bundle_users[1]
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="dg-1", user_id=other, type="view", item_id="1", timestamp=time.time() - 60)]))
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=other))  # tombstones exist
    await asyncio.sleep(0.5)  # read by the server's poll
    reply = await recs.Recommend(rpb.RecommendRequest(user_id=user, k=5))
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(  # joined to the answer
        event_id="dg-2", user_id=user, type="click", item_id=reply.items[0].item_id,
        request_id=reply.request_id, timestamp=time.time())]))
    await tailor_server.impressions.log.flushed()
    suppressions = tailor_server.suppressions  # the contact policy's lookup of their address
    assert suppressions.reason({"attributes": {"email": f"{user}@example.org"}}, "email") is None
    caches = [tombstones._cached_digest, writer._cached_digest, tokens._user_token,
              suppressions._address_keys, suppressions.hasher.digests]
    assert all(c.cache_info().currsize > 0 for c in caches)
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id=user))
    await asyncio.sleep(0.5)  # (bundle_poll_seconds 0.1; nothing else is served meanwhile)
    assert [c.cache_info().currsize for c in caches] == [0] * len(caches)


async def test_a_retried_batch_from_a_client_whose_clock_runs_ahead_does_not_bring_the_user_back(
        profiles):
    """Events are stamped by the client's clock, the erasure by the server's. A client running
    2 minutes ahead (inside the 5-minute future tolerance) retried a batch acknowledged just
    before DeleteProfile: its events were stamped after the erasure time, so they were stored
    and rebuilt the erased profile. The tombstone also covers the latest erased event's time."""
    ahead = time.time() + 120
    batch = [pb.Event(event_id="fast-1", user_id="max", type="purchase", value=42.0,
                      timestamp=ahead)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=batch))).accepted == 1
    await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="max"))
    again = await profiles.TrackEvents(pb.TrackEventsRequest(events=batch))
    assert again.accepted == 0 and [r.event_id for r in again.rejected] == ["fast-1"]
    assert "erased" in again.rejected[0].reason
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await profiles.GetProfile(pb.GetProfileRequest(user_id="max"))
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    later = await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(  # a new event
        event_id="fast-2", user_id="max", type="view", item_id="i1", timestamp=ahead + 1)]))
    assert later.accepted == 1


async def test_after_erasing_a_user_with_an_event_stamped_ahead_their_new_events_are_stored(
        profiles):
    """To refuse the retry above, every event of the user up to the latest erased one's time
    was refused: one device of a shared id running 250 s ahead made the id's new events from
    correct clocks (new ids, stamped after the erasure) rejected for those 250 s, with a false
    reason ("erased after this event's time"). The erasure now keeps which events it deleted
    stamped after it: only their replays are refused, with a reason that says so."""
    skewed = [pb.Event(event_id="skewed-1", user_id="anonymous", type="view", item_id="i1",
                       timestamp=time.time() + 250)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=skewed))).accepted == 1
    erased = (await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="anonymous"))).erased_at
    new = [pb.Event(event_id=f"new-{lag}", user_id="anonymous", type="view", item_id="i1",
                    timestamp=erased + lag) for lag in (1, 60, 200)]
    assert (await profiles.TrackEvents(pb.TrackEventsRequest(events=new))).accepted == 3
    replay = await profiles.TrackEvents(pb.TrackEventsRequest(events=skewed))
    assert replay.accepted == 0 and [r.event_id for r in replay.rejected] == ["skewed-1"]
    assert "replay" in replay.rejected[0].reason and "after this event's time" not in \
        replay.rejected[0].reason
    old = await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="old-1", user_id="anonymous", type="view", item_id="i1", timestamp=erased - 5)]))
    assert "erased after this event's time" in old.rejected[0].reason


async def test_a_repeated_delete_profile_leaves_one_erasure_time_everywhere(profiles,
                                                                            tailor_server):
    """A repeat of DeleteProfile that finds nothing left answers the first erasure's time, but
    ExportTombstones and the user's ExportProfile then showed the repeat's: two values of
    "the user's erasure (their tombstone)". All three now give the first's."""
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="twice-1", user_id="tess", type="view", item_id="i1", timestamp=time.time() - 60)]))
    first = (await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="tess"))).erased_at
    await asyncio.sleep(0.3)
    repeat_at = time.time()
    assert (await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="tess"))).erased_at == first
    listed = [t.erased_at async for t in profiles.ExportTombstones(pb.ExportTombstonesRequest())]
    assert first in listed and not [at for at in listed if at >= repeat_at]
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(  # tess comes back
        event_id="twice-2", user_id="tess", type="view", item_id="i1", timestamp=time.time())]))
    # ExportProfile's document (its `erased_at`; the RPC needs the pii-reader role)
    assert (await tailor_server.profiles.export_user("tess")).erased_at == first


def test_the_late_event_window_never_reaches_past_the_future_tolerance(tmp_path):
    """The window of replays refused after an erasure ends at the latest erased event's time,
    never more than `event_future_tolerance_s` past the erasure (a tolerance lowered since)."""
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    tombs = Tombstones(store, Keyring.generate("erasure"), clock=lambda: 1000.0,
                       future_tolerance_s=300.0)
    store.write(lambda txn: tombs.erase_user(txn, "u", events_until=5000.0,
                                             ahead=[(5_000_000, b"t" * 32)]))
    late = store.write(lambda txn: tombs.before_erasure(txn, ["u"] * 3, [1200.0, 1300.0, 1301.0]))
    assert late == [0, 1]
    store.close()


async def test_a_retried_delete_profile_says_the_user_was_erased_by_the_first_call(profiles):
    """A client whose DeleteProfile answer was lost retries: the repeat finds nothing left and
    answered `records_deleted: 0` alone, as for a user never seen. Both answers carry the time of
    the erasure that did it; a user never seen is erased now."""
    await profiles.TrackEvents(pb.TrackEventsRequest(events=[pb.Event(
        event_id="rt-1", user_id="rita", type="view", item_id="i1", timestamp=time.time() - 60)]))
    first = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="rita"))
    assert first.records_deleted > 0 and abs(first.erased_at - time.time()) < 60
    again = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="rita"))
    assert (again.records_deleted, again.erased_at) == (0, first.erased_at)
    never = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="nobody-at-all"))
    assert never.records_deleted == 0 and never.erased_at >= again.erased_at  # a tombstone still


def test_an_erasure_deletes_a_heavy_users_decisions_before_its_last_transaction(tmp_path):
    """The erasure's last transaction (tombstone, shred, every eraser) deleted every campaign
    decision of the user, with its index and due entries: 100,000 decisions of a shared id
    held the store's one write lock 2-4 s. They go first, `ERASE_CHUNK` per transaction; the
    last transaction erases only those logged since. Nothing of the user is left, and the
    pending count drops by theirs."""
    from server.campaigns.decision_ids import decision_ids
    from server.campaigns.records import DecisionRecord
    from server.campaigns.repository import CampaignRepository
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    from server.store import Store
    store = Store(tmp_path / "store", sync=False)
    repo = CampaignRepository(store)
    now = time.time() - 3600
    ids = decision_ids(28, now)

    def decision(i: int, user: str) -> DecisionRecord:
        return DecisionRecord(ids[i], "c", user, now + i, 1, 0.5, None, [], 0, "b", "pending",
                              now + 86400, False, "web", 0.0, "", (), 1.0, 1.0, False)
    repo.log_decisions([decision(i, "anonymous") for i in range(25)] +
                       [decision(i, "kept") for i in range(25, 28)])
    seen_last = []

    class LastTransaction:  # an eraser: the user's decisions the last transaction still finds
        def erase_user(self, txn, user_id):
            seen_last.append(len(store.table("decisions").scan_prefix(txn, keys.user_prefix(user_id))))
            return 0
    repo.ERASE_CHUNK = 10
    profiles = ProfileRepository(store, ProfileSchema().layout())
    assert profiles.delete_user("anonymous", [LastTransaction(), repo]) == 25 * 3
    assert seen_last == [0]
    assert [repo.log.owner(i) for i in ids] == [None] * 25 + [("kept", "c")] * 3
    with store.read() as txn:
        assert json.loads(store.table("bandit").get(txn, keys.count_key("c")))["pending"] == 3
        assert sum(1 for k in store.table("decisions").keys(txn) if k.startswith(keys.SEP)) == 6
    store.close()

"""The exports that read past a whole table (ExportEvents, ExportImpressions) answer exactly
the asked range, scan in short read snapshots (`store.scan`: several for a table bigger than
one), and never on the event loop's thread: a narrow export over a large store holds up no
other call of the worker."""
import itertools
import threading
import time

import pytest

from protos.tailor.v1 import model_admin_pb2 as apb
from protos.tailor.v1 import model_admin_pb2_grpc as apb_grpc
from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.store import Store, scan

T0 = time.time() - 86400.0
EVENTS = 9000  # past two snapshots of ProfileRepository.export (4,096 keys each)


def _threads_of(obj, name: str, seen: list) -> None:
    """Record the thread each list of the export `obj.name(...)` is made on (the real export
    makes it)."""
    real = getattr(obj, name)

    def recorded(*a, **kw):
        for item in real(*a, **kw):
            seen.append(threading.get_ident())
            yield item
    setattr(obj, name, recorded)


async def test_export_events_answers_the_range_off_the_loop(tailor_server, channel):
    stub = pb_grpc.ProfileServiceStub(channel)
    events = [pb.Event(event_id=f"e{i}", user_id=f"u{i % 300}", type="view", item_id="i1",
                       timestamp=T0 + i) for i in range(EVENTS)]
    for i in range(0, EVENTS, 500):
        await stub.TrackEvents(pb.TrackEventsRequest(events=events[i:i + 500]))
    seen: list[int] = []
    _threads_of(tailor_server.profiles.repo, "export", seen)
    got = [e async for e in stub.ExportEvents(pb.ExportEventsRequest(start=T0 + 1000,
                                                                     end=T0 + 1999))]
    assert sorted(e.event_id for e in got) == sorted(f"e{i}" for i in range(1000, 2000))
    users = [e.user_id for e in got]
    assert len([u for u, _ in itertools.groupby(users)]) == len(set(users))  # user by user
    # 9,000 keys: three snapshots of 4,096 (a list each, read in a thread), none on the loop
    assert len(seen) == 3 and threading.get_ident() not in seen
    assert len([e async for e in stub.ExportEvents(pb.ExportEventsRequest())]) == EVENTS


async def test_export_impressions_reads_off_the_loop(tailor_server, channel):
    rec = rpb_grpc.RecommendationServiceStub(channel)
    for user in ("ann", "bob", "cy"):
        await rec.Recommend(rpb.RecommendRequest(user_id=user, k=3))
    seen: list[int] = []
    _threads_of(tailor_server.impressions.log, "export", seen)
    admin = apb_grpc.ModelAdminServiceStub(channel)
    rows = [r async for r in admin.ExportImpressions(apb.ExportImpressionsRequest())]
    assert len(rows) == 3 and len({r.request_id for r in rows}) == 3
    assert all(len(r.items) == 3 for r in rows)
    assert seen and threading.get_ident() not in seen
    assert [r async for r in admin.ExportImpressions(apb.ExportImpressionsRequest(
        start=time.time() + 60))] == []


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", sync=False)
    yield s
    s.close()


def test_scan_yields_each_snapshots_picks_and_holds_none_between(store):
    table = store.table("catalog")
    store.write(lambda txn: table.put_many(txn, [(b"k%03d" % i, b"%d" % i) for i in range(10)]))
    chunks = scan(store, table, lambda txn, key: key if int(key[1:]) % 3 == 0 else None,
                  start=b"k", chunk=4, finish=lambda txn, ks: [table.get(txn, k) for k in ks])
    assert next(chunks) == [b"0", b"3"]
    # between two chunks no snapshot is open: a write meanwhile shows in the next one
    store.write(lambda txn: table.put(txn, b"k006", b"six"))
    assert list(chunks) == [[b"six"], [b"9"]]
    # a chunk with no pick is yielded too (the caller gets a turn)
    assert list(scan(store, table, lambda txn, key: None, start=b"k", chunk=4)) == [[], [], []]


async def test_export_impressions_names_users_from_one_event_each_in_short_snapshots(tmp_path):
    """ExportImpressions names users by id (`ProfileRepository.user_ids`): the id of each is
    read from one of their events, found by a seek past the others, not by opening (with
    encryption on: decrypting) every stored event in one snapshot held for the whole table."""
    import contextlib

    from server.config import Settings
    from tests.conftest import serving
    settings = Settings(port=0, data_dir=tmp_path / "data", grace_seconds=1.0, lmdb_sync=False,
                        secrets_dir=tmp_path / "secrets")
    async with serving(settings) as (server, ch):
        stub = pb_grpc.ProfileServiceStub(ch)
        users = [f"u{i}" for i in range(30)]
        await stub.TrackEvents(pb.TrackEventsRequest(events=[
            pb.Event(event_id=f"e{i}", user_id=users[i % 30], type="view", item_id="i1",
                     timestamp=T0 + i) for i in range(1200)]))
        await stub.DeleteProfile(pb.DeleteProfileRequest(user_id="u7"))
        repo = server.profiles.repo
        events, store = repo._events, repo.store
        opened, snapshots = [], []

        class Counted:  # the real table, counting the values its reads hand out
            def __getattr__(self, name):
                return getattr(events, name)

            def items(self, txn, start=b""):
                for pair in events.items(txn, start):
                    opened.append(pair[0])
                    yield pair

            def get_many(self, txn, keys):
                opened.extend(keys)
                return events.get_many(txn, keys)
        real_read = store.read

        @contextlib.contextmanager
        def counted_read(*a, **kw):
            snapshots.append(1)
            with real_read(*a, **kw) as txn:
                yield txn
        repo._events, store.read = Counted(), counted_read
        try:
            assert sorted(repo.user_ids()) == sorted(u for u in users if u != "u7")
            assert len(opened) == 29 and len(snapshots) == 1
            snapshots.clear()
            assert sorted(repo.user_ids(chunk=10)) == sorted(u for u in users if u != "u7")
            assert len(snapshots) == 3  # 29 users, 10 a snapshot
        finally:
            repo._events = events
            del store.read

"""The impression log's writer process: groups are written by the child, not the server; a
buffered answer of a user erased before its group commits is never written (the tombstone is
read in the child's write transaction); a dead child loses its group and the next flush starts
a new one while serving goes on."""
import asyncio
import os
import signal
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from protos.tailor.v1 import recommendation_pb2 as rpb
from protos.tailor.v1 import recommendation_pb2_grpc as rpb_grpc
from server.errors import Unavailable
from server.impressions.group import Batch, Group
from server.impressions.records import C, decode
from server.impressions.writer import ImpressionWriter, user_hash, user_hashes
from server.profiles.tombstones import Tombstones
from server.security.secrets import Keyring
from server.store import Store, keys


@pytest.fixture
def slow_flush(settings):
    settings.impression_flush_seconds = 3600.0  # the tests flush
    return settings


async def recommend(channel, user: str) -> str:
    stub = rpb_grpc.RecommendationServiceStub(channel)
    return (await stub.Recommend(rpb.RecommendRequest(user_id=user, k=5, channel="web"))).request_id


def stored(log, user: str) -> dict:
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, log.user_prefix(user))
    return {k.rsplit(b"\x1f", 1)[1].decode(): decode(v) for k, v in found}


def written_total() -> float:
    from prometheus_client import REGISTRY
    return REGISTRY.get_sample_value("tailor_impressions_written_total") or 0.0


def counted(log) -> float:
    with log.store.read() as txn:
        found = log.store.table("impressions").scan_prefix(txn, keys.IMPRESSION_COUNT_PREFIX)
    return sum(np.frombuffer(v, np.float64)[C.IMPRESSIONS] for _, v in found)


async def test_buffered_answers_of_an_erased_user_are_never_written(slow_flush, tailor_server,
                                                                    channel):
    log = tailor_server.impressions.log
    assert log.writer.pid not in (None, os.getpid())
    os.kill(log.writer.pid, 0)  # a live child process
    kept = await recommend(channel, "kept")
    for _ in range(2):
        await recommend(channel, "gone")
    assert len(log._buf) == 3  # all still buffered when the erasure commits
    await pb_grpc.ProfileServiceStub(channel).DeleteProfile(pb.DeleteProfileRequest(user_id="gone"))
    before = written_total()
    assert await log.flushed() == 1
    assert written_total() == before + 1  # what the child answered
    assert stored(log, "gone") == {} and list(stored(log, "kept")) == [kept]
    assert counted(log) == 3  # every answer shown counts
    back = await recommend(channel, "gone")  # shown after the erasure: a new log
    assert await log.flushed() == 1
    assert list(stored(log, "gone")) == [back]


async def test_a_dead_writer_loses_its_group_and_the_next_flush_starts_a_new_one(
        slow_flush, tailor_server, channel):
    log = tailor_server.impressions.log
    first = log.writer.pid
    nice = min(19, os.getpriority(os.PRIO_PROCESS, 0) + tailor_server.settings.impression_writer_nice)
    assert tailor_server.settings.impression_writer_nice > 0  # the log yields the CPU to serving
    assert os.getpriority(os.PRIO_PROCESS, first) == nice
    lost = await recommend(channel, "w")
    os.kill(first, signal.SIGKILL)
    with pytest.raises(Unavailable):  # sent to the dying child: never answered
        await log.flushed()
    written = await recommend(channel, "w")  # serving goes on
    assert await log.flushed() == 1
    assert log.writer.pid not in (None, first, os.getpid())
    assert os.getpriority(os.PRIO_PROCESS, log.writer.pid) == nice  # the new child too
    assert os.sched_getscheduler(log.writer.pid) == os.SCHED_BATCH
    assert list(stored(log, "w")) == [written] and lost != written


async def test_answers_held_by_a_lagging_writer_count_toward_buffer_max(slow_flush, tailor_server,
                                                                         channel):
    """`buffer_max` bounded the buffer only: each flush sent it to the writer and emptied it, so a
    writer that lags (a slow store; here stopped) was sent a new group every flush, each held in
    memory until answered, without bound. What waits in sent groups counts too."""
    from prometheus_client import REGISTRY

    log = tailor_server.impressions.log
    log.buffer_max = 2
    os.kill(log.writer.pid, signal.SIGSTOP)
    try:
        for user in ("a", "b"):
            await recommend(channel, user)
        sending = asyncio.ensure_future(log.flushed())
        while log._buf:  # taken and sent; the stopped writer answers nothing
            await asyncio.sleep(0.01)
        dropped = REGISTRY.get_sample_value("tailor_impressions_dropped_total") or 0.0
        await recommend(channel, "c")
        assert log._buf == []
        assert REGISTRY.get_sample_value("tailor_impressions_dropped_total") == dropped + 1
    finally:
        os.kill(log.writer.pid, signal.SIGCONT)
    assert await sending == 2
    await recommend(channel, "d")  # answered: room again
    assert await log.flushed() == 1


def test_the_writer_reads_tombstones_in_its_transaction(tmp_path):
    """Hand-made group: x shown before and after x's erasure, y once; x's first is dropped."""
    store = Store(tmp_path / "store", sync=False)
    ring, erasure = Keyring.generate("user-id"), Keyring.generate("erasure")
    tombstones = Tombstones(store, erasure, clock=lambda: 1000.0)
    writer = ImpressionWriter(store)
    store.write(lambda txn: tombstones.erase_user(txn, "x"))
    batch = Batch("v1", np.array([999.0, 1001.0, 999.5]), ["r1", "r2", "r3"], ["x", "x", "y"],
                  ["web", "web", "email"], np.arange(6, dtype=np.int64).reshape(3, 2),
                  np.ones((3, 2), np.float32), np.array([False, True, False]))
    group = Group(ring.kid, ring.key, erasure.keys, [batch], [])
    assert writer.write([group]) == [2]
    with store.read() as txn:
        table = store.table("impressions")
        rows = {u: [k.rsplit(b"\x1f", 1)[1] for k, _ in table.scan_prefix(
            txn, keys.impression_user_prefix(ring.kid, user_hash(ring.key, u)))] for u in "xy"}
        web = np.frombuffer(table.get(txn, keys.impression_count_key("v1", "web")), np.float64)
    assert rows == {"x": [b"r2"], "y": [b"r3"]}
    assert (web[C.IMPRESSIONS], web[C.COLD_START], web[C.FIRST], web[C.LAST]) == (2, 1, 999, 1001)
    store.write(lambda txn: tombstones.erase_user(txn, "y"))  # a later erasure: reread
    later = Group(ring.kid, ring.key, erasure.keys, [batch._replace(request_ids=["a", "b", "c"])],
                  [])
    assert writer.write([later]) == [1]  # x's after its erasure; y's both before
    store.close()


def test_a_repeat_under_a_callers_request_id_is_written_once_within_the_window(tmp_path):
    """Hand-made groups: the caller's id "r" answered twice alike (in one group, then in a
    later one, as another worker's), once with other items; a server-drawn id alike; the
    window passed; retention drops the remembered ids."""
    store = Store(tmp_path / "store", sync=False)
    ring = Keyring.generate("user-id")
    writer, table = ImpressionWriter(store), store.table("impressions")

    def group(ts, request_ids, given, rows=((1, 2), (1, 2), (3, 4))):
        m = len(ts)
        return Group(ring.kid, ring.key, (), [Batch(
            "v1", np.array(ts, np.float64), request_ids, ["x"] * m, ["web"] * m,
            np.array(rows[:m], np.int64), np.ones((m, 2), np.float32),
            np.array([True] * m), np.array(given))], [], repeat_seconds=60.0)
    assert writer.write([group([1000.0, 1000.5, 1001.0], ["r", "r", "r"], [True] * 3)]) == [2]
    assert writer.write([group([1030.0, 1031.0], ["r", "s"], [True, False])]) == [1]
    assert writer.write([group([1031.5], ["s"], [False])]) == [1]  # drawn ids: not looked up
    assert writer.write([group([1070.5], ["r"], [True])]) == [1]  # 70 s after: a new showing
    with store.read() as txn:
        prefix = keys.impression_user_prefix(ring.kid, user_hash(ring.key, "x"))
        logged = [k.rsplit(b"\x1f", 1)[1] for k, _ in table.scan_prefix(txn, prefix)]
        web = np.frombuffer(table.get(txn, keys.impression_count_key("v1", "web")), np.float64)
        shown = sum(np.frombuffer(v, np.float64)[0]
                    for _, v in table.scan_prefix(txn, keys.IMPRESSION_BUCKET_PREFIX))
    assert logged == [b"r", b"r", b"s", b"s", b"r"]
    assert (web[C.IMPRESSIONS], web[C.COLD_START], shown) == (5, 5, 5)
    from server.impressions.log import ImpressionLog
    ImpressionLog(store, ring).drop_before(2000.0)
    with store.read() as txn:
        assert table.scan_prefix(txn, keys.REQUEST_PREFIX) == []
    store.close()


class _Bundle:
    def __init__(self, version: str, items: int):
        self.version, self.items = version, {"item_ids": np.array([f"i{n}" for n in range(items)])}


def test_a_group_of_mixed_answers_is_written_as_each_answer_alone_would_be(tmp_path):
    """Two bundles, two k, context, rows and scores of different lengths, an id holding the
    column separator: each stored record has `encode`'s bytes for its own answer."""
    from contract.items import item_code
    from server.impressions.group import group_of
    from server.impressions.records import encode
    a, b = _Bundle("va", 50), _Bundle("vb", 40)
    codes = {id(x): np.array([item_code(str(i)) for i in x.items["item_ids"]]) for x in (a, b)}
    rows = [np.array(r) for r in ([1, 2, 3], [4, 5, 6], [7, 8], [9, 10, 11], [3, 2, 1], [0, 1])]
    answers = [(100.0 + i, f"r{i}", user, "web" if i % 2 else "email", ctx, id(bundle), r,
                np.linspace(1, 0, n_scores, dtype=np.float32), i == 4, False)
               for i, (user, ctx, bundle, r, n_scores) in enumerate([
                   ("u1", (), a, rows[0], 3), ("u2", (), a, rows[1], 3), ("u1", (), a, rows[2], 2),
                   ("u3", ("page", "home"), a, rows[3], 3), ("u\x1f4", (), b, rows[4], 3),
                   ("u2", (), b, rows[5], 1)])]
    ring = Keyring.generate("user-id")
    group = group_of(answers, {id(a): a, id(b): b}, lambda x: codes[id(x)], ring.kid, ring.key)
    assert sorted((bt.version, *bt.codes.shape) for bt in group.batches) == [
        ("va", 1, 2), ("va", 2, 3), ("vb", 1, 3)]
    assert [bt.user_ids for bt in group.batches if bt.version == "vb"] == [["u\x1f4"]]  # a list
    assert group.size == 6 and len(group.singles) == 2  # the context, the short scores
    store = Store(tmp_path / "store", sync=False)
    assert ImpressionWriter(store).write([group]) == [6]
    with store.read() as txn:
        table = store.table("impressions")
        for ts, rid, user, channel, ctx, ref, r, scores, cold, _ in answers:
            prefix = keys.impression_user_prefix(ring.kid, user_hash(ring.key, user))
            bundle = a if ref == id(a) else b
            want = encode(ts, bundle.version, channel, zip(ctx[::2], ctx[1::2]), codes[ref][r],
                          scores, cold)
            assert table.get(txn, keys.impression_key(prefix, ts, rid)) == want
    store.close()


def test_answers_sharing_user_request_id_and_millisecond_each_keep_their_record(tmp_path):
    """A caller's x-request-id given to parallel calls: one user's answers under one id within
    one millisecond, in one flush and in the next, are each stored (a millisecond apart), as
    the counters count them."""
    store = Store(tmp_path / "store", sync=False)
    ring = Keyring.generate("user-id")
    writer = ImpressionWriter(store)

    def group(ts, first_code):
        codes = np.arange(first_code, first_code + 2 * len(ts), dtype=np.int64).reshape(-1, 2)
        return Group(ring.kid, ring.key, (), [Batch(
            "v1", np.array(ts), ["p"] * len(ts), ["x"] * len(ts), ["web"] * len(ts), codes,
            np.ones(codes.shape, np.float32), np.zeros(len(ts), bool))], [])
    assert writer.write([group([500.0001, 500.0002, 500.0003], 0)]) == [3]
    assert writer.write([group([500.0004], 6)]) == [1]
    with store.read() as txn:
        found = store.table("impressions").scan_prefix(
            txn, keys.impression_user_prefix(ring.kid, user_hash(ring.key, "x")))
    assert [keys.impression_ms(k) for k, _ in found] == [500000, 500001, 500002, 500003]
    assert sorted(decode(v).items[0] for _, v in found) == [0, 2, 4, 6]
    assert counted(SimpleNamespace(store=store)) == 4
    store.close()


def test_impressions_and_first_clicks_count_in_buckets_of_their_showing_time(tmp_path):
    """The canary's CTR test counts impressions by when they were shown, with their clicks
    whenever those join (`ModelStats.shown_between`); retention drops ended buckets."""
    from types import SimpleNamespace as NS

    from server.impressions import ImpressionJoin, ImpressionLog, ModelStats

    store = Store(tmp_path / "store", sync=False)
    ring = Keyring.generate("user-id")
    log = ImpressionLog(store, ring)
    users, rids = [f"u{i}" for i in range(5)], [f"r{i}" for i in range(5)]
    batch = Batch("v1", np.array([1000.0, 1005.0, 1012.0, 1025.0, 1031.0]), rids, users, ["web"] * 5,
                  np.arange(10, dtype=np.int64).reshape(5, 2), np.ones((5, 2), np.float32),
                  np.zeros(5, bool))
    assert ImpressionWriter(store).write([Group(ring.kid, ring.key, (), [batch], [])]) == [5]
    item = "i0"  # the event names the request and position 1

    def click(i: int, n: int = 0):
        return NS(type="click", item_id=item, user_id=users[i], request_id=rids[i], position=1,
                  value=0.0, timestamp=2000.0 + n, event_id=f"e{i}-{n}")
    # r0 clicked twice (one clicked impression), r2 and r4 once; the clicks come much later
    assert ImpressionJoin(log).join([click(0), click(0, 1), click(2), click(4)]) == []
    stats = ModelStats(store)
    # by hand: buckets 1000 (r0, r1: 2 shown, 1 clicked), 1010 (r2: 1, 1), 1020 (r3: 1, 0),
    # 1030 (r4: 1, 1)
    assert stats.shown_between("v1", 1000, 1020) == (3, 2)
    assert stats.shown_between("v1", 1001, 1040) == (3, 2)  # from the first whole bucket
    assert stats.shown_between("v1", 995, 1031) == (5, 3)
    assert stats.shown_between("v1", 0, 1000) == (0, 0) and stats.shown_between("v2", 0, 9e9) == (0, 0)
    assert stats.counts("v1") == (5, 3)
    log.drop_before(1025.0)  # buckets that ended by 1015 go, with the impressions before 1025
    assert stats.shown_between("v1", 0, 9e9) == (2, 1)
    store.close()


def test_the_export_hashes_users_under_the_keys_impressions_are_filed_under_only(tmp_path):
    """ExportImpressions names users by hashing every user id under `user-id` keys: under
    every key of the ring, each retired key added one HMAC per user (and a dict entry: ~4 s
    and ~100 MB for 200,000 users with two retired keys) though no impression was filed under
    it any more (retention). Only the keys some impression is filed under are used."""
    from server.impressions import ImpressionLog
    from server.impressions.export import ImpressionExport

    store = Store(tmp_path / "store", sync=False)
    old = Keyring.generate("user-id")
    ring = old.rotated().rotated()  # two retired keys; the old one's answers have expired
    log = ImpressionLog(store, ring)
    users = [f"u{i}" for i in range(4)]

    def show(key_ring, who):
        batch = Batch("v1", np.full(len(who), 1000.0), [f"r-{key_ring.kid}-{u}" for u in who],
                      who, ["web"] * len(who), np.arange(2 * len(who), dtype=np.int64)
                      .reshape(len(who), 2), np.ones((len(who), 2), np.float32),
                      np.zeros(len(who), bool))
        ImpressionWriter(store).write([Group(key_ring.kid, key_ring.key, (), [batch], [])])
    show(ring, users)
    export = ImpressionExport(log, SimpleNamespace(active=None), lambda: users)
    named, _ = export.names()
    assert named == {f"{ring.kid}:{user_hash(ring.key, u)}": u for u in users}
    assert sorted(r.user_id for chunk in export.rows() for r in chunk) == users
    show(old, ["u1"])  # an answer still filed under a retired key: it is hashed under too
    named, _ = export.names()
    assert len(named) == 8 and named[f"{old.kid}:{user_hash(old.key, 'u1')}"] == "u1"
    assert sorted(r.user_id for chunk in export.rows() for r in chunk) == sorted([*users, "u1"])
    store.close()


async def test_an_answer_buffered_when_the_user_is_erased_again_is_never_written(
        slow_flush, tailor_server, channel):
    """A repeated DeleteProfile that finds nothing in the store still moves the tombstone's
    time (while answering the first erasure's): an answer shown between the two erasures and
    still buffered when the second commits is never written."""
    log = tailor_server.impressions.log
    profiles = pb_grpc.ProfileServiceStub(channel)
    first = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="twice"))
    await recommend(channel, "twice")  # shown after the first erasure, buffered
    again = await profiles.DeleteProfile(pb.DeleteProfileRequest(user_id="twice"))
    assert again.erased_at == first.erased_at  # what the client is told
    await log.flushed()
    assert stored(log, "twice") == {}


def test_user_hashes_in_c_are_the_user_hash_of_each_user():
    """`user_hashes` (the join's check of a batch's users, `kernels.keyed`) files a user under
    the same key part as `user_hash` (hmac through `contract.erasure.digest`), whatever the
    key's length (one hashed first past 64 bytes) and the id's characters."""
    users = ["ann", "", "Zoë", "用户-42", "x" * 4096, "\udc80lone"]
    for key in (os.urandom(32), os.urandom(64), os.urandom(100), b""):
        assert user_hashes(key, users) == [user_hash(key, u, cached=False) for u in users]


async def test_answers_a_full_store_refuses_are_counted_dropped_in_one_line(settings, caplog):
    """A full store (its map ceiling here; a full disk alike) refuses impression groups: their
    answers were lost without being counted (`tailor_impressions_dropped` counted only a full
    buffer) and each failed flush logged a traceback. Every answer is now counted written or
    dropped."""
    import time

    from prometheus_client import REGISTRY

    from tests.conftest import serving
    settings.lmdb_map_size, settings.lmdb_max_map_size = 1 << 20, 4 << 20
    settings.impression_flush_seconds = 0.05
    total = lambda: sum(REGISTRY.get_sample_value(f"tailor_impressions_{kind}_total") or 0.0  # noqa: E731
                        for kind in ("written", "dropped"))
    failed = lambda: [r for r in caplog.records  # noqa: E731
                      if r.getMessage().startswith("writing impressions failed")]
    async with serving(settings) as (_, ch):
        profiles, now = pb_grpc.ProfileServiceStub(ch), time.time()
        for batch in range(2000):  # fill until the store refuses
            events = [pb.Event(event_id=f"f{batch}-{i}", user_id=f"full{i % 20}", type="view",
                               item_id=f"item{i}", timestamp=now - 100 + batch * 1e-2 + i * 1e-5,
                               attributes={"pad": "p" * 900}) for i in range(100)]
            try:
                await profiles.TrackEvents(pb.TrackEventsRequest(events=events))
            except grpc.aio.AioRpcError as err:
                assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                break
        before, answered = total(), 0
        while not failed() and answered < 3000:  # until a flush is refused
            await recommend(ch, f"u{answered % 50}")
            answered += 1
        assert failed(), f"{answered} answers and no impression write refused"
        for _ in range(100):  # what is still buffered or sent
            if total() >= before + answered:
                break
            await asyncio.sleep(0.05)
        assert total() == before + answered
    assert all(r.exc_info is None and "store is full" in r.getMessage() for r in failed()), \
        [(r.getMessage(), r.exc_info) for r in failed()]

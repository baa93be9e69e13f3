"""`store.sweep`: a walk of a whole table in read snapshots, deleting each chunk's picks in
short write transactions (retention), on a real LMDB store."""
import threading
import time

import pytest

from server.store import Store, sweep


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "lmdb", map_size=1 << 20, max_map_size=8 << 20, sync=False)
    yield s
    s.close()


def fill(store, n: int) -> list[bytes]:
    keys = [f"k{i:04d}".encode() for i in range(n)]
    store.write(lambda txn: store.table("events").put_many(txn, [(k, b"v") for k in keys]))
    return keys


def remaining(store) -> list[bytes]:
    with store.read() as txn:
        return list(store.table("events").keys(txn))


def even(txn, key: bytes):
    return key if int(key[1:]) % 2 == 0 else None


def drop_all(table):
    return lambda txn, doomed: sum(table.delete(txn, k) for k in doomed)


@pytest.mark.parametrize("chunk", [1, 7, 50, 1000])
def test_every_pick_goes_and_nothing_else_whatever_the_chunk(store, chunk):
    keys = fill(store, 50)
    table = store.table("events")
    assert sweep(store, table, even, drop_all(table), chunk=chunk) == 25
    assert remaining(store) == [k for k in keys if int(k[1:]) % 2]


def test_one_short_write_per_chunk_with_picks_and_none_during_the_reads(store):
    fill(store, 100)
    table, writes, reads_open = store.table("events"), [], []
    plain_write = store.write

    def counted_write(fn, erasure=False):
        writes.append(erasure)
        return plain_write(fn, erasure)

    def pick(txn, key):
        reads_open.append(len(writes))  # how many writes had happened when this key was read
        return key if key < b"k0030" else None  # the first three chunks of 10 only

    store.write = counted_write
    assert sweep(store, table, pick, drop_all(table), chunk=10) == 30
    assert writes == [True, True, True]  # retention may use the erasure reserve
    # key 10 was read after the first chunk's write, key 20 after the second's
    assert reads_open[9] == 0 and reads_open[10] == 1 and reads_open[20] == 2
    assert len(reads_open) == 100  # every key read once: the walk resumes after the last


def test_a_pick_deleted_meanwhile_counts_nothing_and_later_writes_stay(store):
    keys = fill(store, 40)
    table = store.table("events")

    def pick(txn, key):
        if key == keys[2]:  # another write deletes a record this chunk picked, before its drop
            store.write(lambda t: table.delete(t, keys[4]))
        return key if int(key[1:]) < 10 else None

    assert sweep(store, table, pick, drop_all(table), chunk=8) == 9
    store.write(lambda txn: table.put(txn, b"k0005", b"again"))  # a later record of a swept key
    assert remaining(store) == sorted([b"k0005", *keys[10:]])


def test_a_chunk_goes_in_writes_of_at_most_per_write_records_each_followed_by_a_rest(store):
    """Back to back, writes of a chunk's 10,000 picks held the writer lock 220-500 ms each and
    ChooseVariant waited behind them (p99 ~1 s for the whole sweep): a write deletes at most
    `per_write` records and the sweep then rests at least as long as it took."""
    fill(store, 100)
    table, log = store.table("events"), []
    plain_write = store.write

    def timed_write(fn, erasure=False):
        began = time.monotonic()
        done = plain_write(fn, erasure)
        log.append(("write", done, time.monotonic() - began))
        return done

    class Rests(threading.Event):  # the sweep rests on the store's stop event
        def wait(self, timeout=None):
            log.append(("rest", None, timeout))
            return super().wait(timeout)

    store.write, store.stopping = timed_write, Rests()
    assert sweep(store, table, even, drop_all(table), chunk=40, per_write=7) == 50
    writes = [n for kind, n, _ in log if kind == "write"]
    assert writes == [7, 7, 6, 7, 7, 6, 7, 3]  # 20, 20 and 10 picks a chunk
    assert [kind for kind, _, _ in log] == ["write", "rest"] * len(writes)
    for (_, _, took), (_, _, rested) in zip(log[::2], log[1::2]):
        assert rested >= took


def test_a_stop_ends_a_sweep_after_its_write_under_way_and_the_next_pass_takes_the_rest(store):
    """A stop waited for a sweep to run, and rest, to its end (~2x its time without rests,
    serving no writer then). Once `store.stopping` is set it writes nothing more, and returns
    at once from a rest; each write is whole, and the next pass deletes what is left."""
    keys = fill(store, 100)
    table = store.table("events")

    def drop_then_stop(txn, doomed):
        store.stopping.set()  # during the first write
        written.append(len(doomed))
        return drop_all(table)(txn, doomed)
    written = []
    began = time.monotonic()
    assert sweep(store, table, even, drop_then_stop, chunk=40, per_write=7, rest=1e6) == 7
    assert time.monotonic() - began < 10 and written == [7]  # the rest ended at the stop
    assert remaining(store) == [k for i, k in enumerate(keys) if i % 2 or i >= 14]
    store.stopping.clear()
    assert sweep(store, table, even, drop_all(table), chunk=40, per_write=7, rest=0.0) == 43
    assert remaining(store) == keys[1::2]

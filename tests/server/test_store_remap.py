"""The map grows (or is adopted from another process) while other threads of the process have
transactions open: py-lmdb's `set_mapsize` invalidates every transaction and cursor the process
has open, so the store remaps only once no other thread has one (real LMDB, real threads)."""
import subprocess
import sys
import threading
import time

from server.store import Store
from tests.conftest import ROOT

ROWS = 2000


def _filled(path) -> Store:
    store = Store(path, map_size=1 << 20, max_map_size=1 << 30, sync=False)
    store.put_many("events", [(b"k%06d" % i, b"v" * 100) for i in range(ROWS)])
    return store


def _read_across(store: Store, go_on: threading.Event, inside: threading.Event, out: list):
    """Read the events table in one snapshot, pausing inside it until `go_on`."""
    try:
        with store.read() as txn:
            rows = store.table("events").items(txn)
            first = [next(rows)]
            inside.set()
            go_on.wait(10)
            out.append(len(first) + sum(1 for _ in rows))
    except Exception as err:  # noqa: BLE001 - the test reports it
        out.append(err)


def _grow(store: Store, out: list) -> None:
    try:  # ~600 KiB more than a 1 MiB map holds
        store.put_many("events", [(b"w%06d" % i, b"x" * 2000) for i in range(800)])
        out.append("written")
    except Exception as err:  # noqa: BLE001
        out.append(err)


def test_a_read_open_in_another_thread_survives_the_map_growing(tmp_path):
    store = _filled(tmp_path / "store")
    try:
        go_on, inside, read, wrote = threading.Event(), threading.Event(), [], []
        reader = threading.Thread(target=_read_across, args=(store, go_on, inside, read))
        reader.start()
        assert inside.wait(10)
        writer = threading.Thread(target=_grow, args=(store, wrote))
        writer.start()
        time.sleep(0.5)  # the growth waits for the open read ... (not join(0.5): under
        # `make test-at` faketime, a timed wait that must run out never does)
        go_on.set()
        reader.join(10)
        writer.join(10)
        assert read == [ROWS]  # ... which reads its whole snapshot
        assert wrote == ["written"]
        assert store.env.info()["map_size"] > 1 << 20
        with store.read() as txn:
            assert store.table("events").count(txn) == ROWS + 800
    finally:
        store.close()


GROW_ELSEWHERE = """
import sys
from server.store import Store
store = Store(sys.argv[1], map_size=1 << 20, max_map_size=1 << 30, sync=False)
store.put_many("events", [(b"z%06d" % i, b"x" * 2000) for i in range(2000)])
store.close()
"""


def grow_elsewhere(path) -> None:
    """Another process writes ~4 MB into the store at `path` (a 1 MiB map): it grows the
    file, and every map but its own, past what they map."""
    subprocess.run([sys.executable, "-c", GROW_ELSEWHERE, str(path)], cwd=ROOT, check=True,
                   timeout=60)


def test_a_map_another_process_grew_is_adopted_without_breaking_open_reads(tmp_path):
    store = _filled(tmp_path / "store")
    try:
        go_on, inside, read = threading.Event(), threading.Event(), []
        reader = threading.Thread(target=_read_across, args=(store, go_on, inside, read))
        reader.start()
        assert inside.wait(10)
        grow_elsewhere(tmp_path / "store")
        seen = []  # a transaction begun now finds the map grown past this process's
        other = threading.Thread(target=lambda: seen.append(store.get("events", b"z001999")))
        other.start()
        time.sleep(0.5)  # it waits for the remap, which waits for the open read
        go_on.set()
        reader.join(10)
        other.join(10)
        assert read == [ROWS]
        assert seen == [b"x" * 2000]
    finally:
        store.close()


_FILL_THEN_ERASE = """
import os, sys
from server.errors import ResourceExhausted
from server.store import Store
store = Store(sys.argv[1], map_size=1 << 20, max_map_size=8 << 20, sync=False)
try:
    for i in range(10_000):
        store.put_many("events", [(b"fill%07d" % (i * 10 + j), os.urandom(1500)) for j in range(10)])
except ResourceExhausted:
    pass
store.write(lambda txn: store.table("meta").put(txn, b"erasure-1", os.urandom(300_000)),
            erasure=True)  # into the reserve, as DeleteProfile on a full store may
store.close()
"""


def test_an_erasure_reserve_another_process_grew_into_stays_for_erasures(tmp_path):
    """A process that adopted a map another process's erasure had grown into the reserve
    (`MapResizedError`, then LMDB's recorded size) wrote ordinary records into the reserve,
    until a later erasure found the store full (DeleteProfile RESOURCE_EXHAUSTED)."""
    import os

    import pytest

    from server.errors import ResourceExhausted
    other = Store(tmp_path / "store", map_size=1 << 20, max_map_size=8 << 20, sync=False)
    try:
        other.put("profiles", b"open", b"all along")  # a worker or writer child
        subprocess.run([sys.executable, "-c", _FILL_THEN_ERASE, str(tmp_path / "store")],
                       cwd=ROOT, check=True, timeout=120)
        with pytest.raises(ResourceExhausted):
            for i in range(100):  # ordinary writes: refused, the reserve is not theirs
                other.put_many("events", [(b"late%05d-%d" % (i, j), os.urandom(1500))
                                          for j in range(10)])
        other.write(lambda txn: other.table("meta").put(txn, b"erasure-2", os.urandom(300_000)),
                    erasure=True)
        assert len(other.get("meta", b"erasure-2")) == 300_000
    finally:
        other.close()


def test_two_threads_that_both_find_the_map_grown_do_not_wait_for_each_other():
    """Each holds the gate (its transaction's begin) and asks for a remap: the first waited for
    the second's hold, the second for the first's remap, 10 s with every transaction of the
    process held back; then both remapped at once. Now the second stops counting its hold, waits
    for the first's remap and runs none of its own."""
    import time

    from server.store.remap import MapGate
    gate, ran, both_in, answers = MapGate(), [], threading.Barrier(2), []

    def adopt(name):
        held = gate.enter()
        both_in.wait(5)
        answers.append(gate.remap(lambda: (ran.append(name), time.sleep(0.2), name)[2]))
        gate.leave(held)

    threads = [threading.Thread(target=adopt, args=(n,)) for n in ("a", "b")]
    began = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert time.monotonic() - began < 5, "the two remaps waited for each other"
    assert len(ran) == 1 and sorted(answers, key=str) == [None, ran[0]]
    held = gate.enter()  # the gate is open again and counts from zero
    gate.leave(held)
    assert gate._open == 0 and not gate._remapping


def test_a_store_another_process_grows_while_it_opens_still_opens(tmp_path, monkeypatch):
    """`lmdb.open` sizes the map at the pages in use then; another process that grew the store
    past that before the open's first transaction (the tables' `open_db`) left it raising
    `MapResizedError`, and a restarted worker or an admin command did not start."""
    path = tmp_path / "store"
    Store(path, map_size=1 << 20, sync=False).close()
    clear = Store.clear_stale_readers

    def grown_meanwhile(store):  # between lmdb.open and the tables' open
        grow_elsewhere(path)
        return clear(store)

    monkeypatch.setattr(Store, "clear_stale_readers", grown_meanwhile)
    store = Store(path, map_size=1 << 20, sync=False)
    try:
        assert store.env.info()["map_size"] > 1 << 20
        assert store.get("events", b"z001999") == b"x" * 2000
    finally:
        store.close()

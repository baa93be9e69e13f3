"""How workers read the tombstone list: once, then only what was added since (real LMDB)."""
from server.profiles.tombstones import Tombstones
from server.security.secrets import Keyring
from server.store import Store, keys


class _Counted:
    """The real meta table, counting the tombstone records it hands out."""

    def __init__(self, table):
        self.table, self.records = table, 0

    def __getattr__(self, name):
        return getattr(self.table, name)

    def _count(self, pairs):
        self.records += sum(k.startswith(keys.TOMBSTONE_PREFIX) for k, _ in pairs)
        return pairs

    def get(self, txn, key):
        self.records += key.startswith(keys.TOMBSTONE_PREFIX)
        return self.table.get(txn, key)

    def scan_prefix(self, txn, prefix):
        return self._count(self.table.scan_prefix(txn, prefix))

    def items(self, txn, start=b""):
        for key, value in self.table.items(txn, start):
            self.records += key.startswith(keys.TOMBSTONE_PREFIX)
            yield key, value


def _erase(store, tombs, *users):
    store.write(lambda txn: [tombs.erase_user(txn, u) for u in users])


def test_a_worker_reads_only_the_tombstones_added_since_it_last_looked(tmp_path):
    """Another worker's erasure costs this worker the new tombstone, not the list (200k
    tombstones: 1.8 s of CPU per erasure per worker); what it then knows is the list's."""
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    times = iter(float(t) for t in range(100, 10_000))
    writer = Tombstones(store, ring, clock=lambda: next(times))
    _erase(store, writer, *(f"u{i}" for i in range(500)))
    reader = Tombstones(store, ring)
    told = []
    reader.watch(lambda erased: told.append(erased([f"u{i}" for i in range(500)] + ["v", "w"])))
    reader._meta = meta = _Counted(reader._meta)
    assert reader.erased_at(["u7", "v"]) == [107.0, None]
    assert meta.records == 500  # the first read: the list
    reader.tell_watchers()
    meta.records = 0
    _erase(store, writer, "v")  # at 600
    _erase(store, writer, "u7", "w")  # u7 again, at 601; w at 602
    assert reader.erased_at(["u7", "v", "w", "u8"]) == [601.0, 600.0, 602.0, 108.0]
    assert meta.records <= 3 * 2  # the three tombstones written since (twice at most)
    assert reader.tell_watchers() == 3 and sorted(told[-1]) == ["u7", "v", "w"]
    assert [t.at for t in reader.listing()][-3:] == [600.0, 601.0, 602.0]
    assert len(reader.listing()) == 502
    store.close()


def test_a_worker_rereads_the_list_when_the_tombstones_added_are_not_all_logged(tmp_path):
    """A restore carries tombstones in by bumping the count only (`backup.erasures.carry_erasures`),
    and a store written before the log has none: the list is read again, whole (with the key
    ids it names)."""
    from server.profiles.tombstones import digest
    store, ring = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    rotated = ring.rotated()
    _erase(store, Tombstones(store, ring, clock=lambda: 100.0), "a")
    reader = Tombstones(store, rotated)
    assert reader.erased_at(["a", "b", "c"]) == [100.0, None, None]
    carried = keys.tombstone_key(ring.kid, digest(ring.key, "b"))
    store.write(lambda txn: (reader._meta.put(txn, carried, b'{"at": 50.0}'),
                             reader._meta.put(txn, keys.TOMBSTONE_COUNT, b"2")))
    _erase(store, Tombstones(store, rotated, clock=lambda: 200.0), "c")  # under the new key
    assert reader.erased_at(["a", "b", "c"]) == [100.0, 50.0, 200.0]
    store.close()


def test_the_impression_writer_looks_its_users_tombstones_up_not_the_list(tmp_path):
    """The writer read every tombstone in its write transaction after each erasure (the lock
    every writer of the store waits on); it reads the latest erasure's note and, when its
    answers are from before it, its users' tombstones by key (under every key id in use)."""
    import numpy as np

    from server.impressions.group import Batch, Group
    from server.impressions.writer import ImpressionWriter
    store, erasure = Store(tmp_path / "s", sync=False), Keyring.generate("erasure")
    ring, rotated = Keyring.generate("user-id"), erasure.rotated()
    _erase(store, Tombstones(store, erasure, clock=lambda: 1000.0), *(f"u{i}" for i in range(300)))
    writer = ImpressionWriter(store)
    writer._meta = meta = _Counted(writer._meta)

    def write(ts, users):
        batch = Batch("v1", np.array(ts), [f"r{t}" for t in ts], users, ["web"] * len(ts),
                      np.zeros((len(ts), 2), np.int64), np.ones((len(ts), 2), np.float32),
                      np.zeros(len(ts), bool))
        return writer.write([Group(ring.kid, ring.key, rotated.keys, [batch], [])])[0]
    assert write([999.0, 1001.0, 999.5], ["u1", "u1", "x"]) == 2  # u1's before its erasure
    assert meta.records <= 2  # u1's and x's tombstones (none)
    _erase(store, Tombstones(store, rotated, clock=lambda: 2000.0), "x")  # the new key id
    meta.records = 0
    assert write([1999.0, 2001.0, 1500.0, 3000.0], ["x", "x", "u2", "y"]) == 3  # not x@1999
    assert meta.records <= 3 * 2  # three users, two key ids in use
    meta.records = 0
    assert write([2500.0, 2600.0], ["u3", "x"]) == 2  # after every erasure: no lookup
    assert meta.records == 0
    store.close()


async def test_a_server_reads_the_tombstone_list_while_starting_not_while_serving(settings):
    """A restarted server's first read of the list came after SERVING (the first erasure poll,
    or the first Recommend's `_mask_erased`, which read it inline): 0.7 s of CPU at 100,000
    tombstones, which that Recommend paid and every call of that time shared the GIL with.
    It is read while starting: serving then reads only the tombstones added since."""
    from server.app import TailorServer
    first = TailorServer(settings)
    await first.start()
    _erase(first.store, first.tombstones, *(f"u{i}" for i in range(300)))
    await first.stop(grace=0.5)
    server = TailorServer(settings)
    await server.start()
    try:
        server.tombstones._meta = meta = _Counted(server.tombstones._meta)
        assert [at is None for at in server.tombstones.erased_at(["u7", "v"])] == [False, True]
        assert meta.records == 0  # (before: 300, the list)
    finally:
        await server.stop(grace=0.5)

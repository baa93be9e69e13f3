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
    """A restore carries tombstones in by bumping the count only (`backup._carry_erasures`),
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


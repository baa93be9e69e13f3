"""Decoded profile meta records kept between reads (`server.store.opened.OpenedRecords`, the
contact policy's `ProfileRepository.states_and_meta`): a changed record is read again, a user
whose data key another process shredded is not served, and the bounds hold."""
import os
import subprocess
import sys

import pytest

from server.profiles import ProfileSchema
from server.profiles.repository import ProfileRepository
from server.store import Store, keys
from server.store.crypto import StoreCrypto
from server.store.opened import OpenedRecords
from tests.conftest import throwaway_crypto


@pytest.fixture
def crypto() -> StoreCrypto:
    return throwaway_crypto()


@pytest.fixture
def store(tmp_path, crypto):
    s = Store(tmp_path / "store", sync=False, crypto=crypto)
    yield s
    s.close()


def _repo(store, records: int = 100, max_bytes: int = 1 << 20) -> ProfileRepository:
    return ProfileRepository(store, ProfileSchema().layout(), meta_cache=(records, max_bytes))


def _set(repo, user: str, **attributes) -> None:
    repo.update_meta(user, lambda meta: meta["attributes"].update(attributes))


def _meta(repo, user: str):
    return repo.states_and_meta([user], False, with_stored=True)[0][1]


_SHRED = """
import sys
from server.store import Store
from server.store.crypto import StoreCrypto
kid, master, store_id = sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
store = Store(sys.argv[1], sync=False, crypto=StoreCrypto(((kid, master),), store_id))
store.write(lambda txn: store.shred(txn, sys.argv[5]))
store.close()
"""


def _shred_elsewhere(store, crypto, user: str) -> None:
    """Destroy `user`'s data key from another process (another worker), records left in place."""
    (kid, master), = crypto.master
    subprocess.run([sys.executable, "-c", _SHRED, str(store.path), kid, master.hex(),
                    crypto.store_id_key.hex(), user], check=True, cwd=os.getcwd())


def test_a_kept_record_is_not_served_once_another_process_shreds_its_users_key(store, crypto):
    """ann's record is kept here; another process destroys her data key (the shred count
    moves), leaving her sealed record's bytes as they were: the next read finds the same
    bytes, and reads her as absent, as a read without kept records does (her decoded record
    is dropped, with every other: bob's is read again, and still opens)."""
    repo, bare = _repo(store), _repo(store, records=0)
    _set(repo, "ann", email="ann@example.com")
    _set(repo, "bob", email="bob@example.com")
    assert _meta(repo, "ann")["attributes"]["email"] == "ann@example.com"
    assert _meta(repo, "bob") is not None and len(repo._metas) == 2
    _shred_elsewhere(store, crypto, "ann")
    with store.read() as txn:
        assert store.table("profiles").stored(txn, [keys.profile_meta_key("ann")])[0] is not None
    assert _meta(bare, "ann") is None
    assert _meta(repo, "ann") is None
    assert len(repo._metas) == 0
    assert _meta(repo, "bob")["attributes"]["email"] == "bob@example.com"


def test_a_changed_record_is_read_again_and_the_unchanged_one_taken_as_kept(store):
    """A write stores other bytes (a fresh nonce), so the next read opens the new record; a
    read of bytes already opened takes the very object kept (nothing opened or parsed)."""
    repo = _repo(store)
    _set(repo, "ann", email="old@example.com")
    first = _meta(repo, "ann")
    assert _meta(repo, "ann") is first
    _set(repo, "ann", email="new@example.com")
    assert _meta(repo, "ann")["attributes"]["email"] == "new@example.com"
    assert first["attributes"]["email"] == "old@example.com"


def test_a_snapshot_older_than_the_kept_records_shred_count_reads_without_them(store):
    """A transaction opened before an erasure committed (another user's: the shred count
    moved) neither takes nor fills the records kept for the newer count."""
    repo = _repo(store)
    _set(repo, "ann", email="ann@example.com")
    _set(repo, "dee", email="dee@example.com")
    with store.read() as old:
        repo.delete_user("dee")
        assert _meta(repo, "ann") is not None and len(repo._metas) == 1  # the newer count's
        kept = _meta(repo, "ann")
        got = repo.states_and_meta(["ann"], False, old)[0][1]
        assert got == kept and got is not kept and len(repo._metas) == 1


def test_the_records_kept_stay_within_their_count_and_bytes(store):
    """Past either bound the oldest kept go; a record larger than the byte bound is not kept."""
    users = ["big", *(f"u{i}" for i in range(6))]
    _set(_repo(store), "big", note="x" * 2000)
    for user in users[1:]:
        _set(_repo(store), user, email=f"{user}@example.com")
    with store.read() as txn:
        meta_keys = [keys.profile_meta_key(u) for u in users]
        stored = store.table("profiles").stored(txn, meta_keys)
    last_3 = sum(len(v) + len(k) for k, v in zip(meta_keys[-3:], stored[-3:]))
    for records, max_bytes, kept in ((4, 1 << 20, 4), (100, last_3, 3), (100, 1 << 20, 7)):
        opened = OpenedRecords(store.table("profiles"), lambda v: v, records, max_bytes)
        with store.read() as txn:
            assert opened.opened(txn, meta_keys, stored)[0].startswith(b"{")
        assert len(opened) == kept
        assert set(opened._held[1]) == set(stored[len(users) - kept:])

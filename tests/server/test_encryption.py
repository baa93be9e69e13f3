"""Encryption at rest: per-user AES-GCM data keys, sealing bound to the key, crypto-shredding,
an old plaintext data dir encrypted at open, and `rotate-key` while a server runs."""
import json
import os
import signal
from collections import OrderedDict

import pytest
from cryptography.exceptions import InvalidTag

from protos.tailor.v1 import profile_pb2 as pb
from protos.tailor.v1 import profile_pb2_grpc as pb_grpc
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles.repository import ProfileRepository
from server.security.secrets import Secrets
from server.store import Store, keys, tokens
from server.store.crypto import StoreCrypto
from server.store.datakeys import DataKeys
from server.store.errors import StoreEncrypted, StoreKeyMismatch
from server.store.rotation import kids_in_use, rotate_data_keys
from tests.conftest import run_module, store_mentions, throwaway_crypto
from tests.server.test_store_layouts import v1_dir  # noqa: F401 (fixture)


@pytest.fixture
def crypto() -> StoreCrypto:
    return throwaway_crypto()


@pytest.fixture
def store(tmp_path, crypto):
    s = Store(tmp_path / "store", sync=False, crypto=crypto)
    yield s
    s.close()


def _event(i: int, user: str = "ann") -> TrackedEvent:
    return TrackedEvent(f"evt-{i}-q", user, "view", "web", "", f"i{i}", 0.0, 1764000000.0 + i,
                        {"note": "secret-note"})


def test_records_are_ciphertext_on_disk_and_plain_through_the_store(store):
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1), _event(2)], [None, None])
    repo.update_meta("ann", lambda m: m["attributes"].update(email="ann@example.org"))
    for needle in (b"ann", b"secret-note", b"ann@example.org", b"evt-1-q"):
        assert store_mentions(store, needle) == []
    state, meta, events = repo.read("ann")
    assert meta["attributes"] == {"email": "ann@example.org"} and len(events) == 2
    assert pb.Event.FromString(events[0]).attributes["note"] == "secret-note"
    assert repo.ingest([_event(1)], [None]).duplicates == [0]  # dedupe by the event's token


def test_a_sealed_value_opens_only_under_its_own_key(store):
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1), _event(2, user="bo")], [None, None])
    raw, sealed = store.raw_table("profiles"), store.table("profiles")
    ann, bo = keys.feature_key("ann"), keys.feature_key("bo")
    with store.read() as txn:
        moved = raw.get(txn, ann)
        with pytest.raises(InvalidTag):  # bound to the key (and to bo's data key)
            sealed.open(txn, bo, moved)
        with pytest.raises(InvalidTag):  # bound to the table
            store.table("events").open(txn, ann, moved)
        assert sealed.open(txn, ann, moved) is not None


def test_erasure_shreds_the_data_key(store):
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1)], [None])
    key = keys.feature_key("ann")
    kept = store.get("profiles", key)
    old = store.raw_table("profiles")
    with store.read() as txn:
        copy = old.get(txn, key)  # what a freed page keeps
    assert kept is not None
    repo.delete_user("ann")
    assert store.scan("datakeys") == [] and repo.read("ann") == (None, None, [])
    with store.read() as txn:
        assert store.table("profiles").open(txn, key, copy) is None  # no key to open it with
    repo.ingest([_event(3)], [None])  # a returning user gets a new key and starts fresh
    assert len(repo.read("ann")[2]) == 1


@pytest.mark.parametrize("chunk", [10_000, 1])  # records a re-key transaction holds (and
def test_an_old_plaintext_data_dir_is_encrypted_at_open(  # a seal lists)
        v1_dir, crypto, chunk, monkeypatch):  # noqa: F811
    from server.store import rekey
    monkeypatch.setattr(rekey, "REKEY_CHUNK", chunk)
    assert b"ann" in (v1_dir / "data.mdb").read_bytes() and b"gold" in (v1_dir / "data.mdb").read_bytes()
    store = Store(v1_dir, sync=False, crypto=crypto)
    assert store.migrated == {"profile_state": 1, "profile_meta": 1, "decision": 1,
                              "contact_history": 1, "dead_letter": 1, "send_job": 1,
                              "worker_report": 1, "phone_user": 1, "email_user": 1,
                              "phone_index": 1, "email_index": 1, "tombstone": 1}  # stamped
    # ("ann" is in the campaign's "channel" too: only the users' records count)
    assert [t for t, _ in store_mentions(store, b"ann") if t != "campaigns"] == []
    assert store_mentions(store, b"gold") == []
    _, meta, events = ProfileRepository(store, ProfileSchema().layout()).read("ann")
    assert meta["attributes"] == {"tier": "gold"} and len(events) == 2
    store.close()
    Store(v1_dir, sync=False, crypto=crypto).close()  # stamped: nothing again
    with pytest.raises(StoreEncrypted):
        Store(v1_dir, sync=False, crypto=StoreCrypto(crypto.master, crypto.store_id_key, False))
    with pytest.raises(StoreKeyMismatch):
        Store(v1_dir, sync=False, crypto=StoreCrypto(crypto.master, os.urandom(32)))


def test_a_read_of_the_newest_events_opens_no_older_one(store):
    """`read(user, n)` walks back from the newest event: an older record, even one that would
    not open, is never read (GetProfile with max_events, the UpsertAttributes reply)."""
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(i) for i in range(5)], [None] * 5)
    repo.ingest([_event(9, "bob")], [None])
    oldest = next(k for k, _ in store.scan("events", keys.user_prefix("ann")))
    store.write(lambda txn: store.raw_table("events").put(txn, oldest, b"not a sealed record"))
    newest = [pb.Event.FromString(e).item_id for e in repo.read("ann", 2)[2]]
    assert newest == ["i4", "i3"]


def test_a_walk_back_over_a_sealed_table_gives_opened_values(store):
    """`walk_back` (the dead letters' listing walks the plain `sends` table) opens each value
    of a sealed table as `scan_prefix_last` does."""
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(i) for i in range(3)], [None] * 3)
    events, prefix = store.table("events"), keys.user_prefix("ann")
    with store.read() as txn:
        walked = list(events.walk_back(txn, prefix))
        assert walked == events.scan_prefix_last(txn, prefix, 5)
        assert [pb.Event.FromString(v).item_id for _, v in walked] == ["i2", "i1", "i0"]


def test_send_records_of_a_plaintext_store_are_sealed_when_encryption_is_turned_on(tmp_path, crypto):
    """A send job left unfinished and a dead letter, written without encryption: opened with
    it, they are sealed under their users' keys, still readable, and erasable."""
    from server.messages.deadletters import DeadLetter, DeadLetters
    from server.messages.sends import SendRecords
    plain = Store(tmp_path / "store", sync=False)
    SendRecords(plain).create("job1", "camp", ["ann-user", "bob-user"], {}, {}, owner=1)
    letter_id = DeadLetters(plain).add(DeadLetter("email", "camp", "d1", "ann-user", "a@x", "body"))
    plain.close()
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    try:
        assert store_mentions(store, b"ann-user") == []
        sends, letters = SendRecords(store), DeadLetters(store)
        assert [r.user for r in sends.recipients("job1")] == ["ann-user", "bob-user"]
        assert letters.get(letter_id).user == "ann-user"
        store.write(lambda txn: (sends.erase_user(txn, "ann-user"), letters.erase_user(txn, "ann-user")))
        assert [r.user for r in sends.recipients("job1")] == ["bob-user"]
        assert letters.get(letter_id) is None
    finally:
        store.close()


async def test_rotate_key_rewraps_every_data_key_while_the_server_runs(tailor_server, channel,
                                                                        settings):
    stub = pb_grpc.ProfileServiceStub(channel)
    users = [f"rot-{i}" for i in range(7)]
    await stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id=users[0], attributes={"a": "1"}))
    for user in users[1:]:
        await stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id=user, attributes={"a": "1"}))
    first = Secrets.load(settings.secrets_dir, generate=False, environ={})["encryption"].kid
    assert kids_in_use(tailor_server.store) == {first: 7}
    # Interrupted after one chunk of two: a new key in front, two data keys under it.
    secrets = Secrets.load(settings.secrets_dir, generate=False, environ={})
    part = rotate_data_keys(tailor_server.store, secrets, chunk=2, max_chunks=1)
    assert part["rewrapped"] == 2 and part["remaining"] == 5 and part["kid"] != first
    # The server wraps a new user's key under the new master key (reading the keyring again).
    await stub.UpsertAttributes(pb.UpsertAttributesRequest(user_id="rot-new", attributes={"a": "2"}))
    args = ["server", "rotate-key", "--data-dir", str(settings.data_dir), "--secrets-dir",
            str(settings.secrets_dir), "--chunk", "3"]
    done = json.loads(run_module(*args).stdout)
    assert (done["resumed"], done["kid"], done["rewrapped"], done["remaining"]) == \
        (True, part["kid"], 5, 0)
    assert kids_in_use(tailor_server.store) == {part["kid"]: 8}
    for user in [*users, "rot-new"]:  # every profile still opens, served by the running server
        assert (await stub.GetProfile(pb.GetProfileRequest(user_id=user))).attributes["a"]
    again = json.loads(run_module(*args).stdout)  # finished: the next run rotates anew
    assert not again["resumed"] and again["kid"] != part["kid"] and again["rewrapped"] == 8


_ELSEWHERE = """
import sys
from protos.tailor.v1 import profile_pb2 as pb
from server.profiles import ProfileSchema
from server.profiles.repository import ProfileRepository
from server.store import Store
from server.store.crypto import StoreCrypto
kid, master, store_id = sys.argv[2], bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])
store = Store(sys.argv[1], sync=False, crypto=StoreCrypto(((kid, master),), store_id))
repo = ProfileRepository(store, ProfileSchema().layout())
if sys.argv[5] == "erase":
    repo.delete_user("ann")
else:
    state, _, events = repo.read("ann")
    print(state is not None, *[pb.Event.FromString(e).event_id for e in events])
store.close()
"""


def _elsewhere(store, crypto, what: str) -> str:
    """Run `what` (erase ann, or read her) in another process on the same store."""
    import subprocess
    import sys
    (kid, master), = crypto.master
    return subprocess.run([sys.executable, "-c", _ELSEWHERE, str(store.path), kid, master.hex(),
                           crypto.store_id_key.hex(), what], check=True, cwd=os.getcwd(),
                          capture_output=True, text=True).stdout.strip()


def test_a_key_kept_across_transactions_is_dropped_when_another_process_shreds(store, crypto):
    """This process keeps ann's cipher by token; another process erases ann (her key shredded,
    the shred count moved); ann's next events here get a new data key, which every process
    finds, not the kept one, whose pad is gone."""
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1)], [None])
    repo.ingest([_event(2)], [None])  # the key now comes from the by-token cache
    _elsewhere(store, crypto, "erase")
    assert repo.read("ann")[0] is None
    repo.ingest([_event(3)], [None])
    assert _elsewhere(store, crypto, "read") == "True evt-3-q"  # a process that kept nothing


def _pad(store, user: str) -> bytes:
    """The pad of `user`'s data key in the keyslots file (its slot read from the entry)."""
    slot = int.from_bytes(store.get("datakeys", tokens.user_token(user))[:8], "big")
    with open(store.path / "keyslots", "rb") as fh:
        fh.seek(slot * 32)
        return fh.read(32)


def test_a_crash_between_the_erasures_commit_and_the_zeroed_pad_leaves_no_pad(tmp_path, crypto,
                                                                                monkeypatch):
    """The pad is zeroed after the erasure commits (before, a failed commit left the user's
    records with no key); a crash in between leaves the pad set, and the next open (or erasure) zeroes it
    (the erasure's transaction named its slot)."""
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1), _event(2, "bo")], [None, None])
    pad, bo = _pad(store, "ann"), _pad(store, "bo")
    slot = int.from_bytes(store.get("datakeys", tokens.user_token("ann"))[:8], "big")
    monkeypatch.setattr(store.datakeys, "_zero", lambda slots: None)  # the process dies here
    repo.delete_user("ann")
    monkeypatch.undo()
    with open(store.path / "keyslots", "rb") as fh:
        assert fh.read()[slot * 32:slot * 32 + 32] == pad != bytes(32)
    store.close()
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    with open(store.path / "keyslots", "rb") as fh:
        assert fh.read()[slot * 32:slot * 32 + 32] == bytes(32)
    assert _pad(store, "bo") == bo and len(ProfileRepository(
        store, ProfileSchema().layout()).read("bo")[2]) == 1
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(3, "cy")], [None])
    cy = int.from_bytes(store.get("datakeys", tokens.user_token("cy"))[:8], "big")
    monkeypatch.setattr(store.datakeys, "_zero", lambda slots: None)  # again, for cy
    repo.delete_user("cy")
    monkeypatch.undo()
    repo.delete_user("bo")  # the next erasure zeroes cy's pad too, before it commits
    with open(store.path / "keyslots", "rb") as fh:
        assert fh.read()[cy * 32:cy * 32 + 32] == bytes(32)
    store.close()


def test_a_retried_erasure_zeroes_the_pad_its_failed_zeroing_left(tmp_path, crypto, monkeypatch):
    """The erasure commits, then zeroing its pad fails (an I/O error): DeleteProfile fails and
    the caller retries. The retry found no data key and returned at once, leaving the pad set
    until another user's erasure or a restart; it zeroes the previous erasure's pads first."""
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([_event(1)], [None])
    pad = _pad(store, "ann")
    slot = int.from_bytes(store.get("datakeys", tokens.user_token("ann"))[:8], "big")

    def failing(slots):
        raise OSError("EIO")
    monkeypatch.setattr(store.datakeys, "_zero", failing)
    with pytest.raises(OSError):
        repo.delete_user("ann")
    monkeypatch.undo()
    with open(store.path / "keyslots", "rb") as fh:
        assert fh.read()[slot * 32:slot * 32 + 32] == pad != bytes(32)
    repo.delete_user("ann")  # the retry
    with open(store.path / "keyslots", "rb") as fh:
        assert fh.read()[slot * 32:slot * 32 + 32] == bytes(32)
    store.close()


class _CountingEntries:
    """The real `datakeys` table, counting the entries looked up."""

    def __init__(self, table):
        self.table, self.looked_up = table, []

    def get(self, txn, key):
        self.looked_up.append(key)
        return self.table.get(txn, key)

    def get_many(self, txn, keys):
        self.looked_up += keys
        return self.table.get_many(txn, keys)

    def __getattr__(self, name):
        return getattr(self.table, name)


def test_new_users_keys_are_kept_by_token_then_unwrapped_again_after_a_shred(store):
    """Keys made in a batch serve the next batches by token (no entry looked up); a shred
    elsewhere in the store drops them, and each user's entry is then looked up and unwrapped
    once (new keys never went to the LRU) and their records still open."""
    repo = ProfileRepository(store, ProfileSchema().layout())
    entries = store.datakeys.table = _CountingEntries(store.datakeys.table)
    users = ["ann", "bo", "cy"]
    repo.ingest([_event(i, u) for i, u in enumerate(users)], [None] * 3)
    assert len(store.datakeys._cache) == 0
    entries.looked_up.clear()
    repo.ingest([_event(10 + i, u) for i, u in enumerate(users)], [None] * 3)
    assert entries.looked_up == []
    repo.ingest([_event(20, "dee")], [None])
    repo.delete_user("dee", ())
    entries.looked_up.clear()
    assert [len(repo.read(u)[2]) for u in users] == [2, 2, 2]
    assert sorted(set(entries.looked_up)) == sorted(tokens.user_token(u) for u in users)
    assert len(store.datakeys._cache) == 3


def test_one_users_reads_take_the_key_kept_by_token(store):
    """A one-user read (`DataKeys.cipher`, as GetProfile's) finds a key kept by token without
    looking up the user's entry, as batches do; after a shred elsewhere in the store it looks
    the entry up again (once) and the records still open."""
    repo = ProfileRepository(store, ProfileSchema().layout())
    entries = store.datakeys.table = _CountingEntries(store.datakeys.table)
    repo.ingest([_event(1, "ann")], [None])
    entries.looked_up.clear()
    assert len(repo.read("ann")[2]) == 1
    assert entries.looked_up == []
    repo.ingest([_event(2, "dee")], [None])
    repo.delete_user("dee", ())
    entries.looked_up.clear()
    assert len(repo.read("ann")[2]) == 1
    assert len(repo.read("ann")[2]) == 1
    assert entries.looked_up == [tokens.user_token("ann")]


class _SnapshotMeta:
    """A `meta` table whose shred count is the transaction's own (a dict stands for a txn)."""

    def get(self, txn, key):
        return str(txn["shreds"]).encode()


class _RenewedRightAfterRead(DataKeys):
    """`_kept` renewed for the next shred count, as another thread would, right after its
    first read once `armed`."""

    armed = False

    @property
    def _kept(self):
        pair = self.__dict__["_pair"]
        if self.armed:
            self.armed = False
            self.__dict__["_pair"] = (pair[0] + 1, OrderedDict())
        return pair

    @_kept.setter
    def _kept(self, pair):
        self.__dict__["_pair"] = pair


def test_a_snapshot_never_takes_the_keys_kept_for_a_newer_shred_count(tmp_path):
    """The (shred count, kept ciphers) pair is read once: a thread whose snapshot shows count 0
    keeps count 0's ciphers even when another thread renews the pair for count 1 right after
    that read (else it would put keys of its older snapshot, a shredded one's among them, where
    count 1's snapshots take them from)."""
    datakeys = _RenewedRightAfterRead(tmp_path, None, _SnapshotMeta(), [("k", bytes(32))])
    datakeys.memo({"shreds": 0})
    count_0 = datakeys._local.known
    datakeys.armed = True
    datakeys.memo({"shreds": 0})  # another transaction of the same snapshot
    assert datakeys._local.known is count_0
    assert datakeys.__dict__["_pair"][0] == 1  # the renewal did happen
    datakeys.memo({"shreds": 1})
    assert datakeys._local.known is datakeys.__dict__["_pair"][1] is not count_0
    datakeys.close()


def test_rotate_key_refuses_a_store_served_without_encryption_or_none_at_all(tmp_path):
    """A store served with TAILOR_ENCRYPT_AT_REST=false has no data keys to rotate: opening it
    with encryption would seal every record under the running server (which then fails every
    call). A mistyped --data-dir holds no store. Both refused before the keyring changes."""
    from server.store.backup import read_value
    from server.store.crypto import MASTER_RING, STORE_ID_RING
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    rings = Secrets.load(secrets, generate=False, names=(MASTER_RING, STORE_ID_RING))
    plain = Store(data / "store", sync=False, crypto=StoreCrypto.from_secrets(rings, encrypt=False))
    ProfileRepository(plain, ProfileSchema().layout()).ingest([_event(1)], [None])
    plain.close()
    keyring = (secrets / "encryption.keys").read_text()
    for data_dir, why in ((data, "not encrypted at rest"), (tmp_path / "typo", "no Tailor store")):
        refused = run_module("server", "rotate-key", "--data-dir", str(data_dir), "--secrets-dir",
                             str(secrets), check=False)
        assert refused.returncode == 1 and why in refused.stderr, refused.stderr
    assert read_value(data / "store", "meta", b"sealed") is None
    assert not (tmp_path / "typo" / "store").exists()
    assert (secrets / "encryption.keys").read_text() == keyring


def _full_store(data, secrets, max_map_size: int) -> int:
    """An encrypted store under `data` of 2,000 users, then filled to its ceiling
    (`max_map_size`); returns the most bytes its ordinary writes may use."""
    from server.store.errors import StoreFull
    crypto = StoreCrypto.from_secrets(Secrets.load(secrets, generate=False))
    store = Store(data / "store", map_size=1 << 20, max_map_size=max_map_size, sync=False,
                  crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    for first in range(0, 2000, 500):
        repo.ingest([_event(i, f"user-{i}") for i in range(first, first + 500)], [None] * 500)
    filled = 0
    for size in (64 << 10, 4 << 10, 256):  # to the last page, free ones too
        try:
            while True:
                store.put("catalog", b"fill-%06d" % filled, os.urandom(size))
                filled += 1
        except StoreFull:
            pass
    ceiling = store.ordinary_ceiling
    store.close()
    return ceiling


def _pages_used(store_dir) -> int:
    import lmdb
    env = lmdb.open(str(store_dir), readonly=True, lock=False, max_dbs=32)
    try:
        return (env.info()["last_pgno"] + 1) * env.stat()["psize"]
    finally:
        env.close()


def test_rotate_key_opens_the_store_with_the_servers_lmdb_settings(tmp_path):
    """rotate-key opened the store with `Store`'s own defaults (a 1 GiB map, a 1 TiB ceiling),
    not the LMDB settings of the servers' `--config` file and TAILOR_* variables: on a store at
    its ceiling (lmdb_max_map_size) it grew the store past it, into the room kept for erasure
    (main: exit 0, 7,725,056 bytes of pages over a ceiling of 7,340,032). Opened as the servers
    open it, the rotation stops there, one line; with the ceiling raised it finishes."""
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    ceiling = _full_store(data, secrets, 8 << 20)
    config = tmp_path / "tailor.toml"
    config.write_text(f'data_dir = "{data}"\nsecrets_dir = "{secrets}"\nlmdb_sync = false\n'
                      f"lmdb_map_size = {1 << 20}\nlmdb_max_map_size = {8 << 20}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAILOR_")}
    full = run_module("server", "rotate-key", "--config", str(config), check=False, env=env)
    assert full.returncode == 1 and full.stderr.startswith("rotate-key: store is full: "), \
        full.stderr[-2000:]
    assert _pages_used(data / "store") <= ceiling
    raised = {**env, "TAILOR_LMDB_MAX_MAP_SIZE": str(16 << 20)}
    done = json.loads(run_module("server", "rotate-key", "--config", str(config),
                                 env=raised).stdout.splitlines()[-1])
    assert done["remaining"] == 0 and done["kids"] == {done["kid"]: 2000}


def test_rotate_key_rotates_and_fsyncs_whatever_encrypt_at_rest_and_lmdb_sync_say(
        tmp_path, monkeypatch, capsys):
    """rotate-key opened the store with the servers' `encrypt_at_rest` and `lmdb_sync`: off,
    a sealed store was refused ("open it with encryption on") instead of rotated; and with
    fsync off, the re-wraps reported done (`remaining: 0`, the old master key may go) were
    not on disk. The sealed stamp decides, and every re-wrap is fsynced (LMDB's own flags)."""
    from server.__main__ import main
    secrets, data = tmp_path / "secrets", tmp_path / "data"
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    store = Store(data / "store", sync=False,
                  crypto=StoreCrypto.from_secrets(Secrets.load(secrets, generate=False)))
    ProfileRepository(store, ProfileSchema().layout()).ingest([_event(1)], [None])
    store.close()
    for name in [k for k in os.environ if k.startswith("TAILOR_")]:
        monkeypatch.delenv(name)
    flags, real = [], Store.from_settings.__func__
    monkeypatch.setattr(Store, "from_settings", classmethod(
        lambda cls, s, *rest: flags.append((opened := real(cls, s, *rest)).env.flags()) or opened))
    hangup = signal.getsignal(signal.SIGHUP)  # main() ignores it, as a command does
    try:
        for setting in ("encrypt_at_rest", "lmdb_sync"):
            (config := tmp_path / f"{setting}.toml").write_text(f"{setting} = false\n")
            main(["rotate-key", "--config", str(config), "--data-dir", str(data),
                  "--secrets-dir", str(secrets)])
            done = json.loads(capsys.readouterr().out.splitlines()[-1])
            assert done["remaining"] == 0 and done["kids"] == {done["kid"]: 1}
            assert flags[-1]["sync"] and flags[-1]["metasync"], (setting, flags[-1])
    finally:
        signal.signal(signal.SIGHUP, hangup)


@pytest.mark.parametrize("damage", ["missing", "cut short"])
def test_a_store_without_its_pad_file_is_refused_not_served_as_erased(tmp_path, crypto, damage):
    """`data.mdb` copied or restored without `keyslots` (or with a shorter one) opened and
    served: every user answered NOT_FOUND, as if erased, and every write naming one of them
    failed INTERNAL (KeyError), while new users got pads in a new file. Refused at open."""
    from server.errors import FailedPrecondition
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    ProfileRepository(store, ProfileSchema().layout()).ingest(
        [_event(1), _event(2, "bo"), _event(3, "cy")], [None] * 3)
    store.close()
    pads = tmp_path / "store" / "keyslots"
    if damage == "missing":
        pads.unlink()
    else:
        pads.write_bytes(pads.read_bytes()[:64])  # two of the three pads
    with pytest.raises(FailedPrecondition, match="keyslots"):
        Store(tmp_path / "store", sync=False, crypto=crypto)
    assert not pads.exists() if damage == "missing" else pads.stat().st_size == 64


_KILLED_SEAL = """
import os, signal, sys
from server.store import Store, rekey
from server.store.crypto import StoreCrypto
rekey.REKEY_CHUNK = 2  # records per transaction
kill_at, seen = int(sys.argv[2]), []
chunk = rekey._seal_chunk
master, store_id = sys.argv[3].split(":"), bytes.fromhex(sys.argv[4])


def counted(store, txn):
    out = chunk(store, txn)
    seen.append(out)
    if len(seen) == kill_at:  # inside that chunk's transaction: it never commits
        os.kill(os.getpid(), signal.SIGKILL)
    return out


rekey._seal_chunk = counted
crypto = StoreCrypto(((master[0], bytes.fromhex(master[1])),), store_id)
Store(sys.argv[1], sync=False, crypto=crypto).close()
print(len(seen))
"""


def _opened(path, crypto) -> dict:
    """Every record of the store at `path` as the code reads it: sealed values opened (their
    bytes differ from run to run: new data keys, new nonces); the data keys left out."""
    from server.store.sealed import is_user_key
    from tests.server.test_store_layouts import _every_record
    raw = _every_record(path)
    store = Store(path, sync=False, crypto=crypto)
    try:
        with store.read() as txn:
            out = {}
            for name, records in raw.items():
                if name == "datakeys":
                    continue
                out[name] = {}
                for key, value in records.items():
                    if name in keys.USER_TABLES and is_user_key(key):
                        value = store.table(name).get(txn, key)
                    elif key.startswith((keys.PHONE_PREFIX, keys.EMAIL_PREFIX,
                                         keys.SEND_USER_PREFIX, keys.DEAD_LETTER_PREFIX)):
                        value = store.open_for_user(txn, key, value)
                    out[name][key] = bytes(value)
    finally:
        store.close()
    return out


def test_the_seal_runs_in_bounded_chunks_and_a_kill_midway_resumes(tmp_path, crypto,
                                                                   env_with_repo):
    """The seal that encrypts a store from before encryption at rest was one write
    transaction: a start killed inside it (a startup probe on a large store) rolled all of it
    back, and every start began again from zero. It now seals `REKEY_CHUNK` records a
    transaction; a process SIGKILLed inside any chunk leaves the chunks before it, the next
    open goes on after them, and every record reads back as after an uninterrupted seal (none
    sealed twice, none left plaintext). Opened without encryption meanwhile, the store is
    refused as an encrypted one."""
    import subprocess
    import sys

    from tests.server.test_store_layouts import _every_record, _fixture_store
    (kid, key), = crypto.master
    args = [f"{kid}:{key.hex()}", crypto.store_id_key.hex()]

    def run(path, kill_at):
        return subprocess.run([sys.executable, "-c", _KILLED_SEAL, str(path), str(kill_at), *args],
                              text=True, capture_output=True, env=env_with_repo, timeout=120)
    whole = _fixture_store(tmp_path / "whole")
    done = run(whole, 0)
    assert done.returncode == 0, done.stderr
    chunks = int(done.stdout)
    assert chunks >= 4  # the fixture's per-user records, 2 a transaction
    expected = _opened(whole, crypto)
    assert b"seal-progress" not in expected["meta"] and expected["meta"][b"sealed"] == b"1"
    for kill_at in range(1, chunks + 1):
        path = _fixture_store(tmp_path / f"killed-{kill_at}")
        killed = run(path, kill_at)
        assert killed.returncode == -9, killed.stderr
        if kill_at > 1:  # earlier chunks committed: a partly sealed store, and where it stopped
            assert b"seal-progress" in _every_record(path)["meta"]
            with pytest.raises(StoreEncrypted):
                Store(path, sync=False, crypto=StoreCrypto(crypto.master, crypto.store_id_key,
                                                           False))
        resumed = run(path, 0)
        assert resumed.returncode == 0, resumed.stderr  # the next start goes on where the
        assert int(resumed.stdout) == chunks - (kill_at - 1)  # last committed chunk ended
        assert _opened(path, crypto) == expected, kill_at
    assert [t for t, _ in store_mentions(Store(path, sync=False, crypto=crypto), b"ann")
            if t != "campaigns"] == []


def _every_part_plain(path, crypto) -> None:
    """A store at `path` without encryption at rest (its `store-id` key `crypto`'s) holding
    records of every part of the seal (`rekey._PARTS`) for four users, an unnamed address
    entry, and keys of the same tables that are in no part (the decision index, a send job)."""
    import json
    store = Store(path, sync=False, crypto=StoreCrypto(crypto.master, crypto.store_id_key, False))

    def fill(txn):
        for n, user in enumerate(("alice", "bob", "carol", "dave")):
            token, raw = tokens.user_token(user), store.raw_table
            raw("profiles").put(txn, token + keys.FEATURES_SUFFIX, b"state %d" % n)
            raw("events").put(txn, keys.SEP.join([token, b"0001764000000123", b"e%d" % n]), b"e")
            raw("decisions").put(txn, token + keys.SEP + b"d%d" % n, b"decision %d" % n)
            raw("decisions").put(txn, keys.decision_index_key(f"d{n}"), token + keys.SEP + b"d%d" % n)
            raw("contacts").put(txn, token + keys.CONTACTS_SUFFIX, b"contacts %d" % n)
            for channel in ("sms", "email"):
                raw("meta").put(txn, keys.address_entry_key(channel, f"{n:02d}", user), user.encode())
            raw("sends").put(txn, keys.send_user_key("job", n), json.dumps({"user": user}).encode())
            raw("sends").put(txn, keys.dead_letter_key(f"l{n}"), json.dumps({"user": user}).encode())
        store.raw_table("meta").put(txn, keys.address_key("sms", "ff"), keys.ADDRESS_UNNAMED)
        store.raw_table("sends").put(txn, keys.send_job_key("job"), b"{}")
    store.write(fill)
    store.close()


def _said_sealed(path, rows: dict[str, dict]) -> set:
    """(table, key) of the `rows` ({table: {key: value}}) that `rekey.seal_reached` says are
    sealed in the store at `path`, read from its stamps as a restore reads them."""
    from server.store import rekey
    from server.store.lmdb_store import open_env
    from server.store.table import Table
    env = open_env(path, readonly=True, lock=False, readahead=False)
    try:
        with env.begin() as txn:
            reached = rekey.seal_reached(Table("meta", env.open_db(b"meta", txn=txn)), txn)
            return {(name, key) for name, records in rows.items() for key in records
                    if reached(name, key)}
    finally:
        env.close()


def _sealed_until(path, crypto, monkeypatch, chunks: int) -> bool:
    """Open the store at `path` with encryption at rest, its seal stopped by an error inside
    the chunk after the first `chunks` (never committed); whether the seal finished first."""
    from server.store import rekey
    sealed, seal_chunk = [], rekey._seal_chunk

    def stopped(store, txn):
        if len(sealed) == chunks:
            raise KeyboardInterrupt("stopped midway")
        sealed.append(seal_chunk(store, txn))
        return sealed[-1]
    monkeypatch.setattr(rekey, "_seal_chunk", stopped)
    try:
        Store(path, sync=False, crypto=crypto).close()
        return True
    except KeyboardInterrupt:
        return False
    finally:
        monkeypatch.setattr(rekey, "_seal_chunk", seal_chunk)


@pytest.mark.parametrize("chunk", [1, 3])
def test_seal_reached_names_the_records_the_seal_left_sealed_wherever_it_stopped(
        tmp_path, crypto, monkeypatch, chunk):
    """A restore tells the sealed records of a copy whose seal was cut short (a backup of a
    store whose first start with encryption at rest was stopped midway) from the others by the
    seal's mark alone (`rekey.seal_reached`, `store.opener`). Checked against the real seal,
    stopped inside each of its chunks in turn (`chunk` records a transaction: no mark yet, a
    mark inside each part and on a part's last key, then `sealed`): the records it says are
    sealed are exactly those whose bytes the seal changed, in every part (user tables, address
    indexes, send recipients, dead letters); keys of no part (the decision index, a send job)
    are never said sealed, and an unnamed address entry, which the seal passes and leaves as
    is, never changes. (No mark it leaves is `[part, null]`: a chunk ends on a key or ends
    the seal.)"""
    import json
    import shutil

    from server.store import rekey
    from tests.server.test_store_layouts import _every_record
    _every_part_plain(tmp_path / "plain", crypto)
    plain = {name: rows for name, rows in _every_record(tmp_path / "plain").items()
             if name in (*keys.USER_TABLES, "meta", "sends")}
    unnamed, marks, done = ("meta", keys.address_key("sms", "ff")), [], False
    monkeypatch.setattr(rekey, "REKEY_CHUNK", chunk)
    try:
        while not done:
            path = tmp_path / f"cut-{len(marks)}"
            shutil.copytree(tmp_path / "plain", path)
            done = _sealed_until(path, crypto, monkeypatch, len(marks))
            left = _every_record(path)
            changed = {(name, key) for name, rows in plain.items()
                       for key, value in rows.items() if left[name][key] != value}
            mark = left["meta"].get(b"seal-progress")
            assert unnamed not in changed
            assert changed == _said_sealed(path, plain) - {unnamed}, mark
            marks.append(None if mark is None else json.loads(mark))
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)
    within = [(part, after) for part, after in filter(None, marks)]
    assert all(after is not None for _, after in within)  # a mark always names its last key
    within = [(part, bytes.fromhex(after)) for part, after in within]
    assert {part for part, _ in within} == set(range(len(rekey._PARTS)))  # stopped in each
    lasts = {max(k for name, k in changed if rekey._part_of(name, k) == part)
             for part in range(len(rekey._PARTS))}
    assert any(after in lasts for _, after in within)  # and on a part's last key

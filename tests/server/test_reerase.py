"""`store.reerase` on a real LMDB store copy: one user's records and index entries found by
their token and deleted, their pad zeroed, every other user's left as it was."""
import os

import pytest

from server.store import Store, keys
from server.store.datakeys import SHRED_COUNT_KEY, SLOT_BYTES, SLOTS_FILE, UNZEROED_KEY
from server.store.outbox import parsed, value
from server.store.reerase import COUNTS, found_by, reerase, tokens_found

ALICE, CAROL = b"a" * 32, b"c" * 32


def _user(token: bytes, slot: int, digest: str, letter: str) -> dict[str, list]:
    """(table, key, value) of one user's records at their documented layouts (`keys`)."""
    event = token + keys.SEP + b"%016d" % 1000 + keys.SEP + b"e" + token[:4]
    decision = token + keys.SEP + b"d" + token[:4]
    return {
        "profiles": [(token + keys.FEATURES_SUFFIX, b"state")],
        "events": [(event, b"event")],
        "dedupe": [(keys.dedupe_key_of_event(event), event)],
        "decisions": [(decision, b"sealed"), (keys.decision_index_key("d" + token[:4].decode()), decision),
                      (keys.due_key(2000.0, "d" + token[:4].decode()), decision)],
        "contacts": [(token + keys.CONTACTS_SUFFIX, b"contacts")],
        "meta": [(keys.address_token_user_key("email", token), digest.encode()),
                 (keys.address_token_entry_key("email", digest, token), token + b"sealed")],
        "sends": [(keys.dead_letter_key(letter), token + b"sealed letter")],
        "datakeys": [(token, slot.to_bytes(8, "big") + b"\x01k" + os.urandom(40))],
    }


def _store(path) -> tuple[dict, dict]:
    """A stopped store holding alice and carol (sharing an email address) and one outbox entry
    naming both users' events; (alice's records, carol's)."""
    alice, carol = _user(ALICE, 0, "ab" * 8, "0001.a"), _user(CAROL, 1, "ab" * 8, "0002.c")
    store = Store(path, sync=False)
    both = [alice["events"][0][0], carol["events"][0][0]]

    def fill(txn):
        for records in (alice, carol):
            for table, items in records.items():
                for k, v in items:
                    store.raw_table(table).put(txn, k, v)
        store.raw_table("outbox").put(txn, keys.outbox_key(1000, b"b1", b"t"), value(both))
        store.raw_table("outbox").put(txn, keys.outbox_key(1001, b"b2", b"t"), value(both[:1]))
    store.write(fill)
    store.close()
    (path / SLOTS_FILE).write_bytes(os.urandom(2 * SLOT_BYTES))
    return alice, carol


def _everything(path, tables=("profiles", "events", "dedupe", "decisions", "contacts", "meta",
                               "sends", "datakeys", "outbox")) -> dict[str, dict[bytes, bytes]]:
    store = Store(path, sync=False)
    try:
        with store.read() as txn:
            return {t: {bytes(k): bytes(v) for k, v in store.raw_table(t).items(txn)}
                    for t in tables}
    finally:
        store.close()


def test_one_users_records_go_and_the_others_stay(tmp_path):
    path = tmp_path / "store"
    alice, carol = _store(path)
    pads = (path / SLOTS_FILE).read_bytes()
    removed = reerase(path, [ALICE])
    left = _everything(path)
    for table, items in alice.items():
        assert not any(k in left[table] for k, _ in items), table
    for table, items in carol.items():
        assert all(left[table].get(k) == v for k, v in items), table
    outbox = [parsed(v)[1] for v in left["outbox"].values()]
    assert outbox == [[carol["events"][0][0]]]  # alice's only entry gone, the shared one trimmed
    assert not any(ALICE in k or ALICE in v for t in left.values() for k, v in t.items())
    records = sum(n for name, n in removed.items() if name not in COUNTS)
    assert records == sum(map(len, alice.values())) + 2  # + the two outbox entries
    after = (path / SLOTS_FILE).read_bytes()
    assert after[:SLOT_BYTES] == bytes(SLOT_BYTES) and after[SLOT_BYTES:] == pads[SLOT_BYTES:]
    assert left["meta"][UNZEROED_KEY] == b"0" and left["meta"][SHRED_COUNT_KEY] == b"1"


def test_tokens_are_found_by_the_hash_their_tombstones_keep(tmp_path):
    path = tmp_path / "store"
    _store(path)
    key, other = os.urandom(32), os.urandom(32)
    assert tokens_found(path, {"k1": {found_by(key, ALICE)}}, [("k1", key)]) == [ALICE]
    assert tokens_found(path, {"k1": {found_by(key, ALICE)}}, [("k1", other)]) == []
    assert tokens_found(path, {"k2": {found_by(key, ALICE)}}, [("k1", key)]) == []  # no such key


def test_a_copy_whose_keys_hold_raw_ids_links_no_tombstone(tmp_path):
    """A backup of a Tailor before key version 2 keys its records by raw ids (re-keyed at the
    first open): no token of it is a user's, so the carried tombstones are counted as not
    linked, for the operator, rather than as erased."""
    import json

    from server.backup.erasures import erase_carried
    path, key = tmp_path / "store", os.urandom(32)
    _store(path)
    hashed = json.dumps({"at": 1.0, "found_by": found_by(key, ALICE)}).encode()
    carried = [(keys.tombstone_key("k1", "d1"), hashed)]
    version = _stamp(path, None)
    assert erase_carried(tmp_path, carried, [("k1", key)])["erasures_not_linked"] == 1
    _stamp(path, version)
    linked = erase_carried(tmp_path, carried, [("k1", key)])
    assert (linked["erased_again"], linked["erasures_not_linked"]) == (1, 0)


def test_a_copy_whose_keys_hold_raw_ids_loses_what_is_found_without_a_token(tmp_path):
    """In a copy of a Tailor before key version 2 no token is a user's, and the restore looked
    for nothing: alice's plaintext send record and dead letter (found by her tombstone's hash of
    her id) and her impressions (keyed by the `user-id` ring's hash, found by `impressions_by`)
    stayed, though neither needs a token. They now go, her job counts her suppressed `erased`,
    her records keyed by raw id are counted not linked, as before; carol's stay, and so do those
    of `alicea`, whose id starts with hers (nothing is matched by a prefix of a raw id)."""
    import json

    from server.backup.erasures import erase_carried
    from server.impressions.writer import user_hash
    from server.messages.deadletters import DeadLetter
    from server.messages.sends import Recipient
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store.backup import read_prefix
    path = tmp_path / "store"
    _store(path)
    erasure, ids = Keyring.generate("erasure"), Keyring.generate("user-id")
    shown = {keys.impression_key(keys.impression_user_prefix(
        ids.kid, user_hash(ids.key, user, cached=False)), 1000.0, "r1"): user
        for user in ("alice", "carol", "alicea")}
    sends = {keys.send_job_key("big"): _job(), keys.send_user_key("big", 0): Recipient(0, "alice").encode(),
             keys.send_user_key("big", 1): Recipient(1, "carol").encode(),
             keys.send_user_key("big", 2): Recipient(2, "alicea").encode(),
             keys.dead_letter_key("0003.a"): DeadLetter("email", "spring", "d1", "alice",
                                                        "alice@example.com", "Hi Alice").encode(),
             keys.dead_letter_key("0004.a"): DeadLetter("email", "spring", "d2", "alicea",
                                                        "alicea@example.com", "Hi").encode()}
    raw = [user.encode() + keys.SEP + b"%016d" % 1000 + keys.SEP + b"e1" for user in ("alice", "alicea")]
    store = Store(path, sync=False)

    def fill(txn):
        for key, stored in [*((k, b"impression") for k in shown), *sends.items()]:
            store.raw_table("impressions" if key in shown else "sends").put(txn, key, stored)
        for key in raw:  # as a copy of key version 1 holds them: keyed by the raw id
            store.raw_table("events").put(txn, key, b"event")
        Tombstones(store, erasure, impressions=ids).erase_user(txn, "alice")
    store.write(fill)
    with store.read() as txn:
        carried = [(bytes(k), bytes(v)) for k, v in
                   store.raw_table("meta").scan_prefix(txn, keys.TOMBSTONE_PREFIX)]
    store.close()
    _stamp(path, None)
    reply = erase_carried(tmp_path, carried, erasure.keys)
    left = {table: dict(read_prefix(path, table, b"")) for table in ("impressions", "sends", "events")}
    assert set(left["impressions"]) == {k for k, user in shown.items() if user != "alice"}
    assert not any(b'"alice"' in stored or b"alice@" in stored for stored in left["sends"].values())
    assert not {keys.send_user_key("big", 0), keys.dead_letter_key("0003.a")} & set(left["sends"])
    assert {keys.send_user_key("big", 1), keys.send_user_key("big", 2),
            keys.dead_letter_key("0004.a")} <= set(left["sends"])
    assert set(raw) <= set(left["events"])  # not linked: left for the DeleteProfile replay
    assert json.loads(left["sends"][keys.send_job_key("big")])["suppressed"] == {"erased": 1}
    assert (reply["impressions_erased_again"], reply["sends_erased_again"]) == (1, 2)
    assert (reply["erased_again"], reply["erasures_not_linked"], reply["impressions_not_linked"]) \
        == (0, 1, 0)


def _stamp(path, version: bytes | None) -> bytes | None:
    """Set (None: delete) the copy's key version without opening it as a store; the old one."""
    from server.store.lmdb_store import open_env
    env = open_env(path, lock=False)
    try:
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:
            old = txn.get(b"key-version")
            txn.put(b"key-version", version) if version else txn.delete(b"key-version")
            return old
    finally:
        env.close()


def test_a_rewrite_that_cannot_fit_says_the_disk_is_full(small_disk):
    """The rewrite of the copy (a second data.mdb beside the first) on a disk without room for
    it died on `lmdb.Error: mdb_txn_commit: Input/output error` (what LMDB reports for ENOSPC
    at a commit on this tmpfs), which the restore did not take for a full disk; it is now an
    ENOSPC OSError, raised before the second file is begun (the restore then says the disk is
    full and deletes its staging copy, nothing replaced)."""
    from server.store.errors import out_of_space
    from server.store.lmdb_store import open_env
    path = small_disk / "store"
    env = open_env(path, map_size=64 << 20)
    users = [os.urandom(16).hex().encode() for _ in range(1500)]
    with env.begin(write=True, db=env.open_db(b"events")) as txn:
        for user in users:
            for e in range(3):
                txn.put(user + keys.SEP + b"%016d" % e + keys.SEP + b"%08d" % e, os.urandom(1000))
    env.close()
    with pytest.raises(Exception) as err:
        reerase(path, users[:5])
    assert out_of_space(err.value), err.value


def _job(due: float = 0.0) -> bytes:
    """A send job's record as `SendRecords.create` writes it (counts only)."""
    import json
    return json.dumps({"campaign": "spring", "total": 4, "sent": 1, "suppressed": {},
                       "failed": {}, "finished": 0.0, **({"due": due} if due else {})}).encode()


def test_send_records_and_dead_letters_go_with_their_user_and_their_jobs_are_settled(tmp_path):
    """Without encryption at rest a dead letter or a send recipient's record is JSON naming its
    user by id, which the restore never looked for: alice's letter, address and message and
    her records in unfinished jobs stayed after she was erased again (and her sealed records
    in jobs stayed too, starting with her token). They now go, found by her tombstone's
    hash of the id (plaintext) or by her token (sealed), and their jobs are settled as
    DeleteProfile settles them: her unsettled recipient counted suppressed `erased`, her
    deferred message's job deleted; carol's are as they were."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    from server.messages.deadletters import DeadLetter
    from server.messages.sends import READY, SENT, Recipient
    path, key = tmp_path / "store", os.urandom(32)
    _store(path)
    records = {
        keys.send_job_key("big"): _job(), keys.send_job_key("later"): _job(due=5000.0),
        keys.send_user_key("big", 0): Recipient(0, "alice").encode(),
        keys.send_user_key("big", 1): Recipient(1, "carol").encode(),
        keys.send_user_key("big", 2): ALICE + b"sealed recipient",
        keys.send_user_key("big", 3): Recipient(3, "alice", SENT).encode(),
        keys.send_user_key("later", 0): Recipient(0, "alice", READY).encode(),
        keys.dead_letter_key("0003.a"): DeadLetter("email", "spring", "d1", "alice",
                                                   "alice@example.com", "Hi Alice").encode(),
        keys.dead_letter_key("0004.c"): DeadLetter("email", "spring", "d2", "carol",
                                                   "carol@example.com", "Hi Carol").encode(),
    }
    store = Store(path, sync=False)
    store.write(lambda txn: [store.raw_table("sends").put(txn, k, v) for k, v in records.items()])
    store.close()
    tombstone = json.dumps({"at": 1.0, "found_by": found_by(key, ALICE)}).encode()
    carried = [(keys.tombstone_key("k1", digest(key, "alice")), tombstone)]
    reply = erase_carried(tmp_path, carried, [("k1", key)])
    sends = _everything(path)["sends"]
    assert sorted(sends) == sorted([keys.send_job_key("big"), keys.send_user_key("big", 1),
                                    keys.dead_letter_key("0002.c"), keys.dead_letter_key("0004.c")])
    assert json.loads(sends[keys.send_job_key("big")])["suppressed"] == {"erased": 1}
    assert sends[keys.send_user_key("big", 1)] == records[keys.send_user_key("big", 1)]
    assert (reply["sends_erased_again"], reply["send_jobs_erased_again"]) == (6, 1)
    assert reply["send_states_unread"] == 1  # the sealed one: no `encryption` key given


def test_impressions_go_with_their_user_found_by_what_the_tombstone_keeps(tmp_path):
    """Impressions are keyed by a hash of the user id under the `user-id` keyring, which the
    tombstone did not keep: a user erased again by a restore kept hers until impression
    retention dropped them. A tombstone now keeps a keyed hash (its `erasure` key) of that
    part of the keys under each key of the ring (alice's impressions under a rotated-out key
    too); the restore deletes the impressions they name. One written before (bob's:
    `impressions_by` null) is counted in `impressions_not_linked` and his are left; carol's
    and the counters stay."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    from server.impressions.writer import user_hash
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    path = tmp_path / "store"
    _store(path)
    erasure = Keyring.generate("erasure")
    old, new = Keyring.generate("user-id", "u-old"), Keyring.generate("user-id", "u-new")
    ids = Keyring("user-id", new.keys + old.keys)
    shown = {}
    for user, ring in (("alice", ids), ("bob", new), ("carol", new)):
        for kid, key in ring.keys:
            prefix = keys.impression_user_prefix(kid, user_hash(key, user, cached=False))
            shown.update({keys.impression_key(prefix, 1000.0 + i, f"r{i}"): user for i in range(2)})
    counter = keys.impression_count_key("v1", "web")
    store = Store(path, sync=False)

    def fill(txn):
        for key in [*shown, counter]:
            store.raw_table("impressions").put(txn, key, b"impression")
        tombstones = Tombstones(store, erasure, impressions=ids)
        for user in ("alice", "bob"):
            tombstones.erase_user(txn, user)
    store.write(fill)
    with store.read() as txn:
        carried = [(bytes(k), bytes(v)) for k, v in
                   store.raw_table("meta").scan_prefix(txn, keys.TOMBSTONE_PREFIX)]
    store.close()
    bob = keys.tombstone_key(erasure.kid, digest(erasure.key, "bob"))
    carried = [(k, v if k != bob else json.dumps({**json.loads(v), "impressions_by": None}).encode())
               for k, v in carried]
    reply = erase_carried(tmp_path, carried, erasure.keys)
    left = set(_everything(path, ("impressions",))["impressions"])
    assert left == {k for k, user in shown.items() if user != "alice"} | {counter}
    assert (reply["impressions_erased_again"], reply["impressions_not_linked"]) == (4, 1)


def test_a_sealed_send_record_is_settled_by_its_state_read_with_the_encryption_key(tmp_path):
    """With encryption at rest a recipient's record is sealed under its user's data key, which
    the restore destroys: given the `encryption` keyring it now reads the state first, as
    DeleteProfile does, and counts alice's unsettled recipient suppressed `erased`; without
    the keyring it cannot, and says how many it could not (`send_states_unread`)."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    from server.messages.sends import SendRecords
    from server.security.secrets import Keyring
    from server.store import tokens
    from server.store.backup import read_value
    from tests.conftest import throwaway_crypto
    crypto, erasure = throwaway_crypto(), Keyring.generate("erasure")
    try:
        for master, counted, unread in ((crypto.master, {"erased": 1}, 0), ((), {}, 1)):
            path = tmp_path / f"given-{len(master)}" / "store"
            store = Store(path, sync=False, crypto=crypto)
            SendRecords(store).create("big", "spring", ["alice", "carol"], {}, {}, os.getpid())
            store.close()
            found = found_by(erasure.key, tokens.user_token("alice"))
            carried = [(keys.tombstone_key(erasure.kid, digest(erasure.key, "alice")),
                        json.dumps({"at": 1.0, "found_by": found}).encode())]
            reply = erase_carried(path.parent, carried, erasure.keys, master)
            job = json.loads(read_value(path, "sends", keys.send_job_key("big")))
            assert (job["suppressed"], reply["send_states_unread"]) == (counted, unread)
            assert read_value(path, "sends", keys.send_user_key("big", 0)) is None
            assert read_value(path, "sends", keys.send_user_key("big", 1)) is not None
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


def test_an_older_one_user_address_entry_naming_the_user_by_id_goes_too(tmp_path):
    """An address index entry written before entries per profile (`address_key`, the digest
    alone) holds its one user: sealed, starting with their token, or, without encryption at
    rest, their id as it is. The restore deleted only the sealed ones: alice's id stayed in
    the copy, which DeleteProfile would have deleted (`AddressIndex._legacy_names`). It now
    goes, found by her tombstone's hash of the id, through her pointers, as DeleteProfile
    finds it; one her held pointer reaches that names carol stays."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    path, key = tmp_path / "store", os.urandom(32)
    _store(path)
    mine, carols = keys.address_key("email", "ab" * 8), keys.address_key("email", "cd" * 8)
    store = Store(path, sync=False)
    store.write(lambda txn: [store.raw_table("meta").put(txn, k, v) for k, v in (
        (mine, b"alice"), (carols, b"carol"),
        (keys.address_token_user_key("email", ALICE) + keys.SEP + b"held", b"cd" * 8))])
    store.close()
    tombstone = json.dumps({"at": 1.0, "found_by": found_by(key, ALICE)}).encode()
    carried = [(keys.tombstone_key("k1", digest(key, "alice")), tombstone)]
    erase_carried(tmp_path, carried, [("k1", key)])
    meta = _everything(path, ("meta",))["meta"]
    assert mine not in meta and meta[carols] == b"carol"
    assert not any(b"alice" in v for v in meta.values())


def test_the_copys_impression_users_are_hashed_one_at_a_time(tmp_path):
    """`impressions_found` hashes the user part of each user's impression keys; it read them
    all into one list first, ~200 bytes a user (19.6 MB for 100,000 users, 2 GB for ten
    million, on top of the tokens), and now walks them one at a time: the peak of what
    Python holds no longer grows with the users."""

    from server.store.reerase import impressions_found, impressions_found_by
    path, key, users = tmp_path / "store", os.urandom(32), [os.urandom(16).hex() for _ in range(20_000)]
    store = Store(path, sync=False)
    store.write(lambda txn: [store.raw_table("impressions").put(
        txn, keys.impression_key(keys.impression_user_prefix("u1", u), 1000.0, "r"), b"x")
        for u in users])
    store.close()
    wanted = {"k1": {impressions_found_by(key, "u1", users[7])}}
    found, peak = _with_peak(impressions_found, path, wanted, [("k1", key)])
    assert found == [keys.impression_user_prefix("u1", users[7])]
    assert peak < 50 * len(users), peak  # a list of them all: ~200 bytes each


def test_the_copys_tokens_are_hashed_one_at_a_time(tmp_path):
    """`tokens_found` hashed each token of the copy from one set of them all (~120 bytes a
    user: 11.9 MB for 100,000 users); the tables' walks are now merged one token at a time,
    each token still hashed once (one in two tables is found once)."""
    path, key = tmp_path / "store", os.urandom(32)
    users = sorted(os.urandom(16).hex().encode() for _ in range(20_000))
    store = Store(path, sync=False)

    def fill(txn):
        for user in users:
            store.raw_table("profiles").put(txn, user + keys.FEATURES_SUFFIX, b"state")
        store.raw_table("contacts").put(txn, users[3] + keys.CONTACTS_SUFFIX, b"contacts")
    store.write(fill)
    store.close()
    wanted = {"k1": {found_by(key, users[3]), found_by(key, users[7])}}
    found, peak = _with_peak(tokens_found, path, wanted, [("k1", key)])
    assert found == [users[3], users[7]]
    assert peak < 50 * len(users), peak  # a set of them all: ~120 bytes each


def test_a_copy_whose_seal_was_under_way_reads_its_sealed_records_with_the_keyring(tmp_path):
    """A store whose seal (encryption at rest turned on) was cut short holds `seal-progress`
    and no `sealed` stamp yet, and its records sealed so far are sealed (`rekey.sealed_stamp`:
    the servers take it as sealed). `Opener` looked at the stamp alone: given the
    `encryption` keyring, it read alice's sealed pending decision as plaintext, did not
    decode it, and her campaign's pending counter stayed at 1 (`pending_unread`)."""
    import json

    from server.store import tokens
    from server.store.backup import read_value
    from server.store.lmdb_store import open_env
    from tests.conftest import throwaway_crypto
    crypto, path = throwaway_crypto(), tmp_path / "store"
    try:
        store, token = Store(path, sync=False, crypto=crypto), tokens.user_token("alice")
        pkey, counter = token + keys.SEP + b"d1", keys.count_key("spring")

        def fill(txn):
            store.table("decisions").put(txn, pkey, json.dumps(
                {"decision_id": "d1", "campaign_id": "spring", "status": "pending"}).encode())
            store.raw_table("decisions").put(txn, keys.due_key(2000.0, "d1"), pkey)
            store.raw_table("bandit").put(txn, counter, b'{"pending": 1}')
        store.write(fill)
        store.close()
        env = open_env(path, lock=False)
        with env.begin(write=True, db=env.open_db(b"meta")) as txn:  # the seal cut short
            txn.delete(b"sealed")  # stopped on the decision (its part's last key: rekey._PARTS)
            txn.put(b"seal-progress", json.dumps(
                [keys.USER_TABLES.index("decisions"), pkey.hex()]).encode())
        env.close()
        removed = reerase(path, [token], master=crypto.master)
        assert (removed["pending_corrected"], removed["pending_unread"]) == (1, 0)
        assert json.loads(read_value(path, "bandit", counter))["pending"] == 0
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


def _with_peak(fn, *args):
    """(fn(*args), the peak of the memory Python allocated while it ran, in bytes)."""
    import tracemalloc
    tracemalloc.start()
    try:
        return fn(*args), tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_copy_whose_seal_was_cut_short_reads_its_records_after_the_mark_without_the_keyring(
        tmp_path, monkeypatch):
    """Without the `encryption` keyring the restore cannot open a sealed record; in a copy
    whose seal was cut short it took the records the seal had not reached for sealed too, and
    counted both alice's and bob's pending decisions unread. The one after the mark
    (`rekey.seal_reached`) is now read as it is, and its campaign's counter lowered; the
    sealed one is still counted unread."""
    import json

    from server.store import tokens
    from server.store.backup import read_value
    from tests.conftest import throwaway_crypto
    from tests.server.test_backup import _half_sealed
    crypto, path = throwaway_crypto(), tmp_path / "data" / "store"
    try:
        _half_sealed(path.parent, crypto, monkeypatch, cut=True)
        removed = reerase(path, [tokens.user_token(u) for u in ("alice", "bob")])
        assert (removed["pending_corrected"], removed["pending_unread"]) == (1, 1)
        assert json.loads(read_value(path, "bandit", keys.count_key("spring")))["pending"] == 2
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


@pytest.mark.parametrize("sealed", [True, False], ids=["sealed", "plain"])
def test_a_damaged_pending_decision_is_counted_unread_and_the_erasure_goes_on(tmp_path, sealed):
    """One of alice's pending decision records damaged in its packed head (its context
    length changed; the layout tag intact): without encryption at rest, `uncount` decoded it
    and `struct.error` failed the whole erasure again, and with it every restore of that
    backup. It is counted unread (its campaign's counter still counts it), the others lowered,
    and all her records go."""
    import json

    from server.campaigns.decision_log import encode_decision
    from server.store import tokens
    from server.store.backup import read_prefix, read_value
    from server.store.table import Table
    from tests.conftest import throwaway_crypto
    crypto, path = throwaway_crypto() if sealed else None, tmp_path / "store"
    try:
        store, token = Store(path, sync=False, crypto=crypto), tokens.user_token("alice")
        pkeys, counter = [token + keys.SEP + b"d%d" % i for i in range(3)], keys.count_key("spring")

        def fill(txn):
            for i, pkey in enumerate(pkeys):
                store.table("decisions").put(txn, pkey, encode_decision({
                    "decision_id": f"d{i}", "campaign_id": "spring", "user_id": "alice",
                    "timestamp": 1000.0, "arm": 0, "propensity": 0.5, "status": "pending",
                    "deadline": 2000.0}))
                store.raw_table("decisions").put(txn, keys.due_key(2000.0, f"d{i}"), pkey)
                store.raw_table("decisions").put(txn, keys.decision_index_key(f"d{i}"), pkey)
            store.raw_table("bandit").put(txn, counter, b'{"pending": 3}')
            raw = bytearray(Table.get(store.raw_table("decisions"), txn, pkeys[1]))
            raw[11] ^= 0x7F  # the context length (`decision_codec._HEAD`), below any sealing
            Table.put(store.raw_table("decisions"), txn, pkeys[1], bytes(raw))
        store.write(fill)
        store.close()
        removed = reerase(path, [token], master=crypto.master if sealed else ())
        assert (removed["pending_corrected"], removed["pending_unread"]) == (2, 1)
        assert removed["decisions"] == 9  # records, index and pending-window entries
        assert json.loads(read_value(path, "bandit", counter))["pending"] == 1
        assert read_prefix(path, "decisions", b"") == []
    finally:
        tokens.use_key(tokens.UNCONFIGURED_KEY)


def test_a_plain_letter_and_send_record_whose_user_text_was_hit_go_and_the_file_keeps_none(
        tmp_path):
    """A plain dead letter or send record whose user-id text was hit (on disk, by a bad
    restore) does not decode and names nobody: the restore's re-erasure kept it, with the
    erased user's address and message, for good. A record it meets that does not decode
    goes now (as DeleteProfile deletes one: `messages.owned.stray`), so no byte of the
    rewritten file keeps the address; carol's readable records stay."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    from server.messages.deadletters import DeadLetter
    from server.messages.sends import READY, Recipient
    path, key = tmp_path / "store", os.urandom(32)
    _store(path)
    ready = {"to": "alice@example.com", "raw": "To: alice@example.com\r\n\r\nHi Alice"}
    hit = {keys.send_user_key("big", 0): Recipient(0, "alice", READY, "d0", message=ready),
           keys.dead_letter_key("0003.a"): DeadLetter("email", "spring", "d1", "alice",
                                                      "alice@example.com", "Hi Alice")}
    records = {keys.send_job_key("big"): _job(),
               keys.send_user_key("big", 1): Recipient(1, "carol").encode(),
               **{k: r.encode().replace(b'"alice"', b'"al\xc9ce"') for k, r in hit.items()}}
    store = Store(path, sync=False)
    store.write(lambda txn: [store.raw_table("sends").put(txn, k, v) for k, v in records.items()])
    store.close()
    assert b"alice@example.com" in (path / "data.mdb").read_bytes()
    tombstone = json.dumps({"at": 1.0, "found_by": found_by(key, ALICE)}).encode()
    carried = [(keys.tombstone_key("k1", digest(key, "alice")), tombstone)]
    reply = erase_carried(tmp_path, carried, [("k1", key)])
    sends = _everything(path)["sends"]
    assert sorted(sends) == sorted([keys.send_job_key("big"), keys.send_user_key("big", 1),
                                    keys.dead_letter_key("0002.c")])
    assert b"alice@example.com" not in (path / "data.mdb").read_bytes()
    assert (reply["sends_erased_again"], reply["send_states_unread"]) == (3, 1)  # its state unread


def test_a_plain_letter_damaged_in_its_message_stays_with_the_user_its_text_names(tmp_path):
    """A plain dead letter of carol's (not erased) damaged in its message (a byte no longer
    ASCII: it does not decode) still names carol: the restore's re-erasure of alice deleted
    it as one naming nobody. It stays; alice's, damaged the same way, goes."""
    import json

    from contract.erasure import digest
    from server.backup.erasures import erase_carried
    from server.messages.deadletters import DeadLetter
    path, key = tmp_path / "store", os.urandom(32)
    _store(path)
    letters = {keys.dead_letter_key(f"0004.{u[0]}"): DeadLetter(
        "email", "spring", f"d-{u}", u, f"{u}@example.com", f"Hello {u}").encode().replace(
        b"Hello", b"Hell\xef") for u in ("alice", "carol")}
    quote = DeadLetter("email", "spring", "d-q", "alice", "alice@example.com", "Hi").encode()
    letters[keys.dead_letter_key("0005.a")] = quote.replace(b'"user":"alice"', b'"user":"alice_')
    store = Store(path, sync=False)
    store.write(lambda txn: [store.raw_table("sends").put(txn, k, v) for k, v in letters.items()])
    store.close()
    tombstone = json.dumps({"at": 1.0, "found_by": found_by(key, ALICE)}).encode()
    erase_carried(tmp_path, [(keys.tombstone_key("k1", digest(key, "alice")), tombstone)],
                  [("k1", key)])
    sends = _everything(path)["sends"]
    assert keys.dead_letter_key("0004.c") in sends
    assert keys.dead_letter_key("0004.a") not in sends
    assert keys.dead_letter_key("0005.a") not in sends  # its id's closing quote hit: nobody's

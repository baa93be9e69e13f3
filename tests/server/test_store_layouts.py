"""Record layout versions: a data dir written before they existed still reads, and a layout bump
migrates it once, at open, all or nothing."""
import dataclasses
import itertools
import json
from pathlib import Path

import lmdb
import numpy as np
import pytest

from protos.tailor.v1 import profile_pb2 as pb
from server.campaigns.decision_log import decode_decision, encode_decision
from server.campaigns.repository import CampaignRepository
from server.errors import FailedPrecondition
from server.profiles import ProfileSchema, TrackedEvent
from server.profiles import seen as seen_module
from server.profiles.repository import ProfileRepository
from server.store import KINDS, RecordKind, Store, keys, rekey, tokens
from server.store import migrate as store_migrate
from server.store.migrate import stored_versions
from tests.conftest import store_mentions, throwaway_crypto
from tests.server.test_store_remap import grow_elsewhere

FIXTURE = Path(__file__).parent / "data" / "store_v1.json"
"""Every record of a small store as main wrote it before layouts had versions (make_store_v1.py)."""


@pytest.fixture
def v1_dir(tmp_path) -> Path:
    """A data dir holding the fixture's bytes exactly, with no layout stamps (as old code left it)."""
    return _fixture_store(tmp_path / "store")


def _fixture_store(path: Path) -> Path:
    """An LMDB store at `path` holding the fixture's bytes exactly, with no layout stamps."""
    env = lmdb.open(str(path), max_dbs=16)
    with env.begin(write=True) as txn:
        for table, rows in json.loads(FIXTURE.read_text()).items():
            db = env.open_db(table.encode(), txn=txn)
            for key, value in rows:
                txn.put(key.encode("latin-1"), value.encode("latin-1"), db=db)
    env.close()
    return path


def fixture_records(table: str) -> dict[bytes, bytes]:
    rows = json.loads(FIXTURE.read_text())[table]
    return {k.encode("latin-1"): v.encode("latin-1") for k, v in rows}


def rekeyed(table: str, rows: dict[bytes, bytes]) -> dict[bytes, bytes]:
    """The fixture's records with ids in keys as key version 2 holds them (keyed hashes)."""
    def user(key: bytes) -> bytes:
        uid, rest = key.split(keys.SEP, 1)
        return tokens.user_token(uid.decode()) + keys.SEP + rest

    def event(key: bytes) -> bytes:
        uid, ms, eid = key.split(keys.SEP)
        return keys.SEP.join([tokens.user_token(uid.decode()), ms, tokens.event_token(eid)])
    if table == "events":
        return {event(k): v for k, v in rows.items()}
    if table == "dedupe":
        return {b"e" + keys.SEP + tokens.event_token(k[2:]): event(v) for k, v in rows.items()}
    if table == "decisions":
        return {k if k.startswith(keys.SEP) else user(k): user(v) if k.startswith(keys.SEP) else v
                for k, v in rows.items()}
    return rows


def records(store: Store, table: str) -> dict[bytes, bytes]:
    return dict(store.scan(table))


def decisions_read(rows: dict[bytes, bytes]) -> dict[bytes, dict | bytes]:
    """Decision records as dicts (either layout; the channel default of layout 2 dropped, as
    layout 1 had none), index entries as they are."""
    out = {}
    for key, value in rows.items():
        if key.startswith(keys.SEP):
            out[key] = value
        else:
            rec = decode_decision(value)
            out[key] = {k: v for k, v in rec.items() if k not in LAYOUT2_DEFAULTS
                        or LAYOUT2_DEFAULTS[k] != v}
    return out


LAYOUT2_DEFAULTS = {"channel": "", "send_at": 0.0, "reason": "", "channel_propensity": 1.0,
                    "send_at_propensity": 1.0}
"""The contact-policy fields of a decision record, at their defaults (layout 2 stores them
always; layout-1 records written before the contact policy lack them)."""


def add_channel(raw: bytes) -> bytes:
    """A layout step for the test (applied twice, it would show: "emailemail")."""
    rec = decode_decision(raw)
    return encode_decision({**rec, "channel": rec.get("channel", "") + "email"})


def bumped(kind_name: str, step) -> tuple[RecordKind, ...]:
    """Today's kinds with `kind_name` one layout version up, reached by `step`."""
    return tuple(dataclasses.replace(k, version=k.version + 1, steps={**k.steps, k.version: step})
                 if k.name == kind_name else k for k in KINDS)


def test_a_data_dir_from_before_layout_versions_reads_back(v1_dir):
    store = Store(v1_dir, sync=False)
    # Since then: consent by purpose with a history, three more event types in feature states
    # (tests/server/test_consent_layout.py checks those records).
    # and packed decision records
    assert store.migrated == {"profile_state": 1, "profile_meta": 1, "decision": 1,
                              "contact_history": 1, "dead_letter": 1, "send_job": 1,
                              "worker_report": 1, "phone_user": 1, "email_user": 1,
                              "phone_index": 1, "email_index": 1, "tombstone": 1}  # a `same` step: stamped
    with store.read() as txn:
        assert stored_versions(store, txn, KINDS) == {k.name: k.version for k in KINDS}
    for table in ("events", "dedupe", "campaigns", "bandit"):
        assert records(store, table) == rekeyed(table, fixture_records(table))
    old, new = rekeyed("decisions", fixture_records("decisions")), records(store, "decisions")
    assert new.keys() == old.keys()
    assert all(new[k] == v for k, v in old.items() if k.startswith(keys.SEP))
    assert all(new[k][0] == 2 and old[k][:1] == b"{" for k in old if not k.startswith(keys.SEP))
    assert decisions_read(new) == decisions_read(old)
    # no raw id in any key left (values: tests/server/test_encryption.py, with encryption on)
    assert [(t, k) for t, k in store_mentions(store, b"ann") if b"ann" in k] == []
    profiles = ProfileRepository(store, ProfileSchema().layout())
    state, meta, events = profiles.read("ann")
    assert state is not None and meta["attributes"] == {"tier": "gold"}
    assert meta["consent"] == {"email": {"marketing": {"opted_in": True, "source": "", "timestamp": 0.0}}}
    assert [pb.Event.FromString(e).event_id for e in events] == ["e2", "e1"]
    assert [s is not None for s in profiles.states(["ann", "bo", "cy"])] == [True, True, False]
    again = TrackedEvent("e1", "ann", "view", "web", "", "i1", 0.0, 1764000000.123, {})
    assert profiles.ingest([again], [None]).duplicates == [0]  # its dedupe key still holds
    campaigns = CampaignRepository(store)
    assert campaigns.get("c1").spec.variants[0].content == {"subject": "hi"}
    decisions = {r["decision_id"]: r for r in itertools.chain(*campaigns.log.export(include_pending=True))}
    assert (decisions["d1"]["status"], decisions["d1"]["reward"], decisions["d2"]["status"]) == \
        ("rewarded", 1.0, "pending")
    assert campaigns.stats_snapshot("c1")[2]["pending"] == 1
    assert campaigns.sweep(4e9 + 1) == 1
    assert store.get("meta", keys.BUNDLE_ACTIVE) == b"20260101-000000"
    store.close()


def test_a_layout_bump_rewrites_that_kind_once_at_open(v1_dir, monkeypatch):
    monkeypatch.setattr(store_migrate, "CHUNK", 2)  # the decisions table spans three chunks
    store = Store(v1_dir, sync=False)  # today's layouts first: only the bump is left to do
    today = {t: records(store, t) for t in ("profiles", "events", "dedupe", "campaigns", "bandit")}
    store.close()
    kinds = bumped("decision", add_channel)
    store = Store(v1_dir, sync=False, layouts=kinds)
    assert store.migrated == {"decision": 2}
    old, new = rekeyed("decisions", fixture_records("decisions")), records(store, "decisions")
    assert new.keys() == old.keys()
    for key in old:
        expected = decode_decision(add_channel(old[key])) if not key.startswith(keys.SEP) \
            else old[key]
        assert (decode_decision(new[key]) if not key.startswith(keys.SEP) else new[key]) == \
            expected
    for table in ("profiles", "events", "dedupe", "campaigns", "bandit"):
        assert records(store, table) == today[table]
    exported = list(itertools.chain(*CampaignRepository(store).log.export(include_pending=True)))
    assert sorted((r["decision_id"], r["channel"]) for r in exported) == [("d1", "email"), ("d2", "email")]
    store.close()
    store = Store(v1_dir, sync=False, layouts=kinds)
    assert store.migrated == {}  # stamped: not again
    assert records(store, "decisions") == new
    store.close()


def test_a_store_with_a_newer_layout_is_refused(v1_dir):
    Store(v1_dir, sync=False, layouts=bumped("decision", add_channel)).close()
    with pytest.raises(FailedPrecondition, match="decision"):
        Store(v1_dir, sync=False)


def test_the_re_key_opens_its_scratch_table_in_a_map_another_process_grew(v1_dir, monkeypatch):
    """The re-key's scratch table was opened outside the adopt-and-retry of every other
    transaction: another process that grew the store past this process's map just before
    (here it re-keys the store itself, then writes ~4 MB) left the open raising
    `MapResizedError`."""
    rekey_then = rekey._rekey

    def grown_meanwhile(store):
        grow_elsewhere(v1_dir)
        return rekey_then(store)

    monkeypatch.setattr(rekey, "_rekey", grown_meanwhile)
    store = Store(v1_dir, map_size=1 << 20, sync=False)
    try:
        assert store.get("events", b"z001999") == b"x" * 2000
        assert records(store, "campaigns") == rekeyed("campaigns", fixture_records("campaigns"))
    finally:
        store.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_a_store_with_a_newer_key_version_is_refused_untouched(tmp_path, encrypted):
    """A store a newer Tailor moved to key version 3 is refused with a message saying so, not
    re-keyed as if its keys held raw ids (every token hashed again: every record lost), nor
    stamped back to version 2."""
    from server.store.rekey import KEY_VERSION_KEY
    crypto = throwaway_crypto() if encrypted else None
    path = tmp_path / "store"
    store = Store(path, sync=False, crypto=crypto)
    ProfileRepository(store, ProfileSchema().layout()).ingest(
        [TrackedEvent(f"e{n}", "ann", "view", "web", "", f"item-{n}", 0.0, 1.7e9 + n)
         for n in range(3)], [None] * 3)
    store.put("meta", KEY_VERSION_KEY, b"3")
    store.close()
    before = _every_record(path)
    for readonly in (False, True):
        with pytest.raises(FailedPrecondition, match="newer Tailor.*key version 3"):
            Store(path, sync=False, crypto=crypto, readonly=readonly)
    assert _every_record(path) == before


def test_a_failing_migration_writes_nothing(v1_dir):
    def broken(raw: bytes) -> bytes:
        if decode_decision(raw)["decision_id"] == "d2":
            raise ValueError("cannot migrate")
        return add_channel(raw)

    with pytest.raises(ValueError, match="cannot migrate"):
        Store(v1_dir, sync=False, layouts=bumped("decision", broken))
    store = Store(v1_dir, sync=False, layouts=())  # nothing was stamped or rewritten
    # (the re-keying before the layout steps is a migration of its own, committed first)
    assert records(store, "decisions") == rekeyed("decisions", fixture_records("decisions"))
    store.close()
    store = Store(v1_dir, sync=False)
    assert store.migrated == {"profile_state": 1, "profile_meta": 1, "decision": 1,
                              "contact_history": 1, "dead_letter": 1, "send_job": 1,
                              "worker_report": 1, "phone_user": 1, "email_user": 1,
                              "phone_index": 1, "email_index": 1, "tombstone": 1}
    store.close()


def test_a_read_only_open_refuses_to_skip_a_migration(v1_dir):
    Store(v1_dir, sync=False).close()
    with pytest.raises(FailedPrecondition, match="writable"):
        Store(v1_dir, readonly=True, layouts=bumped("campaign", lambda raw: raw))
    store = Store(v1_dir, readonly=True)
    assert store.get("campaigns", b"c1") == fixture_records("campaigns")[b"c1"]
    store.close()


def test_a_kind_needs_a_step_from_each_older_layout():
    with pytest.raises(ValueError, match=r"from version\(s\) \[2\]"):
        RecordKind("x", "meta", 3, lambda key: True, "test", steps={1: lambda raw: raw})


def test_every_stored_record_belongs_to_exactly_one_kind(v1_dir):
    store = Store(v1_dir, sync=False)
    for table in ("profiles", "events", "dedupe", "campaigns", "bandit", "decisions", "meta"):
        for key, _ in store.scan(table):
            owners = [k.name for k in KINDS if k.table == table and k.owns(key)]
            expected = 0 if key.startswith(keys.LAYOUT_PREFIX) else 1
            assert len(owners) == expected, (table, key, owners)
    store.close()


@pytest.mark.parametrize("encrypted", [False, True])
def test_seen_records_fold_into_the_profile_state_at_layout_3(tmp_path, encrypted):
    """A store at profile_state layout 2 (the feature state alone, the seen-set a record of its
    own under `<user>␟seen`) opens with one record per user holding both, the seen records
    gone, every seen-set and state as before; a user without a seen record keeps its
    recent-items fallback. With encryption on, the records are opened and sealed again."""

    from server.profiles.codec import split_state
    crypto = throwaway_crypto() if encrypted else None
    path, now = tmp_path / "store", 1.7e9
    store = Store(path, sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([TrackedEvent(f"e{n}", f"u{n % 3}", "purchase" if n % 4 else "view", "web", "",
                              f"item-{n}", 0.0, now + n) for n in range(30)], [None] * 30)
    users = ["u0", "u1", "u2"]
    seen_before, states_before = [s for _, s in repo.states_and_seen(users)], repo.states(users)
    for user in users:  # back to layout 2: two records per user (u2 without its seen record)
        key = keys.feature_key(user)
        state, part = split_state(store.get("profiles", key))
        store.put("profiles", key, state)
        if user != "u2":
            store.put("profiles", key[:-len(keys.FEATURES_SUFFIX)] + keys.SEEN_SUFFIX, part)
    store.put("meta", keys.layout_key("profile_state"), b"2")
    store.close()

    store = Store(path, sync=False, crypto=crypto)
    assert store.migrated == {"profile_state": 2}
    repo = ProfileRepository(store, ProfileSchema().layout())
    assert not [k for k, _ in store.scan("profiles") if k.endswith(keys.SEEN_SUFFIX)]
    after = [s for _, s in repo.states_and_seen(users)]
    for before, got in zip(seen_before[:2], after[:2]):
        assert got.codes.tolist() == before.codes.tolist() and got.mask.tolist() == before.mask.tolist()
        assert got.ts.tolist() == before.ts.tolist()
    recent = after[2]  # no seen part: its recent items, of unknown type
    assert set(recent.mask.tolist()) == {int(seen_module.UNKNOWN_BIT)}
    assert set(recent.codes.tolist()) == set(seen_before[2].codes.tolist())
    for before, got in zip(states_before, repo.states(users)):
        assert np.array_equal(before, got)
    store.close()


def test_migrate_command_upgrades_a_data_dir_before_any_server_starts(tmp_path):
    """`python -m server migrate` does the open-time migrations offline (no startup probe to
    outlast), under the exclusive lock, and says what it did; the next open only reads stamps."""
    import os

    from server.security.secrets import Secrets
    from server.store import lock_data_dir
    from server.store.crypto import MASTER_RING, STORE_ID_RING, StoreCrypto
    from tests.conftest import run_module
    data, secrets = tmp_path / "data", tmp_path / "secrets"
    (data / "store").mkdir(parents=True)
    _fixture_store(data / "store")
    run_module("server", "secrets", "init", "--secrets-dir", str(secrets))
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(secrets)}
    held = lock_data_dir(data, exclusive=False)  # a server running on it
    refused = run_module("server", "migrate", "--data-dir", str(data), check=False, env=env)
    held.close()
    assert refused.returncode == 1 and "in use by a running server" in refused.stderr
    done = json.loads(run_module("server", "migrate", "--data-dir", str(data), env=env).stdout)
    assert done["migrated"] == {"profile_state": 1, "profile_meta": 1, "decision": 1,
                                "contact_history": 1, "dead_letter": 1, "send_job": 1,
                              "worker_report": 1, "phone_user": 1, "email_user": 1,
                              "phone_index": 1, "email_index": 1, "tombstone": 1}
    again = json.loads(run_module("server", "migrate", "--data-dir", str(data), env=env).stdout)
    assert again["migrated"] == {}
    rings = Secrets.load(secrets, generate=False, names=(MASTER_RING, STORE_ID_RING))
    store = Store(data / "store", readonly=True, crypto=StoreCrypto.from_secrets(rings))
    assert store.migrated == {}  # a read-only open refuses a store that still needs one
    store.close()


def test_an_encrypted_store_opened_without_encryption_is_refused_before_any_layout_step(tmp_path):
    """With TAILOR_ENCRYPT_AT_REST=false on an encrypted store that still has a layout step to
    take, the step ran on the ciphertexts first: the seen fold (which never fails) rewrote every
    profile state as plaintext around two ciphertexts and stamped the layout, so no profile
    opened again, encryption on or off. The refusal comes first; nothing is written."""

    from server.profiles.codec import split_state
    from server.store.crypto import StoreCrypto
    from server.store.errors import StoreEncrypted
    crypto = throwaway_crypto()
    path = tmp_path / "store"
    store = Store(path, sync=False, crypto=crypto)
    repo = ProfileRepository(store, ProfileSchema().layout())
    repo.ingest([TrackedEvent(f"e{n}", "u0", "view", "web", "", f"item-{n}", 0.0, 1.7e9 + n)
                 for n in range(5)], [None] * 5)
    before = repo.states(["u0"])[0]
    key = keys.feature_key("u0")  # back to layout 2: the seen-set a record of its own
    state, part = split_state(store.get("profiles", key))
    store.put("profiles", key, state)
    store.put("profiles", key[:-len(keys.FEATURES_SUFFIX)] + keys.SEEN_SUFFIX, part)
    store.put("meta", keys.layout_key("profile_state"), b"2")
    store.close()
    plain = StoreCrypto(crypto.master, crypto.store_id_key, False)
    with pytest.raises(StoreEncrypted):
        Store(path, sync=False, crypto=plain)
    store = Store(path, sync=False, crypto=crypto)  # encryption on: migrates and reads
    assert store.migrated == {"profile_state": 2}
    assert np.array_equal(ProfileRepository(store, ProfileSchema().layout()).states(["u0"])[0], before)
    store.close()


def test_contact_histories_of_layout_1_read_as_marketing_and_old_binaries_stay_away(tmp_path):
    """contact_history 2 adds a fourth element (a transactional campaign's contact); a binary
    that unpacks three elements would fail every decision of such a user, so it is refused."""
    from server.contact.caps import ContactHistory, ContactLog
    one = tuple(dataclasses.replace(k, version=1, steps={}) if k.name == "contact_history" else k
                for k in KINDS)
    store = Store(tmp_path / "store", sync=False, layouts=one)
    log = ContactLog(store)
    store.write(lambda txn: log.add_sends(txn, [("ann", "email", 1000.0, "d1")], 1000.0))
    store.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.migrated == {"contact_history": 1}
    with store.read() as txn:
        history = ContactLog(store).history(txn, "ann")
    assert history.entries == [[1000.0, "email", "d1"]]
    assert history.blocked_by([("email", 1, 60.0, True)], 1010.0)  # a marketing contact
    store.close()
    with pytest.raises(FailedPrecondition, match="contact_history"):
        Store(tmp_path / "store", sync=False, layouts=one)
    assert ContactHistory.decode(b'[[1.0,"email","d2","transactional"]]').exported()[0][
        "purpose"] == "transactional"


def test_a_layout_that_only_adds_forms_is_stamped_and_no_record_rewritten(tmp_path):
    """dead_letter 2 adds claimed_until (a retry's claim), which the previous release refused
    to decode; its records of layout 1 are layout 2 as they are. The upgrade only stamps the
    version (it rewrote, and resealed, every record of such a kind in the open's transaction),
    and the older binary is refused rather than failing on each letter."""
    from server.messages.deadletters import DeadLetter, DeadLetters
    from server.store import keys as K
    one = tuple(dataclasses.replace(k, version=1, steps={}) if k.name == "dead_letter" else k
                for k in KINDS)
    store = Store(tmp_path / "store", sync=False, layouts=one)
    letter_id = DeadLetters(store).add(DeadLetter("sms", "c", "d1", "ann", "+1555", "{}", "503", 1))
    key = K.dead_letter_key(letter_id)
    raw = store.get("sends", key)
    store.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.migrated == {"dead_letter": 1}
    assert store.get("sends", key) == raw  # stamped, not rewritten
    letter = DeadLetters(store).get(letter_id)
    assert (letter.reason, letter.claimed_until) == ("503", 0.0)
    store.close()
    with pytest.raises(FailedPrecondition, match="dead_letter"):
        Store(tmp_path / "store", sync=False, layouts=one)


_KILLED_REKEY = """
import os, signal, sys
from server.store import Store, rekey
rekey.REKEY_CHUNK = 2  # records per transaction
kill_at, seen = int(sys.argv[2]), []
chunk = rekey._rekey_chunk

def counted(store, scratch, txn, where):
    seen.append(where)
    out = chunk(store, scratch, txn, where)
    if len(seen) == kill_at:  # inside that chunk's transaction: it never commits
        os.kill(os.getpid(), signal.SIGKILL)
    return out
rekey._rekey_chunk = counted
Store(sys.argv[1], sync=False)
print(len(seen))
"""


def _every_record(path: Path) -> dict[str, dict[bytes, bytes]]:
    env = lmdb.open(str(path), max_dbs=32, readonly=True, lock=False)
    with env.begin() as txn:
        names = [bytes(k) for k, _ in txn.cursor()]
        out = {n.decode(): dict(txn.cursor(db=env.open_db(n, txn=txn)).iternext())
               for n in names}
    env.close()
    return out


def test_the_rekey_runs_in_bounded_chunks_and_a_kill_midway_resumes(tmp_path, env_with_repo):
    """The re-key to key version 2 moved every record of a table in one transaction (a whole
    table's keys in memory). It now moves `REKEY_CHUNK` records a transaction; a process
    SIGKILLed inside any chunk leaves the chunks before it, and the next open finishes the
    job: the store ends exactly as an uninterrupted migration leaves it."""
    import subprocess
    import sys
    whole = _fixture_store(tmp_path / "whole")
    done = subprocess.run([sys.executable, "-c", _KILLED_REKEY, str(whole), "0"], text=True,
                          capture_output=True, env=env_with_repo, timeout=120)
    assert done.returncode == 0, done.stderr
    chunks = int(done.stdout)
    assert chunks > 20  # 20 records, 2 a transaction, moved out then back
    expected = _every_record(whole)
    assert "rekey-scratch" not in expected  # dropped
    for table in ("events", "dedupe", "decisions"):  # every record, no user id left in keys
        fixture, got = fixture_records(table), expected[table]
        assert len(got) == len(fixture)
        assert not {k for k in got if not k.startswith(keys.SEP)} & set(fixture)
    assert keys.layout_key("rekey_progress") in expected["meta"]
    assert b"rekey-progress" not in expected["meta"]
    for kill_at in (1, 2, chunks // 3, chunks // 2, chunks - 1):
        path = _fixture_store(tmp_path / f"killed-{kill_at}")
        killed = subprocess.run([sys.executable, "-c", _KILLED_REKEY, str(path), str(kill_at)],
                                text=True, capture_output=True, env=env_with_repo, timeout=120)
        assert killed.returncode == -9, killed.stderr
        if kill_at > 2:  # earlier chunks committed: a partly re-keyed store, and where it was
            assert b"rekey-progress" in _every_record(path)["meta"]
        resumed = subprocess.run([sys.executable, "-c", _KILLED_REKEY, str(path), "0"],
                                 text=True, capture_output=True, env=env_with_repo, timeout=120)
        assert resumed.returncode == 0, resumed.stderr  # the next start goes on where the
        assert int(resumed.stdout) == chunks - (kill_at - 1)  # last committed chunk ended
        assert _every_record(path) == expected, kill_at


_NEWER_LAYOUTS = '''
import dataclasses
import server.store.layouts as L
from server.store import lmdb_store as S
def bump(kind):  # a later Tailor: one record kind a layout further
    if kind.name != "dead_letter":
        return kind
    return dataclasses.replace(kind, version=kind.version + 1,
                               steps={**kind.steps, kind.version: L.same})
S.Store.__init__.__defaults__ = tuple(tuple(map(bump, L.KINDS)) if d is L.KINDS else d
                                      for d in S.Store.__init__.__defaults__)
L.KINDS = S.KINDS = tuple(map(bump, L.KINDS))
'''


def test_a_newer_tailor_beside_a_running_older_one_is_refused_before_any_layout_step(
        server_process, tmp_path):
    """Servers share the data dir's lock, so a newer Tailor started beside a running one (a
    blue/green on one host, a second `python -m server` by mistake) ran its layout steps
    under it, and the running one, which checks the stamps only at its open, then read
    records in a layout it does not know. The newer one is refused in one line, the stamps
    untouched, while the older one runs; once it has stopped, the newer one migrates."""
    import os
    import subprocess
    import sys
    import time

    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from server.store.backup import read_value
    from tests.conftest import ROOT, free_port, run_module
    newer = tmp_path / "newer"
    newer.mkdir()
    (newer / "sitecustomize.py").write_text(_NEWER_LAYOUTS)  # in every process it starts
    data = tmp_path / "data"
    env = {**os.environ, "TAILOR_SECRETS_DIR": str(tmp_path / "secrets")}
    newer_env = {**env, "PYTHONPATH": os.pathsep.join([str(newer), str(ROOT)])}
    older = server_process(data, env=env)
    stamp = keys.layout_key("dead_letter")
    assert read_value(data / "store", "meta", stamp) == b"2"
    proc = subprocess.Popen([sys.executable, "-m", "server", "--port", str(free_port()),
                             "--metrics-port", str(free_port()), "--data-dir", str(data)],
                            cwd=ROOT, env=newer_env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        if read_value(data / "store", "meta", stamp) != b"2":
            break  # the newer one migrated under the running one
        time.sleep(0.1)
    migrated = read_value(data / "store", "meta", stamp)
    if proc.poll() is None:
        proc.kill()
    err = proc.communicate(timeout=60)[1]
    assert migrated == b"2", "the newer Tailor ran its layout step under the running one"
    assert proc.returncode == 2 and "Traceback" not in err, err[-3000:]
    assert err.strip().splitlines()[-1] == (
        f"error: store at {data / 'store'} is open in a running Tailor of another version, whose "
        "record layouts differ from this one's: dead_letter (3 here, 2 there); stop it first "
        "(upgrade: stop, back up, migrate, start)"), err[-3000:]
    with older.connection.channel(older.target) as ch:  # the older one serves on
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    older.stop()
    done = json.loads(run_module("server", "migrate", "--data-dir", str(data), env=newer_env).stdout)
    assert done["migrated"] == {"dead_letter": 2}
    assert read_value(data / "store", "meta", stamp) == b"3"


@pytest.mark.parametrize("channel,old,new", [("sms", "+447700900111", "+447700900222"),
                                             ("email", "ann@old.example", "ann@new.example")])
def test_an_address_only_set_before_the_held_pointer_is_dropped_at_the_next_change(
        tmp_path, channel, old, new):
    """phone_user/email_user 1 -> 2: before the held pointer, the user's pointer named the
    address last set *or* messaged. Read as "last messaged", an address only set (never
    messaged) stayed indexed for good after the next change, and a STOP from it (a recycled
    number: someone else's) closed the user's texts. The migration marks such pointers; the
    next change drops their address as it did before, a message writes a true pointer."""
    from server.messages.phones import AddressIndex
    from server.security.secrets import Keyring
    one = tuple(dataclasses.replace(k, version=1, steps={})
                if k.name in ("phone_user", "email_user") else k for k in KINDS)
    ring = Keyring.generate("unsubscribe")
    attribute = "phone" if channel == "sms" else "email"
    store = Store(tmp_path / "store", sync=False, layouts=one)
    index = AddressIndex(store, ring, channel)
    digest = index._digests(index._normalize(old))[0]
    # as the code before the held pointer wrote it for an address set: pointer and entry
    store.write(lambda txn: (index._meta.put(txn, index._user_key("ann"), digest.encode()),
                             index._enter(txn, "ann", digest)))
    store.close()

    store = Store(tmp_path / "store", sync=False)
    migrated = store.migrated
    index = AddressIndex(store, ring, channel)
    assert index.lookup(old) == ["ann"]  # still theirs until the change
    store.write(lambda txn: index.on_attributes(txn, "ann", {attribute: new}))
    assert (index.lookup(old), index.lookup(new)) == ([], ["ann"])
    assert migrated == {"phone_user": 1, "email_user": 1}
    store.close()
    assert Store(tmp_path / "store", sync=False).migrated == {}  # stamped: not again


def test_a_cancelled_send_job_keeps_the_release_before_cancel_send_away(tmp_path):
    """send_job 3 adds `cancelled` (CancelSend). The release before it reads a job stamped
    cancelled but not yet settled as unfinished and would send the rest of it after a restart;
    layout 2 records are layout 3 as they are, so the upgrade only stamps, and that release is
    refused."""
    from server.messages.sends import SendRecords
    two = tuple(dataclasses.replace(k, version=2, steps={1: k.steps[1]})
                if k.name == "send_job" else k for k in KINDS)
    store = Store(tmp_path / "store", sync=False, layouts=two)
    SendRecords(store).create("job1", "camp", ["ann", "bob"], {}, {}, owner=1)
    store.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.migrated == {"send_job": 2}
    job, _ = SendRecords(store).cancel("job1")
    assert job["cancelled"] > 0 and not job["finished"]
    store.close()
    with pytest.raises(FailedPrecondition, match="send_job"):
        Store(tmp_path / "store", sync=False, layouts=two)


def test_a_send_job_keeps_why_it_stopped_and_older_ones_read_cancelled(tmp_path):
    """send_job 4 adds `stopped_by` (CancelSend's `cancelled`, or the bounce breaker's
    `bounce_breaker`: what a resume settles the rest under). A layout 3 job stamped cancelled
    has none and reads `cancelled`, as before; the release before it, which would settle a job
    its breaker stopped `cancelled`, is refused."""
    from server.messages.sends import BOUNCE_BREAKER, SendRecords, stopped_by
    three = tuple(dataclasses.replace(k, version=3, steps={1: k.steps[1], 2: k.steps[2]})
                  if k.name == "send_job" else k for k in KINDS)
    store = Store(tmp_path / "store", sync=False, layouts=three)
    records = SendRecords(store)
    for send_id in ("old", "tripped"):
        records.create(send_id, "camp", ["ann"], {}, {}, owner=1)
    job, _ = records.cancel("old")
    del job["stopped_by"]  # as layout 3 wrote it
    store.write(lambda txn: store.table("sends").put(txn, keys.send_job_key("old"),
                                                     json.dumps(job).encode()))
    store.close()
    store = Store(tmp_path / "store", sync=False)
    assert store.migrated == {"send_job": 3}
    records = SendRecords(store)
    records.cancel("tripped", BOUNCE_BREAKER)
    records.cancel("tripped")  # a CancelSend after the trip: the stop stays the breaker's
    assert [stopped_by(records.job(s)) for s in ("old", "tripped")] == ["cancelled",
                                                                        "bounce_breaker"]
    store.close()
    with pytest.raises(FailedPrecondition, match="send_job"):
        Store(tmp_path / "store", sync=False, layouts=three)


def test_a_tombstone_keeps_a_hash_of_the_users_token_and_older_ones_read_as_unlinked(tmp_path):
    """Layout 2 of tombstones keeps a keyed hash of the user's record-key token (what a restore
    finds their records by again), never the token; one written in layout 1 has none, and the
    migration says so (`found_by` null) rather than leaving a record that looks like either."""
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store.reerase import found_by
    ring = Keyring.generate("erasure")
    older = tuple(dataclasses.replace(k, version=1, steps={}) if k.name == "tombstone" else k
                  for k in KINDS)
    store = Store(tmp_path / "s", sync=False, layouts=older)
    store.write(lambda txn: Tombstones(store, ring).erase_user(txn, "alice"))
    (key, raw), = _tombstones(store)
    store.write(lambda txn: store.raw_table("meta").put(  # as layout 1 wrote it
        txn, key, json.dumps({"at": json.loads(raw)["at"]}).encode()))
    store.close()
    store = Store(tmp_path / "s", sync=False)
    assert store.migrated == {"tombstone": 1}
    assert json.loads(_tombstones(store)[0][1])["found_by"] is None
    store.write(lambda txn: Tombstones(store, ring).erase_user(txn, "bob"))
    kept = sorted(json.loads(raw)["found_by"] or "" for _, raw in _tombstones(store))
    assert kept == sorted(["", found_by(ring.key, tokens.user_token("bob"))])
    assert not any(tokens.user_token("bob") in raw for _, raw in _tombstones(store))
    store.close()


def test_a_tombstone_keeps_a_hash_of_the_users_impression_keys_and_older_ones_read_as_unlinked(
        tmp_path):
    """Layout 3 of tombstones keeps, per key of the `user-id` keyring, a keyed hash of the
    user's part of their impression keys (what a restore finds their impressions by), never
    that part; one written in layout 2 has none, and the migration says so
    (`impressions_by` null: the restore counts it in `impressions_not_linked`)."""
    from server.impressions.writer import user_hash
    from server.profiles.tombstones import Tombstones
    from server.security.secrets import Keyring
    from server.store.layouts import _tombstone_unlinked
    from server.store.reerase import impressions_found_by
    ring, ids = Keyring.generate("erasure"), Keyring.generate("user-id")
    older = tuple(dataclasses.replace(k, version=2, steps={1: _tombstone_unlinked})
                  if k.name == "tombstone" else k for k in KINDS)
    store = Store(tmp_path / "s", sync=False, layouts=older)
    store.write(lambda txn: Tombstones(store, ring).erase_user(txn, "alice"))
    (key, raw), = _tombstones(store)
    record = json.loads(raw)
    record.pop("impressions_by", None)  # as layout 2 wrote it
    store.write(lambda txn: store.raw_table("meta").put(txn, key, json.dumps(record).encode()))
    store.close()
    store = Store(tmp_path / "s", sync=False)
    assert store.migrated == {"tombstone": 2}  # (the layout it was stamped at)
    assert json.loads(_tombstones(store)[0][1])["impressions_by"] is None
    store.write(lambda txn: Tombstones(store, ring, impressions=ids).erase_user(txn, "bob"))
    hashed = user_hash(ids.key, "bob", cached=False)
    kept = [json.loads(raw)["impressions_by"] for _, raw in _tombstones(store)]
    assert sorted(kept, key=str) == sorted([None, [impressions_found_by(ring.key, ids.kid, hashed)]],
                                           key=str)
    assert not any(hashed.encode() in raw for _, raw in _tombstones(store))
    store.close()


def _tombstones(store):
    with store.read() as txn:
        return [(bytes(k), bytes(v)) for k, v in
                store.raw_table("meta").scan_prefix(txn, keys.TOMBSTONE_PREFIX)]

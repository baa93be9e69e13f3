"""How the campaigns writer lays a batch of decisions down: time-ordered decision ids, the
entries a batch writes (records, then the id index, then the due entries), the record packed
directly, contact histories written as the JSON they were, and erasure still removing every
entry of a user."""
import itertools
import json
import os
import time

import pytest

from kernels import bandits as B
from server.campaigns import decision_codec as codec
from server.campaigns import repository
from server.campaigns.decision_ids import TimedIds, decision_ids, fixed_decision_id
from server.campaigns.records import DecisionRecord
from server.campaigns.repository import CampaignRepository, writer_functions
from server.campaigns.spec import Campaign, CampaignSpec, Variant
from server.contact.caps import ContactHistory
from server.security.secrets import Keyring
from server.store import Store, keys
from server.store.crypto import StoreCrypto
from tests.conftest import store_mentions

NOW = 1764000000.123


@pytest.fixture
def store(sealed_store):
    return sealed_store


def _row(decision_id: str, user: str, now: float, status: str = "pending") -> tuple:
    if status == "suppressed":
        return (decision_id, "c", user, now, -2, 0.0, None, [], 0, "", "suppressed", now, False,
                "push", 0.0, "no_consent", (), 1.0, 1.0, False)
    return (decision_id, "c", user, now, 1, 0.5, None, [], 0, "b", "pending", now + 60.0, False,
            "push", 0.0, "", (), 1.0, 1.0, False)


def test_decision_ids_start_with_their_millisecond_and_sort_by_time():
    ids = decision_ids(500, NOW)
    assert ids == sorted(ids) and len(set(ids)) == 500
    assert all(len(d) == 24 and int(d, 16) >= 0 for d in ids)
    assert {d[:11] for d in ids} == {f"{1764000000123:011x}"}
    new = TimedIds(batch=4)
    made = [new(NOW + i * 0.002) for i in range(10)]  # past one draw of random digits
    assert made == sorted(made) and len(set(made)) == 10


def test_a_fixed_decision_id_is_the_same_every_time_and_starts_with_the_jobs_millisecond():
    ids = [fixed_decision_id(NOW, f"send-0123456789abcdef:{seq}") for seq in range(500)]
    assert ids == [fixed_decision_id(NOW, f"send-0123456789abcdef:{seq}") for seq in range(500)]
    assert len(set(ids)) == 500 and all(len(d) == 24 and int(d, 16) >= 0 for d in ids)
    assert {d[:11] for d in ids} == {f"{1764000000123:011x}"}
    assert fixed_decision_id(NOW, "send-fedcba9876543210:0") != ids[0]


def test_the_common_record_packs_as_the_general_packer_does():
    rec = DecisionRecord("ab" * 12, "spring", "u-1", NOW, 3, 0.125, None, [0.5, -2.0], 0, "v3",
                         "pending", NOW + 60, True, "email", NOW + 5, "", (), 0.75, 0.5)
    for r in (rec, rec._replace(context=[], linear=False),
              rec._replace(status="suppressed", arm=-2, reason="frequency_cap")):
        general = codec._pack(*r[:16], r.channel_propensity, r.send_at_propensity, None, None,
                              None)
        assert codec.encode_record(r) == general
        assert codec.decode(general)["user_id"] == "u-1"


def test_contact_histories_are_written_as_compact_json():
    cases = {
        (): "[]",
        ((1.5, "push", "d1"),): '[[1.5,"push","d1"]]',
        ((2.0, "email", ""), (1e20, "sms", "x")): '[[2.0,"email",""],[1e+20,"sms","x"]]',
        ((3.25, "email", 'a"b\\c'),): '[[3.25,"email","a\\"b\\\\c"]]',
        ((4.0, "push", "é"),): '[[4.0,"push","\\u00e9"]]',
        ((5, "push", "x"),): '[[5,"push","x"]]',
    }
    for entries, expected in cases.items():
        raw = ContactHistory([list(e) for e in entries]).encode()
        assert raw == expected.encode()
        assert json.loads(raw) == [list(e) for e in entries]


def test_a_batch_writes_its_records_index_due_and_contacts_and_erasure_removes_them(store):
    spec = CampaignSpec("c", variants=(Variant("a"), Variant("b")), channel="push")
    repo = CampaignRepository(store)
    repo.create(Campaign(spec.validated()), spec.validated().new_state())
    now = time.time()
    ids = decision_ids(6, now)
    users = ["ann", "bob", "cy", "ann", "dee", "eve"]
    rows = [_row(d, u, now, "suppressed" if u == "eve" else "pending")
            for d, u in zip(ids, users)]
    assert writer_functions(store)["decision_batches"]([rows[:3], rows[3:]]) == [
        ["", "", ""], ["", "", "no_consent"]]
    with store.read() as txn:
        index = [k for k, _ in store.table("decisions").items(txn, keys.INDEX_PREFIX)
                 if k.startswith(keys.INDEX_PREFIX)]
        due = list(store.table("decisions").scan_prefix(txn, keys.DUE_PREFIX))
    assert index == [keys.decision_index_key(d) for d in ids]  # by time: the ids' order
    assert sorted(k[-24:].decode() for k, _ in due) == ids[:5]  # eve's is suppressed
    assert [r["decision_id"] for r in repo.log.of_user("ann")] == sorted([ids[0], ids[3]])
    assert [c["decision_id"] for c in repo.contacts_of("ann")] == [ids[0], ids[3]]
    assert repo.contacts_of("eve") == []
    assert repo.log.owner(ids[1]) == ("bob", "c")

    def erase(txn):
        removed = repo.erase_user(txn, "ann")
        store.table("decisions").delete_prefix(txn, keys.user_prefix("ann"))
        return removed
    assert store.write(erase, erasure=True) == 4  # two index and two due entries
    assert repo.log.owner(ids[0]) is None and repo.log.owner(ids[3]) is None
    assert repo.log.of_user("ann") == [] and repo.log.owner(ids[4]) == ("dee", "c")
    for d in (ids[0], ids[3]):
        assert store_mentions(store, d.encode()) == []



def test_the_keys_kept_by_token_stay_bounded_and_keep_the_newest(tmp_path):
    crypto = StoreCrypto(Keyring.generate("encryption").keys, os.urandom(32), cache_size=8)
    store = Store(tmp_path / "store", sync=False, crypto=crypto)
    contacts = store.table("contacts")
    users = [f"user-{i}" for i in range(30)]
    for i in range(0, 30, 3):  # ten transactions of three new users
        store.write(lambda txn, i=i: contacts.put_many(
            txn, [(keys.contact_key(u), b"[]") for u in users[i:i + 3]]))
    kept = store.datakeys._kept[1]
    assert list(kept) == [keys.user_token(u) for u in users[-8:]]
    with store.read() as txn:  # every user's record still opens (kept or read back)
        assert contacts.get_many(txn, [keys.contact_key(u) for u in users]) == [b"[]"] * 30
    store.close()


def test_an_export_read_in_small_snapshots_misses_and_repeats_nothing(store):
    """The export reads the log a chunk of records per snapshot (encrypted store here): split
    anywhere, the records come out once each, in key order, index entries never among them."""
    repo = CampaignRepository(store)
    rows = [_row(f"d{i:03d}", f"u{i % 7}", NOW + i, "suppressed" if i % 5 == 0 else "pending")
            for i in range(40)]
    repo.log_decisions([DecisionRecord(*r) for r in rows])
    whole = [r["decision_id"] for r in itertools.chain(*repo.log.export(
        include_pending=True, include_suppressed=True))]
    assert sorted(whole) == sorted(r[0] for r in rows)
    for chunk in (1, 3, 39, 40, 41):
        lists = list(repo.log.export(include_pending=True, include_suppressed=True, chunk=chunk))
        assert [r["decision_id"] for r in itertools.chain(*lists)] == whole
        assert all(len(c) <= chunk for c in lists)  # a list per snapshot of `chunk` records
    assert len(list(itertools.chain(*repo.log.export(include_pending=True, chunk=3)))) == 32  # 8 suppressed


def test_the_decision_counters_stay_exact_across_writers_and_failed_transactions(store):
    """The writer keeps the counters it wrote last (`CampaignRepository._count`) instead of
    decoding them again; a change by another writer of the store (another worker's child, the
    server's own update) or a transaction that failed after counting must not be counted over."""
    spec = CampaignSpec("c", variants=(Variant("a"), Variant("b")), channel="push").validated()
    writer, other = CampaignRepository(store), CampaignRepository(store)
    writer.create(Campaign(spec), spec.new_state())

    def decide(repo, n):
        now = time.time()
        rows = [_row(d, f"u{i}", now) for i, d in enumerate(decision_ids(n, now))]
        assert repo.log_decisions([DecisionRecord(*r) for r in rows]) == [""] * n

    def failed(txn):
        writer._count(txn, "c", arms=[(1, time.time())] * 5)
        raise RuntimeError("after counting")

    decide(writer, 3)
    decide(other, 2)  # another writer between two of this one's transactions
    decide(writer, 1)
    with pytest.raises(RuntimeError):
        store.write(failed)  # counted, never committed
    decide(writer, 4)
    _, _, counters = other.stats_snapshot("c")
    assert counters["decisions"] == [0, 10] and counters["pending"] == 10


def test_the_decision_counters_are_stored_as_json_dumps_writes_them(store):
    """The writer formats the counters itself (`repository._encoded`: json.dumps cost it ~16
    us a commit): the stored bytes must stay those json.dumps gives, which every reader (the
    campaign statistics, re-erasure, a Tailor from before) decodes; anything the format does
    not cover (other fields, a float json writes its own way) goes through json.dumps."""
    spec = CampaignSpec("c", variants=(Variant("a"), Variant("b")), channel="push").validated()
    repo = CampaignRepository(store)
    repo.create(Campaign(spec), spec.new_state())
    key = keys.count_key("c")

    def stored():
        raw = store.get("bandit", key)
        assert raw == json.dumps(json.loads(raw)).encode()
        return json.loads(raw)

    now = time.time()
    repo.log_decisions([DecisionRecord(*_row(d, f"u{i}", now))
                        for i, d in enumerate(decision_ids(3, now))])
    assert stored()["decisions"] == [0, 3]
    store.write(lambda txn: repo._count(txn, "c", arms=[(B.HOLDOUT, now)] * 2,
                                        resolved={"arm": B.HOLDOUT, "reward": 0.1}))
    store.write(lambda txn: repo._restart_split(txn, "c", now + 0.5))
    store.write(lambda txn: repo._count(txn, "c", arms=[(0, now + 1.0), (1, now)],
                                        resolved={"arm": B.HOLDOUT, "reward": 0.2}))
    assert stored() == {"decisions": [1, 4], "holdout": 2, "pending": 5, "holdout_rewarded": 2,
                        "holdout_rewards": 0.1 + 0.2, "split_from": [0, 4],
                        "split_at": now + 0.5}
    for c in ({"decisions": [], "holdout": 0, "pending": -1, "holdout_rewarded": 0,
               "holdout_rewards": 1e-07},
              {"decisions": [2 ** 70, 0], "holdout": 1, "pending": 0, "holdout_rewarded": 1,
               "holdout_rewards": 1e22, "split_from": [], "split_at": -0.0},
              {"decisions": [1], "holdout": 0, "pending": 1, "holdout_rewarded": 0,
               "holdout_rewards": float("nan")},
              {"decisions": [1], "holdout": 0, "pending": 1, "holdout_rewarded": 0,
               "holdout_rewards": 0.5, "split_at": float("inf"), "split_from": [1]},
              {"decisions": [1], "holdout": 0, "pending": 1, "holdout_rewarded": 0,
               "holdout_rewards": 0.5, "split_from": [1], "split_at": float("-inf")},
              {"decisions": [1], "holdout": 0, "pending": 1, "holdout_rewarded": 0,
               "holdout_rewards": 0, "later": {"x": [1.5]}}):
        assert repository._encoded(c) == json.dumps(c).encode()

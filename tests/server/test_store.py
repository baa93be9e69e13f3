"""The LMDB store on a real environment: tables, snapshots, growth, the full-map error, key
layouts, and the boundary (nothing outside server/store/ knows LMDB or key bytes)."""
import asyncio
import hashlib
import hmac
import re
import time
from pathlib import Path

import pytest

from server.errors import ResourceExhausted
from server.store import Store, join_key, keys, split_key, tokens


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "lmdb", map_size=1 << 20, max_map_size=8 << 20, sync=False)
    yield s
    s.close()


def test_get_many_keeps_input_order_with_misses(store):
    store.put_many("profiles", [(b"a", b"1"), (b"c", b"3")])
    assert store.get_many("profiles", [b"c", b"b", b"a"]) == [b"3", None, b"1"]
    assert store.get("events", b"a") is None  # tables are separate


def test_prefix_scan_finds_one_users_records_only(store):
    store.put_many("events", [(join_key("u1", "e1"), b"x"), (join_key("u1", "e2"), b"y"),
                              (join_key("u10", "e1"), b"z")])
    keys = [split_key(k) for k, _ in store.scan("events", join_key("u1", ""))]
    assert keys == [["u1", "e1"], ["u1", "e2"]]


def test_holding_says_which_prefixes_some_key_starts_with(store):
    """`Table.holding` (the impression join's check of a batch's users): one seek a prefix,
    in input order, a prefix past the last key or between two keys included."""
    store.put_many("impressions", [(b"k1\x1fu2\x1f1", b"x"), (b"k1\x1fu4\x1f1", b"y")])
    table = store.raw_table("impressions")
    with store.read() as txn:
        assert table.holding(txn, [b"k1\x1fu4\x1f", b"k1\x1fu1\x1f", b"k1\x1fu2\x1f",
                                   b"k1\x1fu3\x1f", b"k1\x1fu9\x1f", b"k1\x1fu"]) == [
            True, False, True, False, False, True]


def test_separator_in_a_key_part_is_refused():
    with pytest.raises(ValueError):
        join_key("bad\x1fid", "x")


def test_map_grows_then_refuses_past_its_ceiling_without_partial_writes(store):
    store.put_many("events", [(f"k{i}".encode(), b"v" * 2000) for i in range(1500)])  # > 1 MiB
    assert store.env.info()["map_size"] > 1 << 20
    with pytest.raises(ResourceExhausted):
        store.put_many("events", [(f"big{i}".encode(), b"v" * 4000) for i in range(5000)])
    assert store.get("events", b"big0") is None
    assert store.get("events", b"k1499") == b"v" * 2000


def test_unknown_table_is_named(store):
    with pytest.raises(KeyError, match="nope"):
        store.get("nope", b"k")


# -- tables -------------------------------------------------------------------------------------

def test_table_operations_within_one_transaction(store):
    t = store.table("events")
    store.write(lambda txn: t.put_many(txn, [(b"a\x1f1", b"x"), (b"a\x1f2", b"y"), (b"b\x1f1", b"z")]))
    with store.read() as txn:
        assert t.get_many(txn, [b"b\x1f1", b"nope", b"a\x1f1"]) == [b"z", None, b"x"]
        assert t.get_many(txn, [b"a\x1f1", b"a\x1f2", b"b\x1f1", b"c", b"a\x1f1"]) == \
            [b"x", b"y", b"z", None, b"x"]  # the cursor path (more than a few keys)
        assert t.present(txn, [b"c", b"a\x1f2"]) == [(b"a\x1f2", b"y")]
        assert list(t.items(txn, b"a\x1f2")) == [(b"a\x1f2", b"y"), (b"b\x1f1", b"z")]
        assert list(t.keys(txn)) == [b"a\x1f1", b"a\x1f2", b"b\x1f1"]
        assert (t.first_key(txn, b"a\x1f3"), t.first_key(txn, b"c")) == (b"b\x1f1", None)
    assert store.write(lambda txn: t.delete_prefix(txn, b"a\x1f")) == 2
    assert store.scan("events") == [(b"b\x1f1", b"z")]
    assert store.write(lambda txn: (t.delete(txn, b"b\x1f1"), t.delete(txn, b"b\x1f1"))) == (True, False)


def test_a_write_that_fails_keeps_nothing(store):
    t = store.table("meta")

    def fn(txn):
        t.put(txn, b"half", b"done")
        raise RuntimeError("stop")
    with pytest.raises(RuntimeError):
        store.write(fn)
    assert store.get("meta", b"half") is None


def test_a_fresh_store_stamps_every_record_kind_with_its_layout(store):
    from server.store import KINDS
    stamps = {k: v for k, v in store.scan("meta", keys.LAYOUT_PREFIX)}
    assert stamps == {keys.layout_key(k.name): str(k.version).encode() for k in KINDS}
    assert store.migrated == {}


# -- key layouts ----------------------------------------------------------------------------------

@pytest.fixture
def store_id_key():
    """A known `store-id` key for this test (the process's one put back after it)."""
    old = tokens._key
    tokens.use_key(b"k" * 32)
    yield b"k" * 32
    tokens.use_key(old)


def _hmac32(key: bytes, domain: bytes, raw: bytes) -> bytes:
    return hmac.new(key, domain + b"\x00" + raw, hashlib.sha256).hexdigest()[:32].encode()


def test_key_layouts_byte_for_byte(store_id_key):
    ann, bo = _hmac32(store_id_key, b"u", b"ann"), _hmac32(store_id_key, b"u", b"bo")
    e1, e2 = _hmac32(store_id_key, b"e", b"e1"), _hmac32(store_id_key, b"e", b"e2")
    assert len(ann) == 32 and b"ann" not in ann
    assert keys.event_key("ann", 1764000000.1239, "e1") == ann + b"\x1f0001764000000123\x1f" + e1
    assert keys.event_keys(["ann", "bo"], [1764000000.1239, -5.0], [b"e1", b"e2"]) == \
        [ann + b"\x1f0001764000000123\x1f" + e1, bo + b"\x1f0000000000000000\x1f" + e2]
    assert keys.dedupe_key("e1") == b"e\x1f" + e1 == keys.dedupe_key_of_event(ann + b"\x1f0001\x1f" + e1)
    assert (keys.feature_key("ann"), keys.profile_meta_key("ann")) == \
        (ann + b"\x1ffeatures", ann + b"\x1fmeta")
    assert keys.due_key(4e9, "d2") == b"\x1fw\x1f0004000000000000\x1fd2"
    assert keys.decision_key("bo", "d2") == bo + b"\x1fd2"
    assert keys.decision_index_key("d2") == b"\x1fd\x1fd2"
    assert keys.count_key("c1") == b"\x1fcount\x1fc1"
    assert (keys.category_key("shoes"), keys.worker_key(42)) == (b"category\x1fshoes", b"worker\x1f42")
    assert keys.worker_pid(keys.worker_key(42)) == 42


async def test_a_bundles_user_tokens_leave_the_event_loop_running():
    """`tokens.user_tokens` hashes a whole bundle's users in a loading thread (`Bundle` load,
    `pseudonyms`, run in an executor): the event loop keeps ticking meanwhile. A kernel call that
    kept the GIL for the whole list stopped it for 0.27-0.53 s at a million users."""
    users = [f"user-{i:09d}" for i in range(1_000_000)]
    loop, gaps = asyncio.get_running_loop(), []
    hashing = loop.run_in_executor(None, tokens.user_tokens, users)
    last = time.perf_counter()
    while not hashing.done():
        await asyncio.sleep(0.001)
        now = time.perf_counter()
        gaps.append(now - last)
        last = now
    assert len(await hashing) == len(users)
    assert max(gaps) < 0.15, f"the event loop waited {max(gaps) * 1e3:.0f} ms"


def test_millisecond_keys_sort_in_time_order():
    stamps = [0.0, 0.0009, 0.001, 9.999, 10.0, 1764000000.5, 4e9]
    parts = [keys.ms_part(ts) for ts in stamps]
    assert parts == sorted(parts) and all(len(p) == keys.MS_DIGITS for p in parts)
    assert [keys.event_parts(keys.event_key("u", ts, "e"))[1] for ts in stamps] == parts
    assert keys.millis_many(stamps) == [keys.millis(ts) for ts in stamps]


def test_impression_keys_of_a_group_are_each_impression_key():
    prefixes = [keys.impression_user_prefix("k1", "ab" * 16), keys.impression_user_prefix("k1", "cd" * 16)]
    stamps, rids = [1764000000.1239, 0.0009], ["r1", "ré"]
    assert keys.impression_keys(prefixes, stamps, rids) == [
        prefixes[0] + b"0001764000000123\x1fr1", prefixes[1] + b"0000000000000000\x1fr\xc3\xa9"] == [
        keys.impression_key(p, ts, r) for p, ts, r in zip(prefixes, stamps, rids)]


# -- the boundary: LMDB and key literals stay in server/store ------------------------------------

ROOT = Path(__file__).resolve().parents[2]


def _sources(*dirs):
    for d in dirs:
        yield from (p for p in (ROOT / d).rglob("*.py") if "_pb2" not in p.name)


def test_only_server_store_imports_lmdb():
    outside = [str(p.relative_to(ROOT)) for p in _sources("server", "loadtests", "training", "clients")
               if re.search(r"^\s*(import lmdb|from lmdb)", p.read_text(), re.MULTILINE)
               and (ROOT / "server" / "store") not in p.parents]
    assert outside == []


def test_the_separator_and_the_millisecond_format_are_spelled_once():
    spelled = {}
    for p in _sources("server", "loadtests"):
        text = p.read_text()
        for literal in (r"\x1f", "016d", r"\x1F"):
            if literal in text:
                spelled.setdefault(literal, []).append(str(p.relative_to(ROOT)))
    assert spelled == {r"\x1f": ["server/store/keys.py"], "016d": ["server/store/keys.py"]}


@pytest.mark.parametrize("prefix, expected", [
    (b"a\x1f", [b"a\x1f3", b"a\x1f2"]),     # followed by other keys
    (b"b\x1f", [b"b\x1f\xff\xff", b"b\x1f1"]),  # the table's last keys
    (b"ab", []), (b"c", []),
    (b"\xff", [b"\xff\xff"]),                 # no key sorts after the prefix's keys
])
def test_scan_prefix_last_walks_back_from_the_prefixs_end(store, prefix, expected):
    t = store.table("events")
    store.write(lambda txn: t.put_many(txn, [(k, k) for k in [
        b"a\x1f1", b"a\x1f2", b"a\x1f3", b"a\x20", b"b\x1f1", b"b\x1f\xff\xff"]]))
    store.write(lambda txn: t.put(txn, b"\xff\xff", b"x"))
    with store.read() as txn:
        assert [k for k, _ in t.scan_prefix_last(txn, prefix, 2)] == expected
        assert t.scan_prefix_last(txn, b"a\x1f", 5) == [(k, k) for k in (b"a\x1f3", b"a\x1f2", b"a\x1f1")]

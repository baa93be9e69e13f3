"""The remembered request ids (`campaigns.requests.RequestIds`): one entry an id, in buckets as
wide as the window; a look-up finds an entry within the window in this bucket or the last;
each new entry deletes up to `EXPIRE_PER_ENTRY` entries of older buckets, oldest first; the
pre-bucket layout's entries still within the window are moved into their buckets once the
campaigns writer has started, the rest deleted with every legacy expiry key."""
import hashlib
import json

import pytest

from server.campaigns.repository import writer_functions
from server.campaigns.requests import (
    DIGEST_CHARS,
    EXPIRE_PER_ENTRY,
    RequestDigests,
    RequestIds,
    request_digest,
)
from server.store import keys, tokens

WINDOW = 60.0
T0 = 1764000000.0  # a multiple of 60 s: a bucket starts here


@pytest.fixture
def store(sealed_store):
    return sealed_store


def _digest(i: int) -> bytes:
    return b"%032x" % i


def _asked(i: int) -> bytes:
    """A request's two digests (`request_digest`): a keyed one of its own, then `_digest(i)`,
    the unkeyed one an entry from before digests were keyed is named by."""
    return b"%032x" % (10 ** 9 + i) + _digest(i)


def _old_digest(*parts: str) -> bytes:
    """A request id's digest as a Tailor from before digests were keyed computed it."""
    text = "".join(f"{len(p)}:{p};" for p in parts)
    return hashlib.blake2b(text.encode(), digest_size=16, person=b"tailor-request").hexdigest().encode()


def _remembered(store) -> list[tuple[int, bytes]]:
    """(bucket start in s from T0, digest) of every entry, in key order."""
    with store.read() as txn:
        found = [k[len(keys.REQUEST_PREFIX):] for k, _ in
                 store.table("decisions").scan_prefix(txn, keys.REQUEST_PREFIX)]
    return [(int(k[:keys.MS_DIGITS]) // 1000 - int(T0), k[keys.MS_DIGITS:]) for k in found]


def test_an_entry_is_found_within_the_window_in_its_bucket_or_the_next(store):
    ids = RequestIds(store.table("decisions"), WINDOW)
    store.write(lambda txn: ids.remember(txn, _digest(1), "d1", T0 + 59.0))
    assert _remembered(store) == [(0, _digest(1))]
    with store.read() as txn:
        assert ids.find(txn, _digest(1), T0 + 59.0)[1]["d"] == "d1"
        assert ids.find(txn, _digest(1), T0 + 119.0)[1]["d"] == "d1"  # next bucket, 60 s on
        assert ids.find(txn, _digest(1), T0 + 119.5) is None  # past the window
        assert ids.find(txn, _digest(2), T0 + 60.0) is None
    # made again in the next bucket: the newer entry is the one found
    store.write(lambda txn: ids.remember(txn, _digest(1), "d2", T0 + 70.0))
    with store.read() as txn:
        assert ids.find(txn, _digest(1), T0 + 71.0)[1]["d"] == "d2"


def test_each_new_entry_deletes_the_oldest_expired_buckets_entries(store):
    ids = RequestIds(store.table("decisions"), WINDOW)
    store.write(lambda txn: [ids.remember(txn, _digest(i), f"d{i}", T0 + i) for i in range(12)])
    store.write(lambda txn: ids.remember(txn, _digest(20), "d20", T0 + 61))
    # bucket 0 is the last bucket at T0 + 61: still read, nothing expired
    assert [d for _, d in _remembered(store)] == [_digest(i) for i in range(12)] + [_digest(20)]
    # at T0 + 125 bucket 0 is two buckets back: each new entry deletes 8 of its entries
    store.write(lambda txn: ids.remember(txn, _digest(21), "d21", T0 + 125))
    assert _remembered(store) == [(0, _digest(i)) for i in range(EXPIRE_PER_ENTRY, 12)] + [
        (60, _digest(20)), (120, _digest(21))]
    store.write(lambda txn: ids.remember(txn, _digest(22), "d22", T0 + 126))
    assert _remembered(store) == [(60, _digest(20)), (120, _digest(21)), (120, _digest(22))]


def test_a_released_entry_is_forgotten_unless_a_repeat_was_answered_it(store):
    ids = RequestIds(store.table("decisions"), WINDOW)
    store.write(lambda txn: [ids.remember(txn, _digest(i), f"d{i}", T0 + 50) for i in (1, 2)])
    with store.read() as txn:
        found = ids.find(txn, _digest(2), T0 + 65)
    store.write(lambda txn: ids.repeated(txn, found))
    assert store.write(lambda txn: ids.release(txn, _digest(1), "other", T0 + 65)) is True
    assert store.write(lambda txn: ids.release(txn, _digest(1), "d1", T0 + 65)) is True
    assert store.write(lambda txn: ids.release(txn, _digest(2), "d2", T0 + 65)) is False
    assert _remembered(store) == [(0, _digest(2))]


def test_the_writer_moves_legacy_entries_within_the_window_into_buckets(store, monkeypatch):
    monkeypatch.setenv("TAILOR_LIMITS__REQUEST_ID_WINDOW_SECONDS", "3600")
    import time
    now = time.time()
    table = store.table("decisions")
    legacy = {1: now - 10.0, 2: now - 7200.0, 3: now - 3000.0}  # 2 is past the window

    def write_legacy(txn):
        for i, t in legacy.items():
            table.put(txn, keys.LEGACY_REQUEST_PREFIX + _digest(i),
                      json.dumps({"d": f"d{i}", "t": t, "r": 1 if i == 3 else 0}).encode())
            table.put(txn, keys.LEGACY_REQUEST_EXPIRY_PREFIX + keys.ms_part(t) + _digest(i), b"")
    store.write(write_legacy)
    writer_functions(store)
    _converted(store)
    ids = RequestIds(table, 3600.0)
    with store.read() as txn:
        assert ids.find(txn, _asked(1), now)[1] == {"d": "d1", "t": legacy[1], "r": 0}
        assert ids.find(txn, _asked(3), now)[1] == {"d": "d3", "t": legacy[3], "r": 1}
        assert ids.find(txn, _asked(2), now) is None
        assert list(table.scan_prefix(txn, keys.LEGACY_REQUEST_PREFIX)) == []
        assert list(table.scan_prefix(txn, keys.LEGACY_REQUEST_EXPIRY_PREFIX)) == []
    assert len(_remembered(store)) == 2


def _legacy_left(store) -> int:
    with store.read() as txn:
        return sum(len(store.table("decisions").scan_prefix(txn, prefix)) for prefix
                   in (keys.LEGACY_REQUEST_PREFIX, keys.LEGACY_REQUEST_EXPIRY_PREFIX))


def _converted(store, timeout: float = 60.0) -> None:
    """Wait until the writer's background conversion has left no legacy key."""
    import time
    deadline = time.monotonic() + timeout
    while _legacy_left(store) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _legacy_left(store) == 0


def test_the_writer_starts_before_a_large_legacy_conversion_and_answers_from_it_meanwhile(
        store, monkeypatch):
    """The legacy conversion ran before the campaigns writer reported ready, ~18 us an entry:
    a store that remembered more than ~6M ids (about 1,800 decisions a second with ids at the
    default hour) outlasted the writer's 120 s start and failed the server's start. The writer
    starts at once and converts in the background; meanwhile a look-up (the writer's, or a
    worker's delivery claim) still finds an entry not yet moved: a repeat gets its decision
    and a delivered message is not handed over again."""
    import time
    monkeypatch.setenv("TAILOR_LIMITS__REQUEST_ID_WINDOW_SECONDS", "3600")
    now, n = time.time(), 30_000
    table = store.table("decisions")

    def write_legacy(txn):
        for i in range(n):
            entry = {"d": f"d{i}", "t": now - 60.0 + i / n, "r": 0}
            if i == n - 1:  # converted last (key order): a delivered ComposeMessage's
                entry["x"] = {"s": "sent"}
            table.put(txn, keys.LEGACY_REQUEST_PREFIX + _digest(i), json.dumps(entry).encode())
            table.put(txn, keys.LEGACY_REQUEST_EXPIRY_PREFIX + keys.ms_part(entry["t"]) + _digest(i),
                      b"")
    store.write(write_legacy)
    writer_functions(store)
    assert _legacy_left(store) > n  # started with most of them still to move
    ids = RequestIds(table, 3600.0)  # a worker's: reads the legacy keys while there are some
    with store.read() as txn:
        assert ids.find(txn, _asked(n - 2), time.time())[1]["d"] == f"d{n - 2}"
    assert store.write(lambda txn: ids.claim_delivery(txn, _asked(n - 1), f"d{n - 1}",
                                                      time.time() + 30, time.time())) == {"s": "sent"}
    _converted(store)
    assert len(_remembered(store)) == n
    with store.read() as txn:
        assert ids.find(txn, _asked(n - 1), time.time())[1]["x"] == {"s": "sent"}
        assert ids.find(txn, _asked(n), time.time()) is None
    assert ids._legacy is False  # none left: look-ups read the buckets alone again


def test_an_entry_is_named_by_a_digest_keyed_with_the_stores_key(store):
    """Before, an entry's key was an unkeyed blake2b of (caller, campaign, user, request id):
    anyone with the store file could test guessed user ids against it. Its digest is now keyed
    with the store's `store-id` key: not the unkeyed one, and another key gives another."""
    ids = RequestIds(store.table("decisions"), WINDOW)
    parts = ("app", "c1", "ann", "r-1")
    asked = request_digest(*parts)
    store.write(lambda txn: ids.remember(txn, asked, "d1", T0))
    [(_, stored)] = _remembered(store)
    assert len(stored) == 32 and stored != _old_digest(*parts)
    before = tokens._key
    tokens.use_key(b"another store's key")
    try:
        assert request_digest(*parts)[:32] != stored
    finally:
        tokens.use_key(before)
    assert request_digest(*parts)[:32] == stored


def test_an_entry_from_before_digests_were_keyed_is_found_for_one_window(store):
    """An entry a Tailor from before keyed digests remembered (by the unkeyed digest) answers a
    repeat made after the upgrade, until one window since the process started has passed:
    it was made before then, so it has expired by then too; the repeat is noted on it."""
    ids = RequestIds(store.table("decisions"), WINDOW)
    parts = ("app", "c1", "ann", "r-1")
    now = T0 + 30.0
    store.write(lambda txn: store.table("decisions").put(
        txn, keys.request_key(int(T0 * 1000), _old_digest(*parts)),
        json.dumps({"d": "d-old", "t": now - 10.0, "r": 0}).encode()))
    with store.read() as txn:
        found = ids.find(txn, request_digest(*parts), now)
        assert found[1]["d"] == "d-old"
        assert ids.find(txn, request_digest("app", "c1", "bob", "r-1"), now) is None
    store.write(lambda txn: ids.repeated(txn, found))
    assert _remembered(store) == [(0, _old_digest(*parts))]  # marked in place, not copied
    ids._unkeyed_until = now - 1.0  # a window since the start has passed: no longer read
    with store.read() as txn:
        assert ids.find(txn, request_digest(*parts), now) is None


def test_a_servers_digests_leave_the_unkeyed_one_out_once_a_window_has_passed(store):
    """The unkeyed digest is read only in the first window after the start (the test above):
    computed after it, it cost each request id about as much again as the keyed one for
    nothing. A server's digests (`RequestDigests`) carry both until then, the keyed one alone
    after, and that one still finds the entry it named."""
    ids = RequestIds(store.table("decisions"), WINDOW)
    digests = RequestDigests(WINDOW, started=T0)
    parts = ("app", "c1", "ann", "r-1")
    assert digests(*parts, now=T0 + WINDOW) == request_digest(*parts)
    later = digests(*parts, now=T0 + WINDOW + 1.0)
    assert later == request_digest(*parts)[:DIGEST_CHARS]
    store.write(lambda txn: ids.remember(txn, request_digest(*parts), "d1", T0 + WINDOW))
    with store.read() as txn:
        assert ids.find(txn, later, T0 + WINDOW + 1.0)[1]["d"] == "d1"

"""The feedback join across workers: an answer still buffered in another worker is found by
the retry of its click (real LMDB store shared by two logs, as two workers share it)."""
import time

import numpy as np
import pytest

from contract.items import item_code
from server.config import Settings
from server.impressions.handler import join_retry_seconds
from server.impressions.join import ImpressionJoin
from server.impressions.log import ImpressionLog
from server.profiles.events import TrackedEvent
from server.recommend.pipeline import RecQuery, RecResult
from server.security.secrets import Keyring
from server.store import Store

ITEMS = [f"i{n}" for n in range(20)]


class _Bundle:
    """What the log reads of a bundle: its version and item codes."""

    version = "v1"
    item_codes = np.array([item_code(i) for i in ITEMS], np.int64)


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "store", sync=False)
    yield s
    s.close()


def _answer(log: ImpressionLog, request_id: str, user: str) -> None:
    rows = np.arange(5)
    log.record(request_id, RecQuery(user, 5, channel="web"),
               RecResult(rows, np.linspace(1, 0, 5, dtype=np.float32), rows.astype(np.float32),
                         False, _Bundle()))


def _click(user: str, request_id: str, item: str) -> TrackedEvent:
    return TrackedEvent(f"c-{request_id}", user, "click", "web", "", item, 0.0, time.time(),
                        request_id=request_id)


async def test_a_click_on_an_answer_another_worker_still_buffers_joins_on_the_retry(store):
    ring = Keyring.generate("user-id")
    shown_by, clicked_at = ImpressionLog(store, ring), ImpressionLog(store, ring)
    join = ImpressionJoin(clicked_at, retry_s=0.2)
    _answer(shown_by, "r1", "ann")  # buffered in the first worker
    await join.on_events([_click("ann", "r1", ITEMS[2])])
    assert clicked_at.of_user("ann") == []  # not written yet
    shown_by.flush()  # the first worker's flush
    ((rid, imp),) = clicked_at.of_user("ann")
    assert rid == "r1" and imp.first_click == -1
    (retry,) = join._retries
    await retry  # after retry_s; waited for, not slept past (a loaded machine may be slower)
    ((_, imp),) = clicked_at.of_user("ann")
    assert imp.first_click == 2 and imp.clicks == 1


async def test_one_worker_never_retries(store):
    ring = Keyring.generate("user-id")
    log = ImpressionLog(store, ring)
    join = ImpressionJoin(log)  # retry_s 0: the join writes this worker's buffer first
    _answer(log, "r1", "bo")
    await join.on_events([_click("bo", "r1", ITEMS[0]), _click("bo", "r9", ITEMS[0])])
    assert not join._retries
    ((_, imp),) = log.of_user("bo")
    assert imp.first_click == 0 and imp.clicks == 1


def test_retries_wait_two_flush_intervals_with_several_workers():
    assert join_retry_seconds(Settings(workers=1)) == 0.0
    assert join_retry_seconds(Settings(workers=2, impression_flush_seconds=2.0)) == 4.0


async def test_a_join_in_the_batchs_write_leaves_the_unmatched_in_a_new_entry_for_the_retry(store):
    """`in_write` (the ingestion's transaction joins its clicks): the click on an answer this
    worker wrote joins at once; the one on an answer the other worker still buffers goes into
    the batch's entry, which the retry claims and joins once that worker has flushed."""
    from server.store import keys, outbox
    ring = Keyring.generate("user-id")
    here, there = ImpressionLog(store, ring), ImpressionLog(store, ring)
    join = ImpressionJoin(here, retry_s=0.2)
    _answer(here, "r1", "ann")
    _answer(there, "r2", "ann")  # buffered in the other worker
    here.flush()  # `Impressions.before_write`
    clicks = [_click("ann", "r1", ITEMS[1]), _click("ann", "r2", ITEMS[3])]
    pairs = [(ev, keys.event_key(ev.user_id, ev.timestamp, ev.event_id)) for ev in clicks]
    entry = keys.outbox_key(keys.millis(time.time()), outbox.batch_id(), b"impressions")
    joined, unmatched = store.write(lambda txn: join.in_write(txn, pairs, entry))
    assert (joined, unmatched) == (1, pairs[1:])
    box = store.table("outbox")
    with store.read() as txn:
        assert outbox.parsed(box.get(txn, entry)) == (0, [pairs[1][1]])
    join.after_write(joined, unmatched, entry)
    there.flush()
    (retry,) = join._retries
    await retry
    shown = dict(here.of_user("ann"))
    assert (shown["r1"].first_click, shown["r2"].first_click) == (1, 3)
    assert (shown["r1"].clicks, shown["r2"].clicks) == (1, 1)
    with store.read() as txn:
        assert box.get(txn, entry) is None


def test_a_join_in_the_write_that_cannot_read_writes_nothing(store, monkeypatch):
    """A join that fails in the batch's write (`in_write` None) writes nothing there: the
    caller stores the batch's entry and the join runs after the commit, once."""
    from server.store import keys
    ring = Keyring.generate("user-id")
    log = ImpressionLog(store, ring)
    join = ImpressionJoin(log)
    _answer(log, "r1", "ann")
    log.flush()

    def unreadable(*a):
        raise ValueError("impression record: layout version 9")
    monkeypatch.setattr(ImpressionJoin, "_matched", unreadable)
    ev = _click("ann", "r1", ITEMS[1])
    pair = (ev, keys.event_key(ev.user_id, ev.timestamp, ev.event_id))
    assert store.write(lambda txn: join.in_write(txn, [pair], b"entry")) is None
    monkeypatch.undo()
    ((_, imp),) = log.of_user("ann")
    assert imp.clicks == 0

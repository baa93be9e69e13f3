"""The click join reads a bounded number of a user's impressions, newest first: a shared id
such as "anonymous" holds an answer every few seconds for the whole retention, and the join
read every one of them (a request id's), or every one of the attribution window's, inside the
store's one write lock (0.3-1.0 s per click batch for 100k impressions, every writer of the
server waiting). Real LMDB store, real log and join."""
import time

import numpy as np
import pytest
from pydantic import ValidationError

from contract.items import item_code
from server.impressions.join import ImpressionJoin
from server.impressions.log import ImpressionLog
from server.limits import Limits
from server.profiles.events import TrackedEvent
from server.recommend.pipeline import RecQuery, RecResult
from server.security.secrets import Keyring
from server.store import Store
from server.store.table import Table

ITEMS = [f"i{n}" for n in range(100)]


class _Bundle:
    version = "v1"
    item_codes = np.array([item_code(i) for i in ITEMS], np.int64)


@pytest.fixture
def log(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    yield ImpressionLog(store, Keyring.generate("user-id"))
    store.close()


def _show(log: ImpressionLog, n: int, user: str, start: float) -> None:
    """n answers to `user`, one a second from `start`: answer j shows item j alone."""
    for j in range(n):
        rows = np.array([j])
        log.record(f"r{j}", RecQuery(user, 1, channel="web"),
                   RecResult(rows, np.ones(1, np.float32), rows.astype(np.float32), False,
                             _Bundle()), at=start + j)
    log.flush()


def _click(user: str, item: str, request_id: str = "", at: float = 0.0) -> TrackedEvent:
    return TrackedEvent(f"c-{item}-{request_id}", user, "click", "web", "", item, 0.0,
                        at or time.time(), request_id=request_id)


def _clicked(log: ImpressionLog, user: str) -> list[str]:
    return sorted(rid for rid, imp in log.of_user(user) if imp.clicks)


def test_a_click_join_reads_only_the_users_newest_impressions(log):
    start = time.time() - 3600
    _show(log, 50, "anonymous", start)
    join = ImpressionJoin(log, window_s=86400.0, most=20)
    left = join.join([_click("anonymous", ITEMS[45], "r45"), _click("anonymous", ITEMS[5], "r5"),
                      _click("anonymous", ITEMS[40]), _click("anonymous", ITEMS[10])])
    assert [(ev.item_id, ev.request_id) for ev in left] == [(ITEMS[5], "r5"), (ITEMS[10], "")]
    assert _clicked(log, "anonymous") == ["r40", "r45"]


def test_without_request_id_the_latest_impression_before_the_click_still_joins(log):
    """Walked back from the click's time: answers shown after it are not read as the newest."""
    start = time.time() - 3600
    _show(log, 50, "u", start)
    join = ImpressionJoin(log, window_s=86400.0, most=5)
    assert join.join([_click("u", ITEMS[8], at=start + 10.5)]) == []  # 8, 9, 10 before it
    assert join.join([_click("u", ITEMS[2], at=start + 10.5)]) != []  # 9 answers back
    assert _clicked(log, "u") == ["r8"]


def test_the_bound_is_a_limit_and_has_one():
    assert Limits().join_impressions == 10_000
    for refused in (99, 200_001):
        with pytest.raises(ValidationError, match="join_impressions"):
            Limits(join_impressions=refused)


def test_an_erasure_deletes_a_heavy_users_impressions_before_its_last_transaction(log):
    """The erasure's last transaction (tombstone, shred, every eraser) deleted every impression
    of the user at once: 1.5M impressions of "anonymous" (80 days of a shared id) held the
    store's one write lock 7 s, every writer of the server waiting. They go first,
    `ERASE_CHUNK` per transaction, as the user's events do; the last transaction deletes only
    those written since."""
    from server.profiles.repository import ProfileRepository
    from server.profiles.schema import ProfileSchema
    _show(log, 25, "anonymous", time.time() - 3600)
    _show(log, 3, "kept", time.time() - 3600)
    seen_last = []

    class LastTransaction:  # an eraser: what the last transaction still finds of the user
        def erase_user(self, txn, user_id):
            prefix = log.user_prefix(user_id)
            seen_last.append(sum(1 for _ in log.store.table("impressions").keys_back(txn, prefix)))
            return 0
    log.ERASE_CHUNK = 10
    repo = ProfileRepository(log.store, ProfileSchema().layout())
    assert repo.delete_user("anonymous", [LastTransaction(), log]) == 25
    assert seen_last == [0]
    assert log.of_user("anonymous") == [] and len(log.of_user("kept")) == 3


class _Counting(Table):
    """The real impressions table, counting the records a join reads (keys walked or values)."""

    __slots__ = ("reads",)

    def __init__(self, table: Table):
        super().__init__(table.name, table.db)
        self.reads = 0

    def get(self, txn, key):
        self.reads += 1
        return super().get(txn, key)

    def keys_back(self, txn, prefix, before=None):
        for key in super().keys_back(txn, prefix, before):
            self.reads += 1
            yield key

    def walk_back(self, txn, prefix, before=None):
        for pair in super().walk_back(txn, prefix, before):
            self.reads += 1
            yield pair


def test_a_batch_of_clicks_reads_at_most_join_impressions_records_per_user(log):
    """The bound was per event: one TrackEvents batch of 300 clicks of "anonymous" on items its
    answers did not show read 10,000 records per click inside the write lock (20 s, every writer
    of the server waiting). One walk per user now serves every event of the batch."""
    start = time.time() - 3600
    _show(log, 60, "anonymous", start)
    _show(log, 60, "other", start)
    join = ImpressionJoin(log, window_s=86400.0, most=100)
    join._t = counting = _Counting(join._t)
    misses = [_click("anonymous", f"not-shown-{n}") for n in range(30)]
    assert len(join.join(misses + [_click("other", f"not-shown-{n}") for n in range(30)])) == 60
    assert counting.reads <= 2 * 60  # each user's 60 records once; 30 x 60 each before
    counting.reads = 0
    named = [_click("anonymous", ITEMS[j], f"r{j}") for j in range(30, 60)]
    assert join.join(named) == [] and counting.reads <= 60 + 30
    assert _clicked(log, "anonymous") == [f"r{j}" for j in range(30, 60)]


def test_events_of_one_batch_join_as_they_did_one_at_a_time(log):
    """Same answers as before the per-user walk: the latest showing before each click's own
    time, and two clicks on one answer both counted (the second sees the first's outcome)."""
    start = time.time() - 3600
    _show(log, 20, "u", start)
    _show(log, 1, "u", start + 30)  # answer 0 again ("r0" at start + 30: item 0)
    join = ImpressionJoin(log, window_s=86400.0, most=100)
    left = join.join([_click("u", ITEMS[0], at=start + 10.5), _click("u", ITEMS[0], at=start + 40),
                      _click("u", ITEMS[5], "r5"), _click("u", ITEMS[6], "r5"),
                      _click("u", ITEMS[19], at=start + 10.5)])  # shown after that click
    assert [ev.item_id for ev in left] == [ITEMS[19]]
    assert sorted((rid, imp.clicks) for rid, imp in log.of_user("u") if imp.clicks) == [
        ("r0", 1), ("r0", 1), ("r5", 2)]

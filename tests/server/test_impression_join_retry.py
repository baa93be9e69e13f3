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

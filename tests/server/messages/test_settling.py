"""`settling.Settler` on a real store: the lanes' settled records go in shared transactions, and
each lane returns only once its own record is on disk (what makes a restart send nothing twice
that arrived; the end-to-end kill -9 runs are in test_send_resume.py)."""
import asyncio
import threading
import time

import pytest

from server.messages.sends import FAILED, SENT, SendRecords
from server.messages.settling import Settler
from server.store import Store

USERS = [f"u{i}" for i in range(6)]


@pytest.fixture
def records(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    records = SendRecords(store)
    records.create("s1", "mail", USERS, {}, {}, owner=1)
    yield records
    store.close()


def settled(records, r):
    r.state, r.sent_at = SENT, time.time()
    return r


def on_disk(records) -> dict[str, str]:
    return {r.user: r.state for r in records.recipients("s1")}


async def test_records_settled_together_share_one_transaction(records):
    groups = []

    def write(done):
        groups.append([r.user for r in done])
        records.update("s1", done)
    settler = Settler(write)
    todo = records.recipients("s1")[:4]
    await asyncio.gather(*(settler.settle(settled(records, r)) for r in todo))
    assert groups == [USERS[:4]] and (settler.writes, settler.settled) == (1, 4)
    assert on_disk(records) == {u: SENT if u in USERS[:4] else "pending" for u in USERS}
    assert records.job("s1")["sent"] == 4


async def test_a_record_settled_during_a_write_waits_for_the_next_one(records):
    groups, release = [], threading.Event()

    def write(done):
        groups.append([r.user for r in done])
        if len(groups) == 1:
            assert release.wait(10)
        records.update("s1", done)
    settler = Settler(write)
    todo = records.recipients("s1")
    first = asyncio.create_task(settler.settle(settled(records, todo[0])))
    while not groups:  # the first write is on its way (blocked in its thread)
        await asyncio.sleep(0.001)
    later = [asyncio.create_task(settler.settle(settled(records, r))) for r in todo[1:4]]
    await asyncio.sleep(0.05)
    assert not first.done() and not any(t.done() for t in later)
    assert on_disk(records)["u0"] == "pending"  # nobody returned before its commit
    release.set()
    await first
    await asyncio.gather(*later)
    assert groups == [["u0"], ["u1", "u2", "u3"]]
    assert on_disk(records) == {u: SENT if u in USERS[:4] else "pending" for u in USERS}


async def test_a_failed_write_raises_in_every_lane_of_its_group_and_the_next_group_goes(records):
    calls = []

    def write(done):
        calls.append(len(done))
        if len(calls) == 1:
            raise OSError("disk gone")
        records.update("s1", done)
    settler = Settler(write)
    todo = records.recipients("s1")
    got = await asyncio.gather(*(settler.settle(settled(records, r)) for r in todo[:2]),
                               return_exceptions=True)
    assert [type(g) for g in got] == [OSError, OSError]
    todo[2].state, todo[2].reason = FAILED, "smtp 550"
    await settler.settle(todo[2])
    assert calls == [2, 1] and on_disk(records)["u2"] == FAILED
    assert records.job("s1")[FAILED] == {"smtp 550": 1} and records.job("s1")["sent"] == 0

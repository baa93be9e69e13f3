"""`ImpressionLog.run` against a real LMDB store: a group encoded on the event loop in bounded
slices with the loop serving in between, its counters those of the whole group, and nothing lost
when the log stops or a join flushes while a group is being encoded."""
import asyncio
import threading

import numpy as np
import pytest

from server.impressions import ImpressionLog
from server.impressions.records import C
from server.recommend.pipeline import RecQuery, RecResult
from server.security.secrets import Keyring
from server.store import Store, keys


class Served:
    """What the log reads of a bundle: its version and catalog."""

    def __init__(self, version: str, item_ids: list[str]):
        self.version, self.items = version, {"item_ids": np.array(item_ids)}


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "lmdb", map_size=1 << 22, max_map_size=1 << 26, sync=False)
    yield s
    s.close()


@pytest.fixture
def bundle():
    return Served("v1", [f"item{i}" for i in range(50)])


def answer(log, bundle, i, cold=False):
    rows = np.array([i % 50, (i + 1) % 50, (i + 2) % 50])
    log.record(f"req{i}", RecQuery(f"user{i % 7}", 3, channel="web"),
               RecResult(rows, np.array([0.9, 0.5, 0.1], np.float32), rows.astype(np.float32),
                         cold, bundle))


def spy_slices(log, events: list, started: asyncio.Event | None = None):
    """Record (thread, answers) of every `_encoded` call in `events`."""
    encoded = log._encoded

    def wrapped(part):
        events.append(("slice", threading.get_ident(), len(part)))
        if started is not None:
            started.set()
        return encoded(part)
    log._encoded = wrapped


def stored(log) -> list:
    return list(log.export())


async def ticker(events: list):
    while True:
        events.append(("tick",))
        await asyncio.sleep(0)


async def test_run_encodes_a_group_on_the_loop_in_slices_with_the_loop_serving_between(store,
                                                                                       bundle):
    log = ImpressionLog(store, Keyring.generate("user-id"), flush_seconds=0.05, slice_records=8)
    events: list = []
    spy_slices(log, events)
    for i in range(30):
        answer(log, bundle, i, cold=i < 3)
    shown = [g[0] for g in log._buf]
    tick = asyncio.create_task(ticker(events))
    run = asyncio.create_task(log.run())
    while len(stored(log)) < 30:
        await asyncio.sleep(0.02)
    run.cancel(), tick.cancel()
    slices = [e for e in events if e[0] == "slice"]
    assert [n for _, _, n in slices] == [8, 8, 8, 6]
    assert {t for _, t, _ in slices} == {threading.get_ident()}  # the event loop's thread
    after = [events[events.index(s) + 1][0] for s in slices[:-1]]
    assert after == ["tick"] * 3  # the loop ran others between slices
    with store.read() as txn:
        raw = store.table("impressions").get(txn, keys.impression_count_key("v1", "web"))
    counters = np.frombuffer(raw, np.float64)
    assert (counters[C.IMPRESSIONS], counters[C.COLD_START]) == (30, 3)
    assert (counters[C.FIRST], counters[C.LAST]) == (min(shown), max(shown))


async def test_a_log_stopped_while_encoding_a_group_loses_none_of_it(store, bundle):
    log = ImpressionLog(store, Keyring.generate("user-id"), flush_seconds=0.01, slice_records=4)
    started = asyncio.Event()
    spy_slices(log, [], started)
    for i in range(40):
        answer(log, bundle, i)
    run = asyncio.create_task(log.run())
    await started.wait()  # first slice encoded, the rest not yet
    run.cancel()
    await log.close()
    assert sorted(rid for _, rid, _ in stored(log)) == sorted(f"req{i}" for i in range(40))


async def test_a_join_flushing_while_a_group_is_encoded_finds_it_written(store, bundle):
    log = ImpressionLog(store, Keyring.generate("user-id"), flush_seconds=0.01, slice_records=4)
    started = asyncio.Event()
    spy_slices(log, [], started)
    for i in range(40):
        answer(log, bundle, i)
    run = asyncio.create_task(log.run())
    await started.wait()
    answer(log, bundle, 40)  # buffered after the group was taken
    await asyncio.to_thread(log.flush)  # what `ImpressionJoin.join` does first
    assert len(stored(log)) == 41
    run.cancel()
    await log.close()


async def test_an_export_flushing_on_the_loop_between_slices_writes_the_group_once(store, bundle):
    """ExportImpressions flushes on the event loop itself: it takes the group over (no wait
    for a lock the loop would have to release) and `run` drops it: counted once."""
    log = ImpressionLog(store, Keyring.generate("user-id"), flush_seconds=0.01, slice_records=4)
    started = asyncio.Event()
    spy_slices(log, [], started)
    for i in range(40):
        answer(log, bundle, i)
    run = asyncio.create_task(log.run())
    await started.wait()
    assert log.flush() == 40
    await asyncio.sleep(0.1)  # `run` goes on: finds its group taken
    run.cancel()
    await log.close()
    with store.read() as txn:
        raw = store.table("impressions").get(txn, keys.impression_count_key("v1", "web"))
    assert np.frombuffer(raw, np.float64)[C.IMPRESSIONS] == 40 and len(stored(log)) == 40

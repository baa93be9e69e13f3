import asyncio
import threading
from concurrent.futures.thread import BrokenThreadPool

import pytest

from server.batching import AdaptiveBatcher, BatcherClosed, ThreadRunner


def _batcher(fn, *, concurrency=2, thread_init=None, **limits) -> AdaptiveBatcher:
    """A batcher over a pool of `concurrency` threads running `fn`."""
    return AdaptiveBatcher(ThreadRunner(fn, concurrency=concurrency, name="test",
                                        thread_init=thread_init), **limits)


class _OnTheLoop:
    """A runner of one slot that runs `fn` and answers at the loop's next turn: the batcher's
    decisions alone. Behind a thread, what queues while a batch runs depends on when a loaded
    machine wakes that thread (batches of 3 to 55 calls 5 ms apart, which the tests of lingering
    read as load); here a batch has always ended before the next call of a test arrives."""
    concurrency = 1
    name = "test"

    def __init__(self, fn):
        self.fn = fn

    def start(self, loop, queries, done) -> None:
        loop.call_soon(done, self.fn(queries))

    async def close(self) -> None:
        pass


async def _paced(batcher, n: int, step: float) -> list:
    """`n` calls, each queued `step` s or more after the one before, in a loop turn of its own:
    a loop that stood still (a loaded machine) delays the next call, never bunches them."""
    calls = []
    for i in range(n):
        if i:
            await asyncio.sleep(step)
        calls.append(batcher.enqueue(i))
    return await asyncio.gather(*calls)


async def _timed(batcher, n: int, step: float) -> list:
    """`n` calls queued at `step` s apart by the loop's timers: a loop that stood still runs
    them late, together, but always before a timer of the batcher's set later than theirs (a
    wait for company that began with the first call), which a sleeping task's call could miss."""
    loop, calls = asyncio.get_running_loop(), []
    for i in range(n):
        loop.call_later(step * i, lambda i=i: calls.append(batcher.enqueue(i)))
    await asyncio.sleep(step * n)
    while len(calls) < n:  # the timers ran late
        await asyncio.sleep(step)
    return await asyncio.gather(*calls)


async def test_concurrent_calls_share_batches():
    sizes = []
    gate = threading.Event()

    def fn(batch):
        sizes.append(len(batch))
        gate.wait(1.0)  # hold the first batch so the rest pile up behind it
        return [q * 2 for q in batch]

    batcher = _batcher(fn, max_size=16, max_wait=0.0, concurrency=1)
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(40)]
    await asyncio.sleep(0.05)
    gate.set()
    assert await asyncio.gather(*calls) == [i * 2 for i in range(40)]
    assert sum(sizes) == 40 and max(sizes) == 16 and len(sizes) < 40
    await batcher.close()


async def test_max_wait_groups_calls_arriving_close_together():
    sizes = []
    batcher = _batcher(lambda b: sizes.append(len(b)) or list(b), max_size=64,
                       max_wait=0.05, concurrency=1)
    assert await _timed(batcher, 5, 0.005) == list(range(5))
    assert sizes == [5]
    await batcher.close()


async def test_linger_waits_for_company_only_while_batches_have_some():
    sizes = []
    batcher = AdaptiveBatcher(_OnTheLoop(lambda b: sizes.append(len(b)) or list(b)),
                              max_size=64, max_wait=0.0, linger=0.08, linger_from=3)

    # quiet: calls 10 ms apart, no batch has had company, so none waits for any
    assert await _paced(batcher, 3, 0.01) == [0, 1, 2]
    assert max(sizes) < 3
    # one burst of 8 in a loop turn is one batch, not yet a load (the average of sizes is)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(8))) == list(range(8))
    del sizes[:]
    assert await _paced(batcher, 3, 0.01) == [0, 1, 2]
    assert max(sizes) < 3
    # bursts of 8, one after another: the batcher is under load
    for _ in range(10):
        await asyncio.gather(*(batcher.submit(i) for i in range(8)))
    # now calls 3 ms apart wait (the oldest up to 80 ms) for each other: one batch
    del sizes[:]
    assert await _timed(batcher, 5, 0.003) == list(range(5))
    assert sizes == [5]
    # the load gone, lone calls bring the average down within a few batches; then none waits
    for i in range(12):
        assert await batcher.submit(i) == i
    del sizes[:]
    assert await _paced(batcher, 3, 0.01) == [0, 1, 2]
    assert max(sizes) < 3
    await batcher.close()


async def test_linger_does_not_keep_itself_on_with_the_batches_it_gathers():
    sizes = []
    batcher = AdaptiveBatcher(_OnTheLoop(lambda b: sizes.append(len(b)) or list(b)),
                              max_size=64, max_wait=0.0, linger=0.03, linger_from=3)
    for _ in range(10):  # bursts of 8, one after another: under load, lingering
        await asyncio.gather(*(batcher.submit(i) for i in range(8)))

    # a steady 200 calls a second: lingering 30 ms gathers ~6 a batch, but each found a free
    # writer and nothing queued behind it, so the average falls and the lingering stops
    assert await _paced(batcher, 120, 0.005) == list(range(120))
    assert sizes[-5:] and max(sizes[-5:]) < 3, sizes
    await batcher.close()


async def test_close_starts_the_calls_waiting_only_for_company():
    batcher = _batcher(list, max_size=3, max_wait=0.0, linger=10.0, linger_from=2,
                       concurrency=1)
    for _ in range(20):  # full batches (no wait), one after another: 3 on average
        await asyncio.gather(*(batcher.submit(i) for i in range(3)))
    waiting = asyncio.create_task(batcher.submit(7))
    await asyncio.sleep(0.05)
    assert not waiting.done()  # lingering (for up to 10 s) with a free slot
    await asyncio.wait_for(batcher.close(), 2.0)
    assert await waiting == 7  # started by close, not failed


async def test_per_call_exception_fails_only_that_call():
    batcher = _batcher(lambda b: [ValueError(f"bad {q}") if q == 3 else q for q in b],
                       max_size=8, max_wait=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(6)), return_exceptions=True)
    assert [r for r in results if not isinstance(r, Exception)] == [0, 1, 2, 4, 5]
    assert str(results[3]) == "bad 3"
    await batcher.close()


async def test_failed_batch_fails_every_call_and_batcher_keeps_working():
    state = {"fail": True}

    def fn(batch):
        if state["fail"]:
            raise RuntimeError("kaboom")
        return list(batch)

    batcher = _batcher(fn, max_size=8, max_wait=0.01)
    results = await asyncio.gather(*(batcher.submit(i) for i in range(4)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    state["fail"] = False
    assert await batcher.submit(7) == 7
    await batcher.close()


def test_rejects_bad_limits():
    with pytest.raises(ValueError):
        _batcher(list, max_size=0)
    with pytest.raises(ValueError):
        _batcher(list, max_wait=-1.0)
    with pytest.raises(ValueError):
        _batcher(list, linger=-0.001)
    with pytest.raises(ValueError):
        _batcher(list, linger_from=0)
    with pytest.raises(ValueError):
        _batcher(list, shed_after=-0.1)
    with pytest.raises(ValueError):
        ThreadRunner(list, concurrency=0, name="test")


async def test_cancelled_callers_are_left_out_of_the_next_batch():
    seen, gate = [], threading.Event()

    def fn(batch):
        seen.extend(batch)
        gate.wait(1.0)
        return list(batch)

    batcher = _batcher(fn, max_size=8, max_wait=0.0, concurrency=1)
    first = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.01)  # batch [0] is running; the next calls queue behind it
    gave_up = asyncio.create_task(batcher.submit(1))
    kept = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    gave_up.cancel()
    gate.set()
    assert await first == 0 and await kept == 2
    assert seen == [0, 2]
    await batcher.close()


def _gated_batcher() -> tuple[threading.Event, AdaptiveBatcher]:
    """A one-call, one-slot batcher whose batches run until the gate is set (1 s at most)."""
    gate = threading.Event()
    return gate, _batcher(lambda b: gate.wait(1.0) and list(b), max_size=1, max_wait=0.0,
                          concurrency=1)


async def test_close_finishes_running_batches_and_refuses_new_calls():
    gate, batcher = _gated_batcher()
    running = asyncio.create_task(batcher.submit(1))
    queued = asyncio.create_task(batcher.submit(2))
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(batcher.close())
    await asyncio.sleep(0.01)
    gate.set()
    await closing
    assert await running == 1
    with pytest.raises(BatcherClosed):
        await queued
    with pytest.raises(BatcherClosed):
        await batcher.submit(3)


async def test_a_broken_pool_fails_the_calls_and_frees_the_slot():
    def boom():
        raise RuntimeError("no thread for you")

    batcher = _batcher(list, max_size=4, max_wait=0.0, concurrency=1, thread_init=boom)
    for _ in range(2):  # the second call must not wait for ever behind a leaked slot
        # the pool's own error, not a TimeoutError from a call that was never answered
        with pytest.raises(BrokenThreadPool, match="initializer failed"):
            await asyncio.wait_for(batcher.submit(1), 2.0)
    await batcher.close()


async def test_close_twice_at_once_returns_both():
    gate, batcher = _gated_batcher()
    running = asyncio.create_task(batcher.submit(1))
    await asyncio.sleep(0.01)
    closes = [asyncio.create_task(batcher.close()) for _ in range(2)]
    await asyncio.sleep(0.01)
    gate.set()
    await asyncio.wait_for(asyncio.gather(*closes), 2.0)
    assert await running == 1


async def test_the_queue_depth_gauge_counts_calls_waiting_behind_a_stuck_batch():
    """`tailor_batch_queue_depth` is the calls waiting now, not as of the last batch's start:
    behind a batch that does not end (a writer stuck on the store's lock), the queue grows and
    TailorBatchBacklog has to see it."""
    from prometheus_client import REGISTRY

    def depth() -> float:
        return REGISTRY.get_sample_value("tailor_batch_queue_depth", {"batcher": "stuck"})

    gate = threading.Event()
    batcher = AdaptiveBatcher(ThreadRunner(lambda b: gate.wait(5.0) and list(b), concurrency=1,
                                           name="stuck"), max_size=4, max_wait=0.0)
    first = asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0.05)  # the first batch runs, and holds the only slot
    assert depth() == 0
    calls = [asyncio.create_task(batcher.submit(i)) for i in range(30)]
    await asyncio.sleep(0.05)
    assert depth() == 30
    gate.set()
    assert await asyncio.gather(first, *calls) == [-1, *range(30)]
    assert depth() == 0
    await batcher.close()



def _gated(name: str, max_size: int, shed_after: float) -> tuple[AdaptiveBatcher, threading.Event]:
    """A shedding batcher of one slot whose batches (each query answered itself) end when the
    gate is set, and the gate."""
    gate = threading.Event()
    return AdaptiveBatcher(ThreadRunner(lambda b: gate.wait(5.0) and list(b), concurrency=1,
                                        name=name), max_size=max_size, max_wait=0.0,
                           shed_after=shed_after), gate


async def test_calls_arriving_behind_a_queue_older_than_shed_after_are_refused_until_it_drains():
    """Past `shed_after` of queueing a new call is refused at once (`Overloaded`, counted in
    `tailor_shed_calls_total`), the calls queued before it are answered, and once the queue has
    drained calls are taken again."""
    from prometheus_client import REGISTRY

    from server.errors import Overloaded

    def shed() -> float:
        return REGISTRY.get_sample_value("tailor_shed_calls_total", {"batcher": "shedding"}) or 0.0

    batcher, gate = _gated("shedding", max_size=4, shed_after=0.25)
    before = shed()
    first = asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0.01)  # the first batch holds the only slot
    queued = [batcher.enqueue(i) for i in range(3)]
    # the queue has waited (next to) nothing: taken. Queued in the same loop turn, not by a
    # task of its own after a sleep, which a loaded machine stretched past the bound
    taken = batcher.enqueue(3)
    await asyncio.sleep(0.3)
    with pytest.raises(Overloaded, match=r"the shedding batches have waited over "
                                         r"limits\.batch_queue_seconds \(0\.25 s\)") as refused:
        await batcher.submit(4)
    assert 0.3 <= refused.value.waited < 5
    assert shed() - before == 1
    gate.set()
    assert await asyncio.gather(first, *queued, taken) == [-1, 0, 1, 2, 3]
    assert await batcher.submit(5) == 5
    await batcher.close()


async def test_refusals_go_on_while_the_batches_starting_took_calls_older_than_shed_after():
    """A batch that starts takes the oldest calls: the queue's age alone then fell to ~0 and let
    new calls in behind it, to wait as long again (an open-loop overload's calls then ended past
    their deadlines in bursts). The oldest call of the last batch to start counts too."""
    from server.errors import Overloaded

    gates = [threading.Event() for _ in range(4)]
    waits = list(gates)  # each batch waits on the next
    batcher = AdaptiveBatcher(ThreadRunner(lambda b: (waits.pop(0).wait(5.0), list(b))[1],
                                           concurrency=1, name="standing"), max_size=2,
                              max_wait=0.0, shed_after=0.05)
    first = asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0.01)
    old = [asyncio.create_task(batcher.submit(i)) for i in range(2)]
    await asyncio.sleep(0.08)
    gates[0].set()  # the first batch ends; the two old calls start, having waited 0.08 s
    await _until_none_queued("standing")
    behind = asyncio.create_task(batcher.submit(2))  # nothing queued: taken
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):  # queued behind a batch of calls that waited 0.08 s
        await asyncio.wait_for(batcher.submit(3), 1.0)  # taken: it waits for the gates
    for gate in gates:
        gate.set()
    assert await asyncio.gather(first, *old, behind) == [-1, 0, 1, 2]
    await batcher.close()


async def _until_none_queued(name: str) -> None:
    """Until the batcher `name` has no call queued (each in a batch that started), by its queue
    depth gauge: not a sleep, which a batch thread woken late on a loaded machine outlasts."""
    from prometheus_client import REGISTRY
    deadline = asyncio.get_running_loop().time() + 10  # a hang's bound only
    while REGISTRY.get_sample_value("tailor_batch_queue_depth", {"batcher": name}) != 0:
        assert asyncio.get_running_loop().time() < deadline, "the queued calls never started"
        await asyncio.sleep(0.005)


async def test_batch_size_buckets_reach_the_largest_batches_the_server_makes():
    """The campaign writers batch up to 512 calls: with buckets ending at 256, every batch over
    256 fell in +Inf and histogram_quantile put them all at 256."""
    from prometheus_client import REGISTRY

    batcher = AdaptiveBatcher(ThreadRunner(list, concurrency=1, name="big"), max_size=512,
                              max_wait=0.0)
    assert await asyncio.gather(*(batcher.submit(i) for i in range(400))) == list(range(400))
    await batcher.close()
    count = REGISTRY.get_sample_value("tailor_batch_size_count", {"batcher": "big"})
    within = REGISTRY.get_sample_value("tailor_batch_size_bucket", {"batcher": "big", "le": "512.0"})
    assert count == 1 and within == 1


async def test_a_batch_refused_with_a_domain_error_logs_one_line_and_a_bug_its_traceback(caplog):
    """On a full store every write batch failed with StoreFull, which each caller gets with its
    status (and `server.errors` logs per call), yet the batch was logged at ERROR with two
    chained tracebacks, ~2.5 KB a batch, for as long as the store stayed full."""
    import logging

    from server.store.errors import StoreFull, StoreKeyMissing
    errors = {"full": StoreFull(8 << 20, 1 << 20), "bug": RuntimeError("kaboom"),
              "keyless": StoreKeyMissing("k1")}

    def fn(batch):
        raise errors[batch[0]]

    batcher = _batcher(fn, max_size=1)
    with caplog.at_level(logging.WARNING, logger="tailor.batching"):
        for kind in ("full", "bug", "keyless"):
            with pytest.raises(type(errors[kind])):
                await batcher.submit(kind)
    await batcher.close()
    refused, failed, keyless = [r for r in caplog.records if r.name == "tailor.batching"]
    assert refused.levelname == "WARNING" and refused.exc_info is None
    assert refused.getMessage() == ("test batch of 1 refused: store is full: LMDB map at its ceiling "
                                    "of 8388608 bytes less 1048576 kept for erasure (raise "
                                    "TAILOR_LMDB_MAX_MAP_SIZE)")
    assert failed.levelname == "ERROR" and failed.exc_info[1] is errors["bug"]
    # a store that cannot serve stays an ERROR (one line): no metric of its own says it
    assert keyless.levelname == "ERROR" and keyless.exc_info is None
    assert keyless.getMessage().startswith("test batch of 1 refused: ")


async def test_batch_threads_run_outside_the_call_that_started_them():
    """The threads started at the first batch ran every later batch in that call's context:
    each batch's log lines carried the first caller's request id (`logging.current_call`,
    which `_CallFilter` writes into every line) for the life of the server."""
    from server.logging import bind_call, current_call
    seen = []

    def fn(batch):
        seen.append(current_call())
        return batch

    batcher = _batcher(fn, max_size=1, concurrency=1)

    async def call(request_id):
        bind_call(request_id)
        return await batcher.submit(request_id)

    assert [await asyncio.create_task(call(r)) for r in ("first", "second")] == ["first", "second"]
    await batcher.close()
    assert seen == [None, None]


async def test_calls_queued_in_exempt_are_never_refused_and_bulk_ones_make_nobody_refused():
    """`exempt()`: the rest of an admitted call, never refused while others are;
    `exempt(counted=False)`: a bulk job's, whose wait makes no other call refused."""
    from server.batching import exempt
    from server.errors import Overloaded

    batcher, gate = _gated("exempt", max_size=8, shed_after=0.02)
    first = asyncio.create_task(batcher.submit(-1))
    await asyncio.sleep(0.01)  # the first batch holds the only slot
    with exempt(counted=False):
        bulk = asyncio.create_task(batcher.submit(0))
    await asyncio.sleep(0.04)
    taken = batcher.enqueue(1)  # only the bulk call queued, for 0.04 s: taken
    await asyncio.sleep(0.04)
    with exempt():
        admitted = asyncio.create_task(batcher.submit(2))  # call 1 waited 0.04 s: not refused
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded):  # outside exempt: refused behind call 1
        batcher.admit()
    gate.set()
    assert await asyncio.gather(first, bulk, taken, admitted) == [-1, 0, 1, 2]
    await batcher.close()


class _Held:
    """A runner of one slot whose batch runs until the test ends it (`end`, on the loop): which
    calls each batch takes, with nothing left to a thread's or a timer's timing."""
    concurrency = 1
    name = "held"

    def __init__(self):
        self.batches: list[list] = []
        self._done = None

    def start(self, loop, queries, done) -> None:
        self.batches.append(list(queries))
        self._done = done

    def end(self) -> None:
        done, self._done = self._done, None
        done(self.batches[-1])  # the next batch starts in it (`_finish`)

    async def close(self) -> None:
        pass


def _bulk(batcher, *queries) -> list:
    """`queries` queued as a bulk caller's (a stream's read-ahead, a SendCampaign job's)."""
    from server.batching import exempt
    with exempt(counted=False):
        return [batcher.enqueue(q) for q in queries]


async def test_calls_that_are_not_bulk_go_before_the_bulk_calls_queued_before_them():
    """Behind a TrackEventStream's read-ahead (bulk), a TrackEvents call waited for every
    message queued before it: ~1 s beside a 200,000-event stream. The others now go first, each
    kind in its own arrival order, and bulk calls fill what is left."""
    from server.batching import exempt
    runner = _Held()
    batcher = AdaptiveBatcher(runner, max_size=6, max_wait=0.0)
    first = batcher.enqueue("first")
    await asyncio.sleep(0)  # it runs, holding the only slot
    bulk = _bulk(batcher, "s1", "s2", "s3", "s4")
    calls = [batcher.enqueue("a")]
    with exempt():  # admitted (the rest of a call taken before): not bulk either
        calls.append(batcher.enqueue("b"))
    calls.append(batcher.enqueue("c"))
    runner.end()
    runner.end()
    runner.end()
    assert runner.batches == [["first"], ["a", "b", "c", "s1", "s2", "s3"], ["s4"]]
    assert await asyncio.gather(first, *calls, *bulk) == ["first", "a", "b", "c",
                                                          "s1", "s2", "s3", "s4"]
    await batcher.close()


async def test_a_batch_carries_at_most_max_bulk_of_bulk_work_and_at_least_one_bulk_call():
    """`max_bulk` weighs the bulk calls a batch takes (`weigh`: a stream message's events),
    so a call arriving behind them waits for one modest transaction, not for the whole
    read-ahead; one bulk call heavier than the bound still runs, alone among bulk calls, and
    the bulk calls run in the order queued (a stream's messages commit in order). A cancelled
    caller weighs nothing."""
    runner = _Held()
    batcher = AdaptiveBatcher(runner, max_size=64, max_wait=0.0, max_bulk=5, weigh=len)
    first = batcher.enqueue("x")
    await asyncio.sleep(0)
    bulk = _bulk(batcher, "ab", "cd", "ef", "ghijkl", "m", "n")
    gone = _bulk(batcher, "zzzzz")[0]
    last = _bulk(batcher, "opq")
    gone.cancel()
    late = batcher.enqueue("y")
    for _ in range(5):
        runner.end()
    assert runner.batches == [["x"], ["y", "ab", "cd"], ["ef"], ["ghijkl"], ["m", "n", "opq"]]
    assert await asyncio.gather(first, late, *bulk, *last) == [
        "x", "y", "ab", "cd", "ef", "ghijkl", "m", "n", "opq"]
    await batcher.close()


async def test_with_bulk_beside_0_a_batch_of_other_calls_carries_no_bulk_work():
    """The ingestion's choice: a TrackEvents call's transaction holds none of a stream's events,
    so the call waits for the stream's transaction running when it comes and then for its own
    (beside a 200,000-event stream p50 0.17 s, at most 0.42 s, against 0.27-0.29 s and 0.47 s
    with 4,000 stream events beside it), and a stream alone commits `max_bulk` a transaction.
    Only the oldest queued call, when bulk, keeps its place beside them."""
    runner = _Held()
    batcher = AdaptiveBatcher(runner, max_size=64, max_wait=0.0, max_bulk=4, bulk_beside=0,
                              weigh=len)
    first = batcher.enqueue("x")
    await asyncio.sleep(0)
    late = batcher.enqueue("y")
    bulk = _bulk(batcher, "a", "b", "c")
    runner.end()
    runner.end()
    more = _bulk(batcher, "d", "e")
    last = batcher.enqueue("z")
    runner.end()
    runner.end()
    assert runner.batches == [["x"], ["y"], ["a", "b", "c"], ["z", "d"], ["e"]]
    runner.end()
    await asyncio.gather(first, late, *bulk, *more, last)
    with pytest.raises(ValueError):
        AdaptiveBatcher(_Held(), max_bulk=4, bulk_beside=-1)
    await batcher.close()


async def test_bulk_calls_queued_behind_busy_slots_fail_on_close_and_a_bad_max_bulk_is_refused():
    runner = _Held()
    batcher = AdaptiveBatcher(runner, max_size=4, max_wait=0.0, max_bulk=1)
    running = batcher.enqueue(1)
    await asyncio.sleep(0)
    queued = _bulk(batcher, 2)[0]
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    runner.end()
    await closing
    assert await running == 1
    with pytest.raises(BatcherClosed):
        await queued
    with pytest.raises(ValueError):
        AdaptiveBatcher(_Held(), max_bulk=-1)


async def test_a_standing_queue_of_other_calls_leaves_the_oldest_bulk_call_a_place():
    """Strict priority starved bulk calls: with `max_size` or more other calls queued at every
    batch start (a closed loop of ChooseVariant callers), a SendCampaign job's decisions never
    ran. Once the oldest bulk call is older than every queued call that is not bulk, a batch
    leaves it one place; calls queued before it still go first."""
    runner = _Held()
    batcher = AdaptiveBatcher(runner, max_size=2, max_wait=0.0)
    batcher.enqueue("first")
    await asyncio.sleep(0)  # it runs, holding the only slot
    calls = [batcher.enqueue(f"c{i}") for i in range(4)]  # queued before the job's
    job = _bulk(batcher, "job1", "job2")
    ran = 4
    for _ in range(8):  # a closed loop: each answered caller calls again at once
        runner.end()
        for done in [c for c in calls if c.done()]:
            calls.remove(done)
            calls.append(batcher.enqueue(f"c{ran}"))
            ran += 1
    assert runner.batches[:4] == [["first"], ["c0", "c1"], ["c2", "c3"], ["c4", "job1"]]
    assert all(j.done() for j in job) and [j.result() for j in job] == ["job1", "job2"]
    assert all(len(b) <= 2 for b in runner.batches)
    closing = asyncio.ensure_future(batcher.close())
    await asyncio.sleep(0)
    runner.end()
    await closing
    await asyncio.gather(*calls, return_exceptions=True)  # the loop's last calls: closed

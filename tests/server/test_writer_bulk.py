"""`Bulk` batch functions: which waiting frames a writer child runs next (`Waiting`), and a
real child answering interactive frames ahead of bulk frames queued before them."""
import asyncio

import pytest

from server.batching import Bulk, WriterProcess
from server.batching.bulk import Waiting
from server.store import Store

from .test_writer_process import FACTORY

FUNCTIONS = {"decide": len, "reward": len, "plan": Bulk(len, per_call=3)}


def _frames(*spec, first=1):
    """(seq, function, queries) frames, seq from `first`: ("plan", 2) is a frame of 2 queries."""
    return [(seq, fn, ["q"] * n) for seq, (fn, n) in enumerate(spec, first)]


def _waiting(*spec, passed_over=4) -> Waiting:
    waiting = Waiting(FUNCTIONS, passed_over)
    waiting.add(_frames(*spec))
    return waiting


def _seqs(frames):
    return [f[0] for f in frames]


def test_frames_of_other_functions_run_before_bulk_ones_queued_ahead_of_them():
    waiting = _waiting(("plan", 1), ("plan", 1), ("decide", 1), ("decide", 2), ("plan", 1))
    assert _seqs(waiting.take()) == [3, 4]  # both decisions, in one call
    assert _seqs(waiting.frames) == [1, 2, 5]  # the plans, in their order


def test_order_is_kept_within_a_function_and_other_functions_split_a_run():
    waiting = _waiting(("decide", 1), ("reward", 1), ("plan", 1), ("decide", 1))
    assert [_seqs(waiting.take()) for _ in range(4)] == [[1], [2], [4], [3]]
    assert not waiting


def test_bulk_frames_alone_run_whole_up_to_per_call_queries_a_call():
    waiting = _waiting(("plan", 2), ("plan", 1), ("plan", 1))
    assert _seqs(waiting.take()) == [1, 2]  # 2 + 1 queries: the third would make 4
    big = _waiting(("plan", 5), ("plan", 1))
    assert _seqs(big.take()) == [1]  # a frame over per_call runs whole, alone


def test_bulk_frames_run_after_being_passed_over_a_bounded_number_of_calls():
    """Steady rewards cannot hold a plan up for good: one bulk call after every 2 others."""
    waiting = _waiting(("plan", 3), ("plan", 3), passed_over=2)  # a call each
    ran = []
    for seq in range(10, 16):  # a reward arrives before every call
        waiting.add(_frames(("reward", 1), first=seq))
        ran.append(waiting.take()[0][1])
    assert ran == ["reward", "reward", "plan", "reward", "reward", "plan"]


def test_bulk_calls_grow_to_per_call_alone_once_other_frames_stop_coming():
    now = [100.0]
    fns = {"decide": len, "plan": Bulk(len, per_call=1, per_call_alone=3)}
    waiting = Waiting(fns, quiet=1.0, clock=lambda: now[0])
    waiting.add(_frames(("decide", 1), ("plan", 1), ("plan", 1), ("plan", 1), ("plan", 1)))
    assert _seqs(waiting.take()) == [1]
    assert _seqs(waiting.take()) == [2]  # a decision came just now: one slice a call
    now[0] += 1.0
    assert _seqs(waiting.take()) == [3, 4, 5]  # quiet for a second: up to three
    assert Bulk(len, per_call=2).per_call_alone == 2


def test_unknown_functions_are_not_bulk():
    waiting = _waiting(("plan", 1), ("nope", 1))
    assert _seqs(waiting.take()) == [2]


def test_per_call_is_at_least_one():
    with pytest.raises(ValueError, match="per_call"):
        Bulk(len, per_call=0)


@pytest.fixture
async def writer(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    await writer.ready()
    yield writer
    await writer.close()
    store.close()


def _recorder(answered: list, expected: int, finished: asyncio.Event):
    def done(name):
        def record(results):
            answered.append((name, results))
            if len(answered) == expected:
                finished.set()
        return record
    return done


async def test_a_child_answers_frames_arriving_behind_queued_bulk_frames_first(writer):
    """While a slow call runs, three bulk frames and then a put queue in the pipe: the put is
    answered next, then the bulk frames two (`per_call`) and one to a call."""
    loop, answered, finished = asyncio.get_running_loop(), [], asyncio.Event()
    done = _recorder(answered, 5, finished)
    writer.start(loop, "slow", ["s"], done("slow"))
    for i in range(3):
        writer.start(loop, "bulk", [f"b{i}"], done(f"bulk{i}"))
    writer.start(loop, "put", ["k"], done("put"))
    await asyncio.wait_for(finished.wait(), 30)
    assert [name for name, _ in answered] == ["slow", "put", "bulk0", "bulk1", "bulk2"]
    sizes = {name: results[0] for name, results in answered if name.startswith("bulk")}
    assert sizes == {"bulk0": 2, "bulk1": 2, "bulk2": 1}  # queries in the call that ran it


async def test_a_child_reads_the_pipe_again_before_each_call(writer):
    """A put sent while a slow bulk call runs is answered before the bulk frame queued with it."""
    loop, answered, finished = asyncio.get_running_loop(), [], asyncio.Event()
    done = _recorder(answered, 4, finished)
    writer.start(loop, "slow_bulk", ["a"], done("bulk0"))
    writer.start(loop, "slow_bulk", ["b", "c"], done("bulk1"))  # over per_call: a call of its own
    await asyncio.sleep(0.1)  # bulk0 is running
    writer.start(loop, "put", ["k"], done("put"))
    writer.start(loop, "bulk", ["d"], done("bulk2"))
    await asyncio.wait_for(finished.wait(), 30)
    assert [name for name, _ in answered] == ["bulk0", "put", "bulk1", "bulk2"]


async def test_a_closing_child_answers_every_bulk_frame_it_holds(writer):
    loop, answered, finished = asyncio.get_running_loop(), [], asyncio.Event()
    done = _recorder(answered, 6, finished)
    writer.start(loop, "slow", ["s"], done("slow"))
    for i in range(5):
        writer.start(loop, "bulk", [f"b{i}"], done(f"bulk{i}"))
    await writer.close()  # stdin closed while the bulk frames wait behind the slow call
    assert finished.is_set() and len(answered) == 6

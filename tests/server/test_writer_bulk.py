"""`Bulk` batch functions: which waiting frames a writer child runs next (`next_run`), and a
real child answering an interactive frame ahead of bulk frames queued before it."""
import asyncio

from server.batching import Bulk, WriterProcess
from server.batching.bulk import next_run
from server.store import Store

from .test_writer_process import FACTORY

FUNCTIONS = {"decide": len, "reward": len, "plan": Bulk(len, per_call=3)}


def _frames(*spec):
    """(seq, function, queries) frames, seq from 1: ("plan", 2) is a frame of 2 queries."""
    return [(seq, fn, ["q"] * n) for seq, (fn, n) in enumerate(spec, 1)]


def _seqs(frames):
    return [f[0] for f in frames]


def test_frames_of_other_functions_run_before_bulk_ones_queued_ahead_of_them():
    waiting = _frames(("plan", 1), ("plan", 1), ("decide", 1), ("decide", 2), ("plan", 1))
    run, rest = next_run(waiting, FUNCTIONS)
    assert _seqs(run) == [3, 4]  # both decisions, in one call
    assert _seqs(rest) == [1, 2, 5]  # the plans, in their order


def test_order_is_kept_within_a_function_and_other_functions_split_a_run():
    waiting = _frames(("decide", 1), ("reward", 1), ("plan", 1), ("decide", 1))
    run, rest = next_run(waiting, FUNCTIONS)
    assert _seqs(run) == [1]
    run, rest = next_run(rest, FUNCTIONS)
    assert _seqs(run) == [2]
    run, rest = next_run(rest, FUNCTIONS)
    assert (_seqs(run), _seqs(rest)) == ([4], [3])


def test_bulk_frames_alone_run_whole_up_to_per_call_queries_a_call():
    waiting = _frames(("plan", 2), ("plan", 1), ("plan", 1))
    run, rest = next_run(waiting, FUNCTIONS)
    assert (_seqs(run), _seqs(rest)) == ([1, 2], [3])  # 2 + 1 queries: the third would make 4
    big = _frames(("plan", 5), ("plan", 1))
    run, rest = next_run(big, FUNCTIONS)
    assert (_seqs(run), _seqs(rest)) == ([1], [2])  # a frame over per_call runs whole, alone


def test_unknown_functions_are_not_bulk():
    waiting = _frames(("plan", 1), ("nope", 1))
    run, _ = next_run(waiting, FUNCTIONS)
    assert _seqs(run) == [2]


async def test_a_child_answers_a_frame_arriving_behind_queued_bulk_frames_first(tmp_path):
    """While a slow call runs, three bulk frames and then a put queue in the pipe: the put is
    answered next, then the bulk frames two (`per_call`) and one to a call."""
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    loop = asyncio.get_running_loop()
    answered: list[tuple[str, list]] = []
    finished = asyncio.Event()

    def done(name):
        def record(results):
            answered.append((name, results))
            if len(answered) == 5:
                finished.set()
        return record
    try:
        await writer.ready()
        writer.start(loop, "slow", ["s"], done("slow"))
        for i in range(3):
            writer.start(loop, "bulk", [f"b{i}"], done(f"bulk{i}"))
        writer.start(loop, "put", ["k"], done("put"))
        await asyncio.wait_for(finished.wait(), 30)
    finally:
        await writer.close()
        store.close()
    assert [name for name, _ in answered] == ["slow", "put", "bulk0", "bulk1", "bulk2"]
    sizes = {name: results[0] for name, results in answered if name.startswith("bulk")}
    assert sizes == {"bulk0": 2, "bulk1": 2, "bulk2": 1}  # queries in the call that ran it

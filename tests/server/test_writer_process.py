"""The writer process: batches run in a child that commits to the same LMDB store."""
import asyncio
import os
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import pytest

from server.batching import AdaptiveBatcher, BatcherClosed
from server.errors import NotFound, ResourceExhausted, Unavailable
from server.store import Store
from server.writer_process import WriterProcess

FACTORY = "tests.server.test_writer_process:functions"


def functions(store):
    """The child's batch functions (imported by the child from this module)."""
    calls = iter(range(1, 1 << 30))

    def put(queries):
        """Writes each key; answers (pid, call number). "bad" fails alone, "boom" fails the batch."""
        if "boom" in queries:
            raise ResourceExhausted("boom: the store is full")
        call = next(calls)

        def fn(txn):
            for key in queries:
                txn.put(key.encode(), f"v-{key}".encode(), db=store.db("meta"))
        store.write(fn)
        out = []
        for key in queries:
            if key == "bad":
                out.append(NotFound("key", key))
            elif key == "odd":
                err = ValueError("odd one")
                err.hook = lambda: None  # does not pickle
                out.append(err)
            else:
                out.append((os.getpid(), call))
        return out

    def crash(queries):
        os._exit(3)

    return {"put": put, "crash": crash}


@pytest.fixture
async def writer(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    await writer.ready()
    batcher = AdaptiveBatcher(runner=writer.runner("put"), max_size=64, max_wait=0.0, name="test")
    yield writer, batcher, store
    await batcher.close()
    await writer.close()
    store.close()


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


async def test_batches_run_in_the_child_and_commit_to_the_same_store(writer):
    writer, batcher, store = writer
    keys = [f"k{i}" for i in range(200)]
    answers = await asyncio.gather(*(batcher.submit(k) for k in keys))
    assert {pid for pid, _ in answers} == {writer.pid} and writer.pid != os.getpid()
    assert len({call for _, call in answers}) < len(keys)  # calls that queued shared a batch
    assert [store.get("meta", k.encode()) for k in keys] == [f"v-{k}".encode() for k in keys]


async def test_errors_come_back_per_query_or_per_batch_with_their_status(writer):
    _, batcher, store = writer
    ok, bad, odd = await asyncio.gather(batcher.submit("a"), batcher.submit("bad"),
                                        batcher.submit("odd"), return_exceptions=True)
    assert isinstance(ok, tuple) and store.get("meta", b"a") == b"v-a"
    assert isinstance(bad, NotFound) and bad.status == grpc.StatusCode.NOT_FOUND
    assert str(bad) == "key 'bad' not found"
    assert isinstance(odd, RuntimeError) and str(odd) == "ValueError: odd one"
    failed = await asyncio.gather(batcher.submit("x"), batcher.submit("boom"), return_exceptions=True)
    assert all(isinstance(e, ResourceExhausted) and str(e) == "boom: the store is full" for e in failed)
    assert store.get("meta", b"x") is None  # nothing of the failed batch was written
    assert isinstance(await batcher.submit("after"), tuple)


async def test_a_dead_child_fails_its_batch_with_unavailable_and_the_next_batch_gets_a_new_one(writer):
    writer, batcher, store = writer
    first = writer.pid
    crasher = AdaptiveBatcher(runner=writer.runner("crash"), max_size=8, max_wait=0.0, name="crash")
    with pytest.raises(Unavailable, match="exited \\(code 3\\)"):
        await crasher.submit("x")
    assert not _alive(first)
    pid, _ = await batcher.submit("k")
    assert pid == writer.pid != first and store.get("meta", b"k") == b"v-k"
    await crasher.close()


async def test_the_child_ignores_interrupts_and_stops_when_closed(writer):
    writer, batcher, _ = writer
    pid = writer.pid
    os.kill(pid, signal.SIGINT)  # Ctrl-C reaches the server, which then closes the writer
    os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert (await batcher.submit("k"))[0] == pid
    running = [asyncio.create_task(batcher.submit(f"q{i}")) for i in range(50)]
    for _ in range(2):  # one loop turn for the calls, one to send their batch to the child
        await asyncio.sleep(0)
    await batcher.close()
    await writer.close()
    assert all(r[0] == pid for r in await asyncio.gather(*running))
    assert not _alive(pid)
    with pytest.raises(BatcherClosed):
        await batcher.submit("late")


def test_the_child_exits_when_the_server_dies(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, os
        from server.store import Store
        from server.writer_process import WriterProcess
        async def main():
            writer = WriterProcess({FACTORY!r}, Store({str(tmp_path / "s")!r}, sync=False), name="t")
            await writer.ready()
            print(writer.pid, flush=True)
            os._exit(0)  # no close: the child only sees its stdin close
        asyncio.run(main())
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
    pid = int(out.stdout.split()[0])
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)

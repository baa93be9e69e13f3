"""The writer process: batches run in a child that commits to the same LMDB store."""
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import grpc
import pytest
from prometheus_client import REGISTRY

from server.batching import AdaptiveBatcher, BatcherClosed, Bulk, WriterProcess
from server.errors import NotFound, ResourceExhausted, Unavailable
from server.store import Store
from tests.conftest import ROOT, loaded_modules

FACTORY = "tests.server.test_writer_process:functions"


def functions(store):
    """The child's batch functions (imported by the child from this module)."""
    calls = iter(range(1, 1 << 30))

    def put(queries):
        """Writes each query; answers (pid, call number). "bad" fails alone, "boom" the batch."""
        if "boom" in queries:
            raise ResourceExhausted("boom: the store is full")
        call = next(calls)

        def fn(txn):
            for query in queries:  # "key|padding" stores v-<query> under key
                txn.put(query.split("|")[0].encode(), f"v-{query}".encode(), db=store.db("meta"))
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

    def slow_crash(queries):
        time.sleep(0.8)
        os._exit(3)

    def slow(queries):
        time.sleep(0.3)
        return [os.getpid()] * len(queries)

    def odd_results(queries):
        return [TwoArgs("a", "b"), PickyError("no"), len(queries[0])]

    def call_size(queries):
        return [len(queries)] * len(queries)

    def slow_call_size(queries):
        time.sleep(0.3)
        return call_size(queries)

    def env(queries):
        """The length of each named variable in the child's environment (0: not set)."""
        return [len(os.environ.get(q, "")) for q in queries]

    return {"put": put, "crash": crash, "slow_crash": slow_crash, "slow": slow, "env": env,
            "odd_results": odd_results, "bulk": Bulk(call_size, per_call=2),
            "slow_bulk": Bulk(slow_call_size, per_call=1)}


class TwoArgs(Exception):
    """Pickles, but does not unpickle (its __init__ wants two arguments)."""

    def __init__(self, a, b):
        super().__init__(f"{a}{b}")


class PickyError(NotFound):
    """A domain error that does not pickle: it keeps its status on the way back."""

    def __init__(self, key):
        super().__init__("picky", key)
        self.hook = lambda: None


def exiting_functions(store):
    """A factory that ends its process as a script would: `sys.exit()` (0) or
    `sys.exit(message)` (the message on stderr, code 1), as TAILOR_TEST_EXIT says."""
    message = os.environ.get("TAILOR_TEST_EXIT")
    sys.exit(message or None)


def slow_start_functions(store):
    """A child that takes its time to open the store (a long migration): not ready for 60 s."""
    time.sleep(60)
    return functions(store)


def numpy_functions(store):
    """A child that imports numpy, as both of the server's writers do."""
    import numpy  # noqa: F401

    def threads(queries):
        with open("/proc/self/status") as f:
            count = next(int(line.split()[1]) for line in f if line.startswith("Threads:"))
        return [count] * len(queries)
    return {"threads": threads}


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
    except (FileNotFoundError, ProcessLookupError):  # reaped before, or between open and read
        return False


async def _exits(pid: int, within: float = 5.0) -> bool:
    """Whether `pid` is gone (or a zombie) within `within` seconds. Its pipes close during its
    exit, before it is a zombie: the server may see end of file a moment before that."""
    deadline = time.monotonic() + within
    while _alive(pid) and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return not _alive(pid)


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
    with pytest.raises(Unavailable, match="exited before answering"):
        await crasher.submit("x")
    assert await _exits(first)
    pid, _ = await batcher.submit("k")
    assert pid == writer.pid != first and store.get("meta", b"k") == b"v-k"
    await crasher.close()


async def test_a_child_that_died_after_its_fork_may_or_may_not_have_made_its_batch(writer):
    """Forked, a child may have committed a batch before it died: its callers are told so."""
    writer, _, _ = writer
    crasher = AdaptiveBatcher(runner=writer.runner("crash"), max_size=8, max_wait=0.0, name="crash")
    with pytest.raises(Unavailable) as lost:
        await crasher.submit("x")
    assert str(lost.value) == ("the test writer process exited before answering; the write may "
                               "or may not have been made, retry")
    await crasher.close()


async def test_a_child_the_zygote_could_not_fork_fails_its_batches_as_not_made(tmp_path,
                                                                              monkeypatch):
    """A child the zygote reports it could not fork (EAGAIN: a process limit) ran nothing, but
    its batches failed as a crashed child's do, their write 'may or may not have been made'.
    They say it was not made (UNAVAILABLE: a retry is safe)."""
    from server.batching import zygote as zygote_module

    forkless = zygote_module.Zygote((*zygote_module.PRELOAD, "tests.server.fork_fails"))
    monkeypatch.setattr(zygote_module, "_zygote", forkless)
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    try:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        writer.start(loop, "put", ["k"], answered.set_result)  # sent before the zygote answers
        (err,) = await asyncio.wait_for(answered, 60)
        assert isinstance(err, Unavailable) and err.status == grpc.StatusCode.UNAVAILABLE
        assert str(err) == ("the test writer process could not be started (the writer zygote "
                            "could not fork it); the write was not made, a retry is safe")
        assert store.get("meta", b"k") is None
    finally:
        await writer.close()
        forkless.close()
        store.close()


async def test_a_child_that_died_before_it_was_ready_fails_its_batches_as_not_made(tmp_path):
    """Forked, a child killed before it opened the store had run nothing: a batch reaches a
    child only once it is ready. Its batches said their write 'may or may not have been
    made'."""
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess("tests.server.test_writer_process:slow_start_functions", store,
                           name="test")
    try:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        writer.start(loop, "put", ["k"], answered.set_result)
        pid = await asyncio.wait_for(asyncio.to_thread(lambda: writer.pid), 60)
        os.kill(pid, signal.SIGKILL)
        (err,) = await asyncio.wait_for(answered, 60)
        assert isinstance(err, Unavailable)
        assert str(err) == ("the test writer process exited before it was ready; the write was "
                            "not made, a retry is safe")
        assert store.get("meta", b"k") is None
    finally:
        await writer.close()
        store.close()


async def test_closing_a_child_not_ready_yet_waits_its_timeout_once(tmp_path):
    """Its batches wait in the server until it is ready: the close waited `timeout` for it to
    take them, then `timeout` again for its exit (they waited in its pipe before, and its
    start counted in the one wait for its exit)."""
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess("tests.server.test_writer_process:slow_start_functions", store,
                           name="test")
    loop = asyncio.get_running_loop()
    answered = loop.create_future()
    writer.start(loop, "put", ["k"], answered.set_result)
    try:
        await asyncio.wait_for(asyncio.to_thread(lambda: writer.pid), 60)  # forked
        began = time.monotonic()
        await writer.close(timeout=2.0)
        took = time.monotonic() - began
        (err,) = await asyncio.wait_for(answered, 10)
    finally:
        store.close()
    assert 2.0 <= took < 3.5
    assert str(err) == ("the test writer process exited before it was ready; the write was not "
                        "made, a retry is safe")


async def test_a_batch_sent_before_the_child_is_ready_is_run_once_it_is(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    batcher = AdaptiveBatcher(runner=writer.runner("put"), max_size=8, max_wait=0.0, name="t")
    try:
        pid, _ = await asyncio.wait_for(batcher.submit("k"), 60)  # no `ready()` first
        assert pid == writer.pid and store.get("meta", b"k") == b"v-k"
    finally:
        await batcher.close()
        await writer.close()
        store.close()


async def test_the_zygote_runs_the_servers_code_whatever_its_working_directory_holds(
        tmp_path, monkeypatch):
    """`python -m` puts the working directory first on the path: a server started from a
    directory holding a `server` module or package of its own (a `tailor-server` console
    script run there, a checkout of another version) had its zygote, and so its writers,
    import that one instead of the server's code."""
    from server.batching import zygote as zygote_module

    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    (workdir / "server.py").write_text("raise SystemExit('not the server')\n")
    monkeypatch.chdir(workdir)
    fresh = zygote_module.Zygote()
    monkeypatch.setattr(zygote_module, "_zygote", fresh)
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="test")
    try:
        await writer.ready(60)
        batcher = AdaptiveBatcher(runner=writer.runner("put"), max_size=8, max_wait=0.0, name="t")
        pid, _ = await batcher.submit("k")
        await batcher.close()
        assert pid == writer.pid and store.get("meta", b"k") == b"v-k"
    finally:
        await writer.close()
        fresh.close()
        store.close()


async def test_a_dead_child_is_logged_with_how_it_ended(writer, caplog):
    """A child killed with batches in flight was logged 'exited (code None)': its pipe closes a
    moment before it can be reaped, and the status was read at once. The log names the signal
    (kill -9: the OOM killer's) or the exit code, and `tailor_writer_exits_total` counts it."""
    writer, _, _ = writer
    before = REGISTRY.get_sample_value("tailor_writer_exits_total", {"writer": "test"}) or 0.0
    slow = AdaptiveBatcher(runner=writer.runner("slow"), max_size=8, max_wait=0.0, name="slow")
    crasher = AdaptiveBatcher(runner=writer.runner("crash"), max_size=8, max_wait=0.0, name="crash")
    answer = asyncio.ensure_future(slow.submit("x"))
    await asyncio.sleep(0.1)  # the child sleeps 0.3 s in the batch
    os.kill(writer.pid, signal.SIGKILL)
    with pytest.raises(Unavailable, match="exited before answering"):
        await answer
    with pytest.raises(Unavailable, match="exited before answering"):
        await crasher.submit("x")
    ended = [r.getMessage() for r in caplog.records if "batches unanswered" in r.getMessage()]
    assert ended == ["the test writer process was killed by SIGKILL with 1 batches unanswered",
                     "the test writer process exited with code 3 with 1 batches unanswered"]
    assert REGISTRY.get_sample_value("tailor_writer_exits_total", {"writer": "test"}) == before + 2
    await slow.close()
    await crasher.close()


async def test_the_child_ignores_interrupts_and_finishes_its_batches_when_closed(writer):
    writer, batcher, _ = writer
    pid = writer.pid
    os.kill(pid, signal.SIGINT)  # Ctrl-C reaches the server, which then closes the writer
    os.kill(pid, signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert (await batcher.submit("k"))[0] == pid
    slow = AdaptiveBatcher(runner=writer.runner("slow"), max_size=8, max_wait=0.0, name="slow")
    running = asyncio.create_task(slow.submit("q"))
    await asyncio.sleep(0.1)  # its batch is in the child, which sleeps 0.3 s before answering
    await slow.close()
    await writer.close()
    assert await running == pid
    assert not _alive(pid)
    with pytest.raises(BatcherClosed):
        await batcher.submit("late")


async def test_a_stray_hangup_neither_kills_the_child_nor_fails_its_batches(writer):
    """A reload meant for the server (`pkill -HUP -f "python -m server"`) also matches the
    child's command line (`python -m server.batching.child ...`): it used to kill the child
    (SIGHUP's default action), failing its batches UNAVAILABLE."""
    writer, batcher, _ = writer
    pid = writer.pid
    os.kill(pid, signal.SIGHUP)
    await asyncio.sleep(0.2)
    assert _alive(pid)
    assert (await batcher.submit("k"))[0] == pid


async def test_a_child_dying_with_calls_queued_hands_them_to_the_next_child(writer):
    writer, batcher, store = writer
    first = writer.pid
    small = AdaptiveBatcher(runner=writer.runner("put"), max_size=8, max_wait=0.0, name="small")
    dying = AdaptiveBatcher(runner=writer.runner("slow_crash"), max_size=8, max_wait=0.0, name="d")
    crash = asyncio.create_task(dying.submit("x"))
    await asyncio.sleep(0.1)  # the child is in slow_crash; 2 batches of 8 go in after it
    calls = await asyncio.gather(*(small.submit(f"k{i}") for i in range(100)), return_exceptions=True)
    with pytest.raises(Unavailable):
        await crash
    lost = [c for c in calls if isinstance(c, Exception)]
    assert len(lost) == 16 and all(isinstance(c, Unavailable) for c in lost)
    second = writer.pid
    assert second != first and {c[0] for c in calls if not isinstance(c, Exception)} == {second}
    assert sum(store.get("meta", f"k{i}".encode()) is not None for i in range(100)) == 84
    for b in (small, dying):
        await b.close()
    await writer.close()
    assert not _alive(first) and not _alive(second)


async def test_batches_larger_than_the_pipe_cross_whole(writer):
    _, batcher, store = writer
    queries = [f"big{i}|" + "x" * 200_000 for i in range(12)]  # 2.4 MB in one batch
    answers = await asyncio.gather(*(batcher.submit(q) for q in queries))
    assert len(answers) == 12
    assert all(store.get("meta", f"big{i}".encode()) == f"v-{q}".encode() for i, q in enumerate(queries))


async def test_results_that_would_not_unpickle_come_back_as_errors_with_their_message(writer):
    writer, _, _ = writer
    odd = AdaptiveBatcher(runner=writer.runner("odd_results"), max_size=8, max_wait=0.0, name="o")
    two, picky, fine = await asyncio.gather(odd.submit("abc"), odd.submit("d"), odd.submit("e"),
                                            return_exceptions=True)
    assert isinstance(two, RuntimeError) and str(two) == "TwoArgs: ab"
    assert picky.status == grpc.StatusCode.NOT_FOUND and str(picky) == "PickyError: picky 'no' not found"
    assert fine == 3
    await odd.close()


async def test_a_child_that_cannot_start_is_retried_later_not_at_every_batch(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess("tests.server.no_such_module:functions", store, name="broken")
    with pytest.raises(RuntimeError, match="before it was ready"):
        await writer.ready()
    batcher = AdaptiveBatcher(runner=writer.runner("put"), max_size=8, max_wait=0.0, name="b")
    for _ in range(3):
        with pytest.raises(Unavailable, match="failed to start; next try in"):
            await batcher.submit("k")
    assert writer.pid is None
    await batcher.close()
    await writer.close()
    store.close()


def _printed_pid(script: str) -> tuple[int, str]:
    """Run `script` in a new interpreter at the project's root: (the pid it printed, its
    stderr). It must exit 0 having printed a pid."""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=ROOT)
    assert out.returncode == 0 and out.stdout.strip().isdigit(), out.stderr
    return int(out.stdout), out.stderr


def test_the_child_exits_when_the_server_dies(tmp_path):
    script = textwrap.dedent(f"""
        import asyncio, os
        from server.store import Store
        from server.batching import WriterProcess
        async def main():
            writer = WriterProcess({FACTORY!r}, Store({str(tmp_path / "s")!r}, sync=False), name="t")
            await writer.ready()
            print(writer.pid, flush=True)
            os._exit(0)  # no close: the child only sees its stdin close
        asyncio.run(main())
    """)
    pid, _ = _printed_pid(script)
    deadline = time.monotonic() + 10
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid)


def test_the_child_imports_none_of_the_servers_batching_side():
    """`python -m server.batching.child` imports the package first: it must stay light."""
    assert loaded_modules("server.batching.child", (
        "server.metrics", "server.batching.adaptive", "server.batching.process_runner")) == []


def test_the_writers_functions_load_without_the_serving_side():
    """Every server start waits for its writer children: importing their factories must not load
    the handlers, metrics and HTTP stack through the package `__init__`s (`server.lazy`)."""
    assert loaded_modules("server.campaigns.repository, server.impressions.writer", (
        "server.metrics", "aiohttp", "server.campaigns.handler", "server.profiles.handler",
        "server.contact.policy", "server.impressions.handler", "prometheus_client",
        "server.config", "pydantic_settings")) == []


async def test_a_child_runs_numpy_on_one_thread_whatever_the_server_has(tmp_path, monkeypatch):
    """OpenBLAS starts a thread a core when numpy is imported: in a writer, whose arrays are a
    batch's, that was ~0.09 s of CPU at every start and threads competing with serving."""
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "2")
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess("tests.server.test_writer_process:numpy_functions", store, name="np")
    batcher = AdaptiveBatcher(runner=writer.runner("threads"), max_size=8, max_wait=0.0, name="np")
    try:
        await writer.ready()
        assert await batcher.submit("count") == 1
    finally:
        await batcher.close()
        await writer.close()
        store.close()


def test_lazy_package_names_are_the_modules_own_and_unknown_ones_fail():
    import server.campaigns as campaigns
    from server.campaigns.handler import Campaigns

    assert campaigns.Campaigns is Campaigns and "Campaigns" in vars(campaigns)
    assert all(getattr(campaigns, name) is not None for name in campaigns.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        campaigns.Nope  # noqa: B018


async def test_a_writer_with_nice_runs_its_child_at_that_much_lower_priority_in_batch(tmp_path):
    store = Store(tmp_path / "store", sync=False)
    base = os.getpriority(os.PRIO_PROCESS, 0)
    low, plain = (WriterProcess(FACTORY, store, name=n, nice=k) for n, k in (("low", 7), ("plain", 0)))
    try:
        await asyncio.gather(low.ready(), plain.ready())
        assert os.getpriority(os.PRIO_PROCESS, low.pid) == min(19, base + 7)
        assert os.getpriority(os.PRIO_PROCESS, plain.pid) == base
        assert os.sched_getscheduler(low.pid) == os.SCHED_BATCH  # no preempting on waking
        assert os.sched_getscheduler(plain.pid) == os.sched_getscheduler(0)
    finally:
        await asyncio.gather(low.close(), plain.close())
        store.close()


async def test_the_exits_counter_is_at_zero_before_any_child_died(tmp_path):
    """`tailor_writer_exits_total{writer}` appeared only with the first death, at 1: a
    Prometheus increase() or rate() over it (an alert on writer deaths) starts from that first
    sample and misses the death that made it. Each writer's series is there from its start."""
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess(FACTORY, store, name="never-died")
    try:
        assert REGISTRY.get_sample_value("tailor_writer_exits_total",
                                         {"writer": "never-died"}) == 0.0
    finally:
        await writer.close()
        store.close()


async def test_children_are_forked_by_one_zygote_and_named_for_their_writer(tmp_path):
    """Both writers' children come from this process's zygote (one import of their modules,
    not one per child), and `ps` tells them apart."""
    store = Store(tmp_path / "store", sync=False)
    a, b = (WriterProcess(FACTORY, store, name=n) for n in ("alpha", "impressions"))
    try:
        await asyncio.gather(a.ready(), b.ready())
        parents = set()
        for writer, comm in ((a, "tailor-alpha"), (b, "tailor-impressi")):
            with open(f"/proc/{writer.pid}/comm") as f:
                assert f.read().strip() == comm
            with open(f"/proc/{writer.pid}/stat") as f:
                parents.add(int(f.read().rsplit(")", 1)[1].split()[1]))
        (zygote,) = parents
        with open(f"/proc/{zygote}/comm") as f:
            assert f.read().strip() == "tailor-zygote"
        with open(f"/proc/{zygote}/stat") as f:
            assert int(f.read().rsplit(")", 1)[1].split()[1]) == os.getpid()
    finally:
        await asyncio.gather(a.close(), b.close())
        store.close()


async def test_a_child_the_zygote_cannot_be_asked_for_fails_its_batches_with_unavailable(writer):
    """A restart whose request does not reach the zygote (here an environment larger than one
    socket message, which exec took; or a zygote that died a moment before) raised out of the
    batcher's `start`: its calls never got an answer and the batcher kept a slot busy for
    ever. They fail with UNAVAILABLE, the next try waits its backoff, and once the request
    fits again a new child takes the batches."""
    writer, batcher, store = writer
    first = writer.pid
    os.kill(first, signal.SIGKILL)
    assert await _exits(first)
    writer.env.update({f"TAILOR_TEST_BIG_{i}": "x" * 100_000 for i in range(3)})
    for _ in range(3):  # more than the batcher's two slots: none may be lost
        with pytest.raises(Unavailable, match="writer process failed to start"):
            await asyncio.wait_for(batcher.submit("k"), 10)
    for i in range(3):
        del writer.env[f"TAILOR_TEST_BIG_{i}"]
    deadline = time.monotonic() + 10
    while True:
        try:
            pid, _ = await asyncio.wait_for(batcher.submit("k"), 10)
            break
        except Unavailable:
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
    assert pid == writer.pid != first and store.get("meta", b"k") == b"v-k"


@pytest.mark.parametrize("message, code", [("", 0), ("refused: no store here", 1)])
async def test_a_child_that_exits_is_reported_with_the_code_an_interpreter_would_give(
        tmp_path, capfd, message, code):
    """A child is forked from the zygote, not run by an interpreter: `sys.exit()` in it ended
    with code 1 (not 0), and `sys.exit(message)` lost its message."""
    store = Store(tmp_path / "store", sync=False)
    writer = WriterProcess("tests.server.test_writer_process:exiting_functions", store,
                           name="exiting", env={"TAILOR_TEST_EXIT": message})
    with pytest.raises(RuntimeError, match=rf"exited \(code {code}\) before it was ready"):
        await writer.ready()
    await writer.close()
    store.close()
    if message:
        assert message in capfd.readouterr().err


def test_a_server_with_a_large_environment_starts_its_writers(tmp_path):
    """A child's request to the zygote is one socket message (~200 kB at most by default):
    a server whose environment exec took (3 x 100 kB) could not start its writers. Only what
    differs from the zygote's own environment (which it inherited from the server) is sent; the
    child still gets all of it, with the writer's own variables on top."""
    script = textwrap.dedent(f"""
        import asyncio, os
        from server.store import Store
        from server.batching import AdaptiveBatcher, WriterProcess
        async def main():
            store = Store({str(tmp_path / "s")!r}, sync=False)
            writer = WriterProcess({FACTORY!r}, store, name="t", env={{"TAILOR_TEST_OWN": "own"}})
            await writer.ready()
            batcher = AdaptiveBatcher(runner=writer.runner("env"), max_size=8, max_wait=0.0,
                                      name="t")
            print(await batcher.submit("TAILOR_TEST_BIG_2"), await batcher.submit("TAILOR_TEST_OWN"),
                  flush=True)
            await batcher.close()
            await writer.close()
        asyncio.run(main())
    """)
    env = {**os.environ, **{f"TAILOR_TEST_BIG_{i}": str(i) * 100_000 for i in range(3)}}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                         cwd=ROOT, env=env)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["100000", "3"]


def _process_with_pid(pid: int) -> subprocess.Popen | None:
    """A new process given `pid` (through ns_last_pid; None if another process took it first,
    or if this process may not set it)."""
    for _ in range(50):
        try:
            with open("/proc/sys/kernel/ns_last_pid", "w") as f:
                f.write(str(pid - 1))
        except OSError:
            return None
        proc = subprocess.Popen(["sleep", "30"])
        if proc.pid == pid:
            return proc
        proc.kill()
        proc.wait()
    return None


async def test_killing_a_child_whose_pid_was_taken_again_leaves_the_new_process_alone(writer):
    """The zygote reaps a child as soon as it exits; until the server has read that exit the
    child's pid is free, and may be another process's. `kill` (the runner's, after a close that
    timed out or an unreadable answer) signalled whatever process had that pid."""
    from server.batching.zygote import zygote

    writer, _, _ = writer
    child, pid = writer._child.proc, writer.pid
    with zygote()._lock:  # the reader thread cannot take the exit in yet
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{pid}")  # reaped by the zygote
        other = _process_with_pid(pid)
        if other is None:
            pytest.skip("could not give a new process the child's pid (ns_last_pid)")
        child.kill()
    try:
        time.sleep(0.1)
        assert other.poll() is None
    finally:
        other.kill()
        other.wait()


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


async def _gone(pid: int, within: float = 5.0) -> bool:
    """Whether `pid` is reaped (no zombie left) within `within` seconds."""
    deadline = time.monotonic() + within
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return not os.path.exists(f"/proc/{pid}")


async def test_a_dead_zygote_is_reaped_at_once_not_at_the_next_start(writer):
    """The zygote is this process's child: dead, it stayed a zombie until a new child was
    asked for (the next `zygote()` call)."""
    writer, _, _ = writer
    zygote = _parent(writer.pid)
    os.kill(zygote, signal.SIGKILL)
    assert await _gone(zygote)


async def test_killing_the_zygote_kills_its_stopped_writers_and_waits_for_its_reaping(writer):
    """The end of a one-worker server's stop bound (`kill_zygote`, then the reaping of what
    is left) killed the zygote's process group, which its writers are not in (each leads a
    session of its own): a stopped (hung) writer survived, and, when the reaping came before
    the zygote's death had handed it back to this process, was left to PID 1, stopped."""
    from server.batching.zygote import kill_zygote

    writer, _, _ = writer
    pid = writer.pid
    zygote = _parent(pid)
    os.kill(pid, signal.SIGSTOP)
    try:
        kill_zygote()
        assert await _gone(pid)  # before: stopped for ever
        assert not os.path.exists(f"/proc/{zygote}")  # reaped before it returned
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_a_child_outliving_its_zygote_is_reaped_here_and_logged_with_how_it_ended(
        writer, caplog):
    """A child whose zygote died goes on serving, re-parented: to PID 1, which in a container
    without an init that reaps left it a zombie once it exited, its end logged 'status not
    known yet'. It comes back to this process, which reaps it and knows how it ended."""
    writer, batcher, _ = writer
    pid = writer.pid
    zygote = _parent(pid)
    os.kill(zygote, signal.SIGKILL)
    assert await _gone(zygote, 10)
    assert (await batcher.submit("k"))[0] == pid  # it goes on
    assert _parent(pid) == os.getpid()
    os.kill(pid, signal.SIGKILL)
    assert await _gone(pid)
    deadline = time.monotonic() + 5
    while not any("batches unanswered" in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert [r.getMessage() for r in caplog.records if "batches unanswered" in r.getMessage()] == [
        "the test writer process was killed by SIGKILL with 0 batches unanswered"]


async def _stop_the_zygote_of_a_dead_child(writer) -> int:
    """Kill the writer's child and, once the runner saw it go (the next batch asks the zygote
    for a child), SIGSTOP the zygote: the next child's start waits for it. Its pid, for the
    SIGCONT."""
    first = writer.pid
    zygote = _parent(first)
    os.kill(first, signal.SIGKILL)
    while writer._child is not None:
        await asyncio.sleep(0.01)
    os.kill(zygote, signal.SIGSTOP)
    return zygote


async def test_a_child_a_stopped_zygote_does_not_answer_for_is_a_failed_start(writer, monkeypatch):
    """A zygote that does not answer (SIGSTOP, a debugger) has not forked the child: its
    batches waited for ever, and so did `pid` (read by `kill`, on the event loop). After
    `START_SECONDS` the start has failed: its batches fail UNAVAILABLE, saying they were not
    made (they said 'may or may not have been made': none reaches a child before it is
    ready), the next waits its backoff, and `pid` answers None."""
    from server.batching.zygote import ZygoteChild

    monkeypatch.setattr(ZygoteChild, "START_SECONDS", 1.0)
    writer, batcher, _ = writer
    zygote = await _stop_the_zygote_of_a_dead_child(writer)
    try:
        submitted = asyncio.ensure_future(batcher.submit("k"))
        await asyncio.sleep(0.1)
        proc = writer._child.proc
        assert await asyncio.wait_for(asyncio.to_thread(lambda: proc.pid), 10) is None
        with pytest.raises(Unavailable) as lost:
            await asyncio.wait_for(submitted, 10)
        assert str(lost.value) == ("the test writer process did not start (the writer zygote did "
                                   "not answer in 1 s); the write was not made, a retry is safe")
        with pytest.raises(Unavailable, match="failed to start; next try in"):
            await asyncio.wait_for(batcher.submit("k"), 10)
    finally:
        os.kill(zygote, signal.SIGCONT)


async def test_a_child_ready_only_after_its_close_gave_up_is_sent_nothing(writer, monkeypatch,
                                                                          tmp_path):
    """A batch waits in the server until its child is ready. A close that gave up on a child
    not ready yet closes its stdin; a READY read after that (a zygote stopped, then continued)
    flushed the batch into the descriptor number the stdin had, which the process may have
    given to another file since: the frame went into that file (here one put at that number)."""
    from server.batching.zygote import ZygoteChild

    monkeypatch.setattr(ZygoteChild, "START_SECONDS", 10.0)
    writer, _, store = writer
    zygote = await _stop_the_zygote_of_a_dead_child(writer)
    victim = tmp_path / "victim"
    try:
        loop = asyncio.get_running_loop()
        answered = loop.create_future()
        writer.start(loop, "put", ["k"], answered.set_result)
        child = writer._child
        closing = asyncio.ensure_future(writer.close(timeout=0.2))  # the pid unknown: no kill
        while not child.proc.stdin.closed:
            await asyncio.sleep(0.01)
        fd = os.open(victim, os.O_WRONLY | os.O_CREAT)
        os.dup2(fd, child.to_child)  # another file now has the number
        os.kill(zygote, signal.SIGCONT)  # it forks the child, which gets ready
        (err,) = await asyncio.wait_for(answered, 20)
        await asyncio.wait_for(closing, 20)
        os.close(child.to_child)
        os.close(fd)
    finally:
        os.kill(zygote, signal.SIGCONT)
    assert victim.stat().st_size == 0
    assert isinstance(err, Unavailable) and store.get("meta", b"k") is None


async def test_a_zygote_silent_for_the_start_bound_is_asked_for_no_more_children(
        writer, monkeypatch):
    """Each start given up on left its request queued to a stopped zygote: after ~280 (about
    two hours of a server's retries) the socket was full and the next request blocked the
    event loop for good, and a SIGCONT forked them all at once. Once the oldest request has
    waited `START_SECONDS`, a start is refused at once; the zygote answered again, it takes
    requests again."""
    from server.batching.zygote import ZygoteChild, zygote

    monkeypatch.setattr(ZygoteChild, "START_SECONDS", 0.5)
    writer, batcher, _ = writer
    zyg = zygote()
    os.kill(zyg.proc.pid, signal.SIGSTOP)

    def ask(times: int) -> int:
        refused = 0
        for _ in range(times):
            try:
                child = zyg.spawn("t", writer.argv, {})
            except OSError:
                refused += 1
                continue
            child.stdin.close()
            child.stdout.close()
        return refused

    try:
        assert ask(1) == 0  # queued: the zygote may just be slow
        await asyncio.sleep(0.6)
        refused = await asyncio.wait_for(asyncio.to_thread(ask, 600), 20)
        with pytest.raises(OSError, match="has not answered for"):  # while it is still stopped:
            zyg.spawn("t", writer.argv, {})  # once continued, it may answer at once
    finally:
        os.kill(zyg.proc.pid, signal.SIGCONT)
    assert refused == 600
    deadline = time.monotonic() + 10
    while zyg._pending:  # the late answer, to the request still queued
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    child = zyg.spawn("t", writer.argv, {})  # answered again: asked again
    child.stdin.close()
    child.stdout.close()
    assert await asyncio.to_thread(lambda: child.pid) is not None
    assert (await batcher.submit("k"))[0] == writer.pid


def test_a_priority_the_child_may_not_take_is_logged_in_the_servers_log_format(tmp_path):
    """Lowering the child's niceness below the server's needs CAP_SYS_NICE (dropped here):
    the failure was printed to stderr as plain text, outside the log (JSON here)."""
    script = textwrap.dedent(f"""
        import asyncio
        from server.store import Store
        from server.batching import WriterProcess
        async def main():
            writer = WriterProcess({FACTORY!r}, Store({str(tmp_path / "s")!r}, sync=False),
                                   name="t", nice=-5)
            await writer.ready()
            await writer.close()
        asyncio.run(main())
    """)
    drop = ["setpriv", "--bounding-set", "-sys_nice", "--inh-caps", "-sys_nice"]
    if os.geteuid() == 0 and not shutil.which("setpriv"):
        pytest.skip("root, and no setpriv to drop CAP_SYS_NICE with")
    out = subprocess.run([*(drop if os.geteuid() == 0 else []), sys.executable, "-c", script],
                         capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TAILOR_LOG_FORMAT": "json"},
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = [json.loads(line) for line in out.stderr.splitlines() if line.startswith("{")]
    assert [(line["level"], line["logger"], line["message"]) for line in lines
            if "priority" in line["message"]] == [
        ("WARNING", "tailor.writer_child",
         "could not lower the t writer's priority: [Errno 13] Permission denied")]
    assert "priority" not in "".join(line for line in out.stderr.splitlines()
                                     if not line.startswith("{"))


def test_a_server_that_exits_reaps_its_zygote(tmp_path):
    """The zygote exits when its socket closes, a moment after the server: it was then left to
    the nearest subreaper (this test process, as a server is, or PID 1), which does not reap
    what it does not know: a zombie. The server now ends it and reaps it as it exits."""
    from server.batching.zygote import _subreaper

    assert _subreaper()  # what the server's exit leaves comes to this process (a server, too)
    script = textwrap.dedent(f"""
        import asyncio, os
        from server.store import Store
        from server.batching import WriterProcess
        async def main():
            writer = WriterProcess({FACTORY!r}, Store({str(tmp_path / "s")!r}, sync=False), name="t")
            await writer.ready()
            with open(f"/proc/{{writer.pid}}/stat") as f:
                print(f.read().rsplit(")", 1)[1].split()[1], flush=True)
            await writer.close()
        asyncio.run(main())
    """)
    zygote, stderr = _printed_pid(script)
    deadline = time.monotonic() + 5
    while os.path.exists(f"/proc/{zygote}") and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not os.path.exists(f"/proc/{zygote}")
    assert "the writer zygote exited" not in stderr  # an exit, not a death: no warning


def test_a_server_exits_at_once_and_reaps_a_stopped_zygote(tmp_path):
    """A stopped zygote (SIGSTOP, a debugger) does not see its socket close: the exit waited
    the whole bound (10 s) for it, then left it stopped for good."""
    from server.batching.zygote import _subreaper

    assert _subreaper()  # what the exit leaves comes to this process, to be checked
    script = textwrap.dedent(f"""
        import asyncio, os, signal
        from server.store import Store
        from server.batching import WriterProcess
        async def main():
            writer = WriterProcess({FACTORY!r}, Store({str(tmp_path / "s")!r}, sync=False), name="t")
            await writer.ready()
            with open(f"/proc/{{writer.pid}}/stat") as f:
                zygote = int(f.read().rsplit(")", 1)[1].split()[1])
            await writer.close()
            os.kill(zygote, signal.SIGSTOP)
            print(zygote, flush=True)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    zygote = None
    try:
        zygote = int(proc.stdout.readline())
        stopped = time.monotonic()
        assert proc.wait(60) == 0
        exited = time.monotonic() - stopped
        deadline = time.monotonic() + 5
        while os.path.exists(f"/proc/{zygote}") and time.monotonic() < deadline:
            time.sleep(0.01)
        assert not os.path.exists(f"/proc/{zygote}")
        assert exited < 5
    finally:
        proc.kill()
        proc.wait()
        if zygote is not None and os.path.exists(f"/proc/{zygote}"):
            os.kill(zygote, signal.SIGKILL)
            try:
                os.waitpid(zygote, 0)
            except ChildProcessError:
                pass


def test_a_server_whose_zygote_is_stopped_still_stops(tmp_path):
    """A stopped zygote reaps nothing and reports no exit. A writer closed then (the server's
    stop) waited for the report for ever, and one that had crashed kept a thread of the
    loop's default executor waiting for it, which `asyncio.run` joins at its end: the server
    never exited. Both waits are bounded; the zygote is ended at the exit."""
    from server.batching.zygote import _subreaper

    assert _subreaper()  # what the exit leaves comes to this process, to be reaped here
    script = textwrap.dedent(f"""
        import asyncio, os, signal, time
        from server.store import Store
        from server.batching import WriterProcess, process_runner
        process_runner._REPORT_SECONDS = 0.5
        async def main():
            store = Store({str(tmp_path / "s")!r}, sync=False)
            crashed, closed = (WriterProcess({FACTORY!r}, store, name=n) for n in ("a", "b"))
            await asyncio.gather(crashed.ready(), closed.ready())
            with open(f"/proc/{{crashed.pid}}/stat") as f:
                zygote = int(f.read().rsplit(")", 1)[1].split()[1])
            print(zygote, flush=True)
            os.kill(zygote, signal.SIGSTOP)
            os.kill(crashed.pid, signal.SIGKILL)
            while crashed._child is not None:
                await asyncio.sleep(0.01)
            await closed.close()
            await crashed.close()
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            cwd=ROOT)
    zygote = None
    try:
        zygote = int(proc.stdout.readline())
        assert proc.wait(30) == 0
    finally:
        proc.kill()
        proc.wait()
        if zygote is not None and os.path.exists(f"/proc/{zygote}"):
            os.kill(zygote, signal.SIGKILL)
            os.kill(zygote, signal.SIGCONT)
            try:
                os.waitpid(zygote, 0)
            except ChildProcessError:
                pass

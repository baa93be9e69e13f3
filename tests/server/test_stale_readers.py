"""A process killed inside a read transaction of the store (a `backup` SIGKILLed while it copies,
a writer process killed by the OOM killer) leaves its slot in LMDB's reader table, and the
snapshot it names keeps every page freed since from being reused: the data file grows with every
write. A store frees such slots when it opens, and a server every `store_metrics_seconds`."""
import asyncio
import os
import subprocess
import sys
import time

from server.app import TailorServer
from server.store import Store
from tests.conftest import ROOT, server_settings

_READ_AND_WAIT = """
import sys, time
from pathlib import Path
from server.store.backup import _open_readonly
env = _open_readonly(Path(sys.argv[1]))
if sys.argv[2] == "read":
    txn = env.begin()
print('open', flush=True)
time.sleep(60)
"""


def _opened(store_dir, how: str) -> subprocess.Popen:
    """A process that opened the store as `backup` does (and, `how` "read", began a read)."""
    proc = subprocess.Popen([sys.executable, "-c", _READ_AND_WAIT, str(store_dir), how],
                            cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "open\n"
    return proc


def _killed_while_reading(store_dir) -> int:
    """The pid of a process that opened the store as `backup` does, began a read and was
    SIGKILLed inside it."""
    proc = _opened(store_dir, "read")
    proc.kill()
    proc.wait(10)
    return proc.pid


def _holds_slot(store: Store, pid: int) -> bool:
    return any(line.split()[:1] == [str(pid)] for line in store.env.readers().splitlines())


def _rewrite(store: Store, rounds: int) -> None:
    """The same 500 records of 2 KB written again `rounds` times (no new data)."""
    table = store.raw_table("meta")
    for _ in range(rounds):
        store.write(lambda txn: [table.put(txn, f"stale-readers-{i}".encode(), os.urandom(2000))
                                 for i in range(500)])


def test_a_store_opened_after_a_reader_was_killed_frees_its_slot(tmp_path):
    Store(tmp_path / "s", sync=False).close()
    live = _opened(tmp_path / "s", "read")  # keeps the store open (as a server would), reading
    try:
        dead = _killed_while_reading(tmp_path / "s")
        store = Store(tmp_path / "s", sync=False)  # e.g. a writer process started again
        try:
            assert not _holds_slot(store, dead)
            assert _holds_slot(store, live.pid)  # a live reader keeps its snapshot
            live.kill()
            live.wait(10)
            assert store.clear_stale_readers() == 1
            _rewrite(store, 1)
            used = store.usage()["used"]
            _rewrite(store, 20)
            # each rewrite frees the pages of the one before: with a dead snapshot pinned the
            # file grows by ~1 MB a round (20 MB more); here they are reused
            assert store.usage()["used"] - used < 4 << 20
        finally:
            store.close()
    finally:
        live.kill()
        live.wait(10)


async def test_a_serving_worker_frees_the_slot_of_a_reader_killed_meanwhile(tmp_path, demo_bundle):
    settings = server_settings(tmp_path, demo_bundle).model_copy(
        update={"store_metrics_seconds": 0.2})
    server = TailorServer(settings)
    await server.start()
    try:
        dead = await asyncio.to_thread(_killed_while_reading, settings.store_dir)
        deadline = time.monotonic() + 10
        while _holds_slot(server.store, dead) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert not _holds_slot(server.store, dead), "the dead reader's slot is still held"
    finally:
        await server.stop(grace=0.5)

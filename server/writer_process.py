"""Write batches run in a child process: `WriterProcess` (the server's side) and the child's loop.

A write batch run on a pool thread shares the GIL with the event loop. Each time the thread comes
back from LMDB (begin, commit, the fsyncs) it waits for the loop to let go of the GIL (up to a
switch interval), and while it runs Python the loop waits for it. A child process has its own
GIL: the loop only pickles the batch into a pipe and reads the answer when it comes, with no
thread hop and no GIL hand-off. The child opens the same LMDB store (LMDB serialises writers
across processes, and readers in the server see a commit as soon as it is made), so a batch
commits exactly as it would on a thread, before its callers get their answers.

Frames on the child's stdin and stdout are `<Q length><pickle>`. Server to child:
`(seq, function, queries)`; child to server: `(seq, results)`, one result or exception per
query, as `AdaptiveBatcher` expects; seq 0 says the child is ready. The child runs all the
complete frames it has for one function in one call: batches that queued while it committed
share the next transaction and fsync.

The child ignores SIGINT and SIGTERM and exits when its stdin closes, i.e. when the server closes
it or dies, so a stopping server finishes its batches first. If the child dies, the batches it
had fail with UNAVAILABLE (they may or may not have been written) and the next batch starts a
new child.

    python -m server.writer_process MODULE:FACTORY STORE_JSON   (started by WriterProcess)
"""
from __future__ import annotations

import asyncio
import importlib
import itertools
import json
import logging
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .batching import BatcherClosed, Done
from .errors import Unavailable
from .logging import configure_logging

__all__ = ["WriterProcess"]

logger = logging.getLogger("tailor.writer_process")

_HEADER = struct.Struct("<Q")
_READY = 0
_PROJECT = str(Path(__file__).resolve().parents[1])


def _frame(obj) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _take_frames(buf: bytearray) -> list:
    """Unpickle and remove the complete frames at the start of `buf`."""
    out, at = [], 0
    while len(buf) - at >= _HEADER.size:
        (n,) = _HEADER.unpack_from(buf, at)
        if len(buf) - at - _HEADER.size < n:
            break
        out.append(pickle.loads(buf[at + _HEADER.size:at + _HEADER.size + n]))
        at += _HEADER.size + n
    del buf[:at]
    return out


class WriterProcess:
    """A child process that runs, by name, the batch functions `factory(store)` returns.

    `factory` is "module:function"; the function takes a `Store` opened like `store` and returns
    {name: batch function}. `runner(name)` is an `AdaptiveBatcher` runner for one of them.
    Use it from one event loop; `close()` after the batchers that use it.
    """

    def __init__(self, factory: str, store, *, name: str):
        self.factory = factory
        self.store_args = json.dumps(store.open_args)
        self.name = name
        self._seq = itertools.count(_READY + 1)
        self._waiting: dict[int, tuple[int, Done]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._proc: subprocess.Popen | None = None
        self._inbox = bytearray()
        self._outbox = bytearray()
        self._ready: asyncio.Future | None = None
        self._gone: asyncio.Future | None = None
        self._closed = False
        self._spawn()

    def runner(self, function: str, concurrency: int = 2) -> _FunctionRunner:
        return _FunctionRunner(self, function, concurrency)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    async def ready(self, timeout: float = 120.0) -> None:
        """Wait until the child has opened the store (raises if it exited instead)."""
        self._attach(asyncio.get_running_loop())
        await asyncio.wait_for(asyncio.shield(self._ready), timeout)

    # -- the child process -----------------------------------------------------------------------
    def _spawn(self) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PROJECT, os.environ.get("PYTHONPATH")) if p)}
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "server.writer_process", self.factory, self.store_args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env, start_new_session=True)
        os.set_blocking(self._proc.stdin.fileno(), False)
        os.set_blocking(self._proc.stdout.fileno(), False)
        self._inbox.clear()
        self._outbox.clear()
        self._ready = self._gone = None
        if self._loop is not None:
            self._watch()

    def _attach(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is None:
            self._loop = loop
            self._watch()
        elif loop is not self._loop:
            raise RuntimeError(f"the {self.name} writer process is in use by another event loop")

    def _watch(self) -> None:
        self._ready = self._loop.create_future()
        self._gone = self._loop.create_future()
        self._loop.add_reader(self._proc.stdout.fileno(), self._on_readable)

    # -- batches ---------------------------------------------------------------------------------
    def start(self, loop: asyncio.AbstractEventLoop, function: str, queries: list,
              done: Done) -> None:
        if self._closed:
            done([BatcherClosed(self.name)] * len(queries))
            return
        if self._proc is None:
            logger.warning("starting a new %s writer process", self.name)
            self._spawn()
        self._attach(loop)
        seq = next(self._seq)
        try:
            frame = _frame((seq, function, queries))
        except Exception as err:  # noqa: BLE001 - a query that cannot be pickled fails its batch
            done([err] * len(queries))
            return
        self._waiting[seq] = (len(queries), done)
        self._outbox += frame
        if len(self._outbox) == len(frame):
            self._flush()

    def _flush(self) -> None:
        fd = self._proc.stdin.fileno()
        try:
            sent = os.write(fd, self._outbox)
        except BlockingIOError:
            sent = 0
        except OSError:  # the child is gone: its end of file on stdout fails the batches
            self._outbox.clear()
            self._loop.remove_writer(fd)
            return
        del self._outbox[:sent]
        if self._outbox:
            self._loop.add_writer(fd, self._flush)
        else:
            self._loop.remove_writer(fd)

    def _on_readable(self) -> None:
        try:
            chunk = os.read(self._proc.stdout.fileno(), 1 << 20)
        except BlockingIOError:
            return
        if not chunk:
            self._on_exit()
            return
        self._inbox += chunk
        for seq, results in _take_frames(self._inbox):
            if seq == _READY:
                if not self._ready.done():
                    self._ready.set_result(None)
                continue
            _, done = self._waiting.pop(seq)
            done(results)

    def _on_exit(self) -> None:
        proc, self._proc = self._proc, None
        self._loop.remove_reader(proc.stdout.fileno())
        if not proc.stdin.closed:
            self._loop.remove_writer(proc.stdin.fileno())
            proc.stdin.close()
        proc.stdout.close()
        code = proc.wait()  # its stdout closed: it has exited or is exiting
        if not self._closed:
            logger.error("the %s writer process exited with code %s (%d batches lost)",
                         self.name, code, len(self._waiting))
        lost = Unavailable(f"the {self.name} writer process exited (code {code}) before "
                           "answering; the write may or may not have been made, retry")
        waiting, self._waiting = self._waiting, {}
        for n, done in waiting.values():
            done([lost] * n)
        if not self._ready.done():
            self._ready.set_exception(RuntimeError(
                f"the {self.name} writer process exited with code {code} before it was ready"))
        self._gone.set_result(code)

    async def close(self, timeout: float = 30.0) -> None:
        """Let the child finish the batches it has, then stop it."""
        self._closed = True
        proc = self._proc
        if proc is None:
            return
        if self._loop is None:  # never used: nothing in flight
            proc.stdin.close()
            await asyncio.to_thread(proc.wait, timeout)
            proc.stdout.close()
            self._proc = None
            return
        gone = self._gone
        self._loop.remove_writer(proc.stdin.fileno())
        if self._outbox:  # hand over what the pipe did not take yet, then close it
            os.set_blocking(proc.stdin.fileno(), True)
            try:
                proc.stdin.write(self._outbox)
            except OSError:  # the child is gone: its end of file fails the batches
                pass
            self._outbox.clear()
        proc.stdin.close()
        try:
            await asyncio.wait_for(asyncio.shield(gone), timeout)
        except asyncio.TimeoutError:
            logger.error("the %s writer process did not stop in %.0f s; killing it", self.name, timeout)
            proc.kill()
            await gone


@dataclass
class _FunctionRunner:
    """An `AdaptiveBatcher` runner for one function of a `WriterProcess`."""

    writer: WriterProcess
    function: str
    concurrency: int

    def start(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        self.writer.start(loop, self.function, queries, done)

    async def close(self) -> None:
        """Nothing to do: the writer's owner closes it, after every batcher that uses it."""


# -- the child ---------------------------------------------------------------------------------
class _Inbox:
    """Frames from the server: wait for one, then take every other one already there."""

    def __init__(self, fd: int):
        self.fd = fd
        self.buf = bytearray()
        self.eof = False

    def next(self) -> list | None:
        frames = _take_frames(self.buf)
        while not self.eof and (not frames or select.select([self.fd], [], [], 0)[0]):
            chunk = os.read(self.fd, 1 << 20)
            self.eof = not chunk
            self.buf += chunk
            frames += _take_frames(self.buf)
        return frames or None


def _run(fn: Callable[[Sequence], Sequence], frames: list) -> list[tuple[int, list]]:
    """One call of `fn` for every query of `frames`; (seq, results) per frame."""
    queries = [q for _, _, qs in frames for q in qs]
    try:
        results = list(fn(queries))
        if len(results) != len(queries):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(queries)}")
    except Exception as err:  # noqa: BLE001 - every query of the batch gets the error
        logger.exception("batch of %d failed", len(queries))
        results = [err] * len(queries)
    out, at = [], 0
    for seq, _, qs in frames:
        out.append((seq, results[at:at + len(qs)]))
        at += len(qs)
    return out


def _portable(answer: tuple[int, list]) -> bytes:
    """The answer's frame; a result that does not pickle is sent as a RuntimeError."""
    try:
        return _frame(answer)
    except Exception:  # noqa: BLE001 - the server still gets one answer per query
        seq, results = answer
        return _frame((seq, [r if _pickles(r) else RuntimeError(f"{type(r).__name__}: {r}")
                             for r in results]))


def _pickles(obj) -> bool:
    try:
        pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        return True
    except Exception:  # noqa: BLE001 - whatever pickling raises
        return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def main(argv: Sequence[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stop when the server closes stdin, not before
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the frames
    configure_logging()
    from .store import Store

    factory, store_args = argv
    module, _, attr = factory.partition(":")
    functions = getattr(importlib.import_module(module), attr)(Store(**json.loads(store_args)))
    _write_all(out, _frame((_READY, None)))
    inbox = _Inbox(sys.stdin.fileno())
    while (frames := inbox.next()) is not None:
        answers = []
        for function, group in itertools.groupby(frames, key=lambda f: f[1]):
            fn = functions.get(function)
            if fn is None:
                fn = _unknown(function, factory)
            answers += _run(fn, list(group))
        _write_all(out, b"".join(_portable(a) for a in answers))


def _unknown(function: str, factory: str) -> Callable[[Sequence], Sequence]:
    def fail(queries):
        raise KeyError(f"{factory} has no batch function {function!r}")
    return fail


if __name__ == "__main__":
    main(sys.argv[1:])

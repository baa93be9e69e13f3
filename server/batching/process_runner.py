"""`WriterProcess`: write batches run in a child process (this is the server's side).

A write batch run on a pool thread shares the GIL with the event loop. Each time the thread comes
back from LMDB (begin, commit, the fsyncs) it waits for the loop to let go of the GIL (up to a
switch interval), and while it runs Python the loop waits for it. A child process has its own
GIL: the loop only pickles the batch into a pipe and reads the answer when it comes, with no
thread hop and no GIL hand-off. The child opens the same LMDB store (LMDB serialises writers
across processes, and readers in the server see a commit as soon as it is made), so a batch
commits exactly as it would on a thread, before its callers get their answers.

The child (`server.batching.child`; frames in `server.batching.frames`) is forked from the
process's zygote (`server.batching.zygote`), which has imported the writers' modules once: a
start or restart costs a fork, not an interpreter's imports. It ignores SIGINT, SIGTERM and
SIGHUP and exits when its stdin closes, so a stopping server finishes its batches first. A batch
reaches the child only once it is ready (it said it opened the store): until then it waits here.
If a ready child dies, the batches it had fail with UNAVAILABLE (they may or may not have been
written) and the next batch starts a new child; those of a child that was never ready (the
zygote could not fork it, did not answer within `ZygoteChild.START_SECONDS`, or forked it and
it died first) fail with UNAVAILABLE too, saying they were not written. A child that dies before
it is ready is restarted no sooner than 0.5 s later, doubling up to 30 s; batches fail with
UNAVAILABLE meanwhile. So does one the zygote has not forked within `START_SECONDS` (30 s; a
stopped zygote), and, while it stays silent, every later start at once (`Zygote.spawn`
refuses to queue more).
"""
from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass

from .. import metrics
from ..errors import Unavailable
from .adaptive import Done
from .errors import BatcherClosed
from .frames import READY, PipeReader, frame, take_frames
from .logging import process_logger as logger
from .zygote import ZygoteChild, zygote

__all__ = ["WriterProcess"]

_FIRST_BACKOFF, _MAX_BACKOFF = 0.5, 30.0


class WriterProcess:
    """A child process that runs, by name, the batch functions `factory(store)` returns.

    `factory` is "module:function"; the function takes a `Store` opened like `store` and returns
    {name: batch function}. `runner(name)` is an `AdaptiveBatcher` runner for one of them.
    Create it on the event loop that will use it; `close()` it after the batchers that use it.
    `nice`: added to the server's niceness for the child, which then also runs under
    `SCHED_BATCH` (a writer whose callers do not wait for it, such as the impression log's,
    yields the CPU to serving when both want it, and does not preempt it on waking). `env`:
    variables the child gets on top of the server's environment (e.g. settings the server took
    from its config file, which the child does not read).
    """

    def __init__(self, factory: str, store, *, name: str, nice: int = 0,
                 env: Mapping[str, str] | None = None):
        self.name = name
        self.nice = nice
        self.env = dict(env or {})
        """Variables set for the child on top of the server's environment."""
        self.argv = [factory, json.dumps(store.open_args)]
        """The child's arguments (`server.batching.child.main`)."""
        self.loop = asyncio.get_running_loop()
        self._seq = itertools.count(READY + 1)
        self._failed_starts = 0
        self._next_start = 0.0
        self._closed = False
        self._child: _Child | None = self._spawn()
        metrics.WRITER_EXITS.labels(name)  # at 0 from the start: a rate() sees the first death

    def runner(self, function: str, concurrency: int = 2) -> _FunctionRunner:
        """Two batches in flight by default: the child takes the second once the first commits."""
        return _FunctionRunner(self, function, concurrency)

    @property
    def pid(self) -> int | None:
        return self._child.proc.pid if self._child is not None else None

    async def ready(self, timeout: float = 120.0) -> None:
        """Wait until the child has opened the store (raises if it exited instead)."""
        if self._child is None:
            raise Unavailable(f"the {self.name} writer process is not running")
        await asyncio.wait_for(asyncio.shield(self._child.ready), timeout)

    def start(self, loop: asyncio.AbstractEventLoop, function: str, queries: list,
              done: Done) -> None:
        if self._closed:
            done([BatcherClosed(self.name)] * len(queries))
            return
        if loop is not self.loop:
            raise RuntimeError(f"the {self.name} writer process belongs to another event loop")
        child = self._child or self._restart()
        if child is None:
            wait = self._next_start - time.monotonic()
            done([Unavailable(f"the {self.name} writer process failed to start; "
                              f"next try in {wait:.1f} s")] * len(queries))
            return
        seq = next(self._seq)
        try:
            data = frame((seq, function, queries))
        except Exception as err:  # noqa: BLE001 - a query that cannot be pickled fails its batch
            done([err] * len(queries))
            return
        child.send(seq, data, len(queries), done)

    def _restart(self) -> _Child | None:
        if time.monotonic() < self._next_start:
            return None
        logger.warning("starting a new %s writer process", self.name)
        self._child = self._spawn()
        return self._child

    def _spawn(self) -> _Child | None:
        """A new child, or None if the zygote could not be asked for one (it died a moment
        ago, or the request is larger than one socket message): a failed start, retried after
        its backoff. Raised, it left the batch that asked without an answer and its batcher's
        slot taken for ever."""
        try:
            return _Child(self)
        except OSError as err:
            logger.error("could not start the %s writer process: %s", self.name, err)
            self._failed_start()
            return None

    def exited(self, child: _Child, was_ready: bool) -> None:
        """Called by a child that is gone, before it fails its batches (which may start the next)."""
        if child is self._child:
            self._child = None
        if was_ready:
            self._failed_starts = 0
        else:
            self._failed_start()

    def _failed_start(self) -> None:
        self._failed_starts += 1
        backoff = min(_MAX_BACKOFF, _FIRST_BACKOFF * 2 ** (self._failed_starts - 1))
        self._next_start = time.monotonic() + backoff

    async def close(self, timeout: float = 30.0) -> None:
        """Let the child finish the batches it has, then stop it."""
        self._closed = True
        child, self._child = self._child, None
        if child is not None:
            await child.close(timeout)


_REAP_SECONDS = 0.1
"""How long a crashed child's exit status is waited for, to log how it ended: its pipe closes
as the kernel tears it down, a moment before it can be reaped (the status read at once was
None, logged as 'code None' for a child killed by SIGKILL)."""


_REPORT_SECONDS = 5.0
"""How long `close` waits for the zygote to report its stopped child's exit (it reaps it at
once). A stopped zygote never does: the close, and the server's stop, waited for ever. (The
zygote reaps its children: nothing here waits for the exit of one that crashed; a thread of the
loop's default executor did, which `asyncio.run` joins at its end.)"""


def _exit_code(proc: ZygoteChild, wait: float) -> int | None:
    """The child's exit status, waiting up to `wait` seconds for it; None if not known yet."""
    try:
        return proc.wait(wait) if wait else proc.poll()
    except subprocess.TimeoutExpired:
        return None


def _ended(code: int | None) -> str:
    """How a child ended, for the log: 'was killed by SIGKILL', 'exited with code 3'."""
    if code is None:
        return "exited (status not known yet)"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"


class _Child:
    """One child process and its two pipes, driven by callbacks on the writer's event loop."""

    def __init__(self, writer: WriterProcess):
        self.writer = writer
        self.loop = writer.loop
        niceness = min(19, os.getpriority(os.PRIO_PROCESS, 0) + writer.nice) if writer.nice else None
        self.proc = zygote().spawn(writer.name, writer.argv, writer.env, niceness)
        self.to_child, self.from_child = self.proc.stdin.fileno(), self.proc.stdout.fileno()
        os.set_blocking(self.to_child, False)
        os.set_blocking(self.from_child, False)
        self.inbox, self.outbox = PipeReader(self.from_child), bytearray()
        self.waiting: dict[int, tuple[int, Done]] = {}
        self.ready = self.loop.create_future()
        self.gone = self.loop.create_future()
        self._drained: asyncio.Future | None = None
        self._closing = False
        self._given_up = False
        self.loop.add_reader(self.from_child, self._on_readable)
        self.loop.call_later(ZygoteChild.START_SECONDS, self._check_answered)

    def _check_answered(self) -> None:
        """A child the zygote has not answered for (a stopped or stuck zygote has not forked
        it) is a failed start: its batches fail and the next start waits its backoff. Its
        batches waited for ever, and so did a `close`."""
        if self.gone.done() or self.proc.answered():
            return
        logger.error("the writer zygote did not answer in %.0f s: the %s writer process did "
                     "not start", ZygoteChild.START_SECONDS, self.writer.name)
        self._given_up = True
        self.proc.abandon()
        self._on_exit()

    def send(self, seq: int, data: bytes, n: int, done: Done) -> None:
        """Queue a batch; it reaches the child's stdin only once the child is ready (`_lost`)."""
        self.waiting[seq] = (n, done)
        idle = not self.outbox
        self.outbox += data
        if idle and self.ready.done() and not self.gone.done():
            self._flush()

    def _flush(self) -> None:
        try:
            sent = os.write(self.to_child, self.outbox)
        except BlockingIOError:
            sent = 0
        except OSError:  # the child is gone: its end of file on stdout fails the batches
            sent = len(self.outbox)
        del self.outbox[:sent]
        if self.outbox:
            self.loop.add_writer(self.to_child, self._flush)
            return
        self.loop.remove_writer(self.to_child)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _on_readable(self) -> None:
        try:
            if not self.inbox.fill():
                self._on_exit()
                return
        except BlockingIOError:
            return
        try:
            answers = take_frames(self.inbox.buf)
        except Exception:  # noqa: BLE001 - a broken answer: stop the child, fail its batches
            logger.exception("the %s writer process sent an unreadable answer; stopping it",
                             self.writer.name)
            self.inbox.buf.clear()
            self.proc.kill()
            return
        for seq, results in answers:
            if seq == READY:
                self.ready.set_result(None)
                if self.outbox and not self.proc.stdin.closed:  # what was sent meanwhile
                    self._flush()  # waited for it (not once a close gave up: the number of the
                    # closed stdin may be another file's by now)
            elif (entry := self.waiting.pop(seq, None)) is not None:
                self._answer(entry[1], results)

    def _answer(self, done: Done, results) -> None:
        try:
            done(results)
        except Exception:  # noqa: BLE001 - one caller's failure must not lose the others' answers
            logger.exception("answering a %s batch failed", self.writer.name)

    def _on_exit(self) -> None:
        self.loop.remove_reader(self.from_child)
        if not self.proc.stdin.closed:
            self.loop.remove_writer(self.to_child)
            self.proc.stdin.close()
        self.proc.stdout.close()
        waiting, self.waiting = self.waiting, {}
        crashed = not self._closing or waiting
        code = _exit_code(self.proc, wait=_REAP_SECONDS if crashed else 0.0)
        was_ready = self.ready.done()
        self.writer.exited(self, was_ready)
        if crashed and self.proc.pid is not None:  # not forked: the zygote's error says why
            logger.error("the %s writer process %s with %d batches unanswered",
                         self.writer.name, _ended(code), len(waiting))
            metrics.WRITER_EXITS.labels(self.writer.name).inc()
        if not was_ready:
            self.ready.set_exception(RuntimeError(
                f"the {self.writer.name} writer process exited (code {code}) before it was ready"))
            self.ready.exception()  # logged above; `ready()` raises it to whoever waits
        self.gone.set_result(code)
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)
        lost = self._lost(was_ready)
        for n, done in waiting.values():
            self._answer(done, [lost] * n)

    def _lost(self, was_ready: bool) -> Unavailable:
        """The error of the batches this child did not answer. No batch reaches a child before
        it is ready (`send`), and one that never said so ran none of them: a retry is safe,
        whether the zygote could not fork it, did not answer within `START_SECONDS` (a child it
        forks later finds its stdout closed, and exits at its READY), or forked it and it died
        before opening the store. They said their write 'may or may not have been made', as
        the batches of a ready child that died do: it may have committed one."""
        name = self.writer.name
        if self.proc.forked is False:
            why = "could not be started (the writer zygote could not fork it)"
        elif self._given_up and not was_ready:
            why = (f"did not start (the writer zygote did not answer in "
                   f"{ZygoteChild.START_SECONDS:.0f} s)")
        elif not was_ready:
            why = "exited before it was ready"
        else:
            return Unavailable(f"the {name} writer process exited before answering; "
                               "the write may or may not have been made, retry")
        return Unavailable(f"the {name} writer process {why}; the write was not made, "
                           "a retry is safe")

    async def close(self, timeout: float) -> None:
        """Hand the child what it has not taken yet, close its stdin, and wait for it to answer
        it all and exit, `timeout` seconds each. A child not ready yet has `timeout` for the
        whole (its start, then its batches, which wait here until then): when they waited in
        its pipe, its start counted in the wait for its exit."""
        self._closing = True
        began, ready = self.loop.time(), self.ready.done()
        if self.outbox and not self.gone.done():  # hand over what the pipe has not taken yet
            self._drained = self.loop.create_future()
            try:
                await asyncio.wait_for(asyncio.shield(self._drained), timeout)
            except TimeoutError:
                logger.error("the %s writer process took no input for %.0f s", self.writer.name,
                             timeout)
        if not self.gone.done():
            self.loop.remove_writer(self.to_child)
            self.proc.stdin.close()  # end of file: the child answers what it has, then exits
            left = timeout if ready else max(0.0, began + timeout - self.loop.time())
            try:
                await asyncio.wait_for(asyncio.shield(self.gone), left)
            except TimeoutError:
                logger.error("the %s writer process did not stop in %.0f s; killing it",
                             self.writer.name, timeout)
                self.proc.kill()
                await self.gone
        try:
            await asyncio.to_thread(self.proc.wait, _REPORT_SECONDS)
        except subprocess.TimeoutExpired:
            logger.warning("the %s writer process stopped, but the writer zygote has not reported "
                           "its exit in %.0f s (stopped?)", self.writer.name, _REPORT_SECONDS)


@dataclass
class _FunctionRunner:
    """An `AdaptiveBatcher` runner for one function of a `WriterProcess`."""

    writer: WriterProcess
    function: str
    concurrency: int

    @property
    def name(self) -> str:
        return self.function

    def start(self, loop: asyncio.AbstractEventLoop, queries: list, done: Done) -> None:
        self.writer.start(loop, self.function, queries, done)

    async def close(self) -> None:
        """Nothing to do: the writer's owner closes it, after every batcher that uses it."""

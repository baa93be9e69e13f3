"""The child side of a writer process (`server.batching.process_runner`).

    python -m server.batching.child MODULE:FACTORY STORE_JSON   (started by WriterProcess only)

Frames (`server.batching.frames`) carry `(seq, function, queries)` in and `(seq, results)` out;
a `READY` frame says the store is open. The child keeps the frames it has read in arrival
order (`bulk.Waiting`). Before each call it takes every frame already in the pipe (waiting for
one only when it holds none), then runs the waiting frames of one function as one call, so
batches that queued while it committed share the next transaction and fsync (and one query that
fails the call fails all of them). Frames of a `Bulk` function give way to the others (a
bounded number of calls) and run at most `per_call` queries a call. Each call's answers are
written as soon as it returns; at end of file it answers every frame it holds, then exits.

It ignores SIGINT, SIGTERM and SIGHUP and exits when its stdin closes: the server closed it or
died. (SIGHUP too: a reload meant for the server, `pkill -HUP -f "python -m server"`, matches
this process's command line as well.)
"""
from __future__ import annotations

import importlib
import json
import os
import pickle
import select
import signal
import sys
from collections.abc import Callable, Sequence

from ..errors import TailorError
from ..logging import configure_logging
from .bulk import Waiting
from .frames import HEADER, READY, PipeReader, frame, take_frames
from .logging import child_logger as logger
from .logging import log_failed_batch

__all__ = ["main"]


class _Inbox:
    """Frames from the server: wait for one, then take every other one already there."""

    def __init__(self, fd: int):
        self.reader = PipeReader(fd)
        self.eof = False

    def take(self, wait: bool) -> list:
        """The frames the pipe holds now; with `wait`, at least one unless stdin is closed."""
        reader = self.reader
        frames = take_frames(reader.buf)
        # Read (blocking, if asked to wait) while there is no whole frame yet, then only while
        # more is waiting.
        while not self.eof and ((wait and not frames) or select.select([reader.fd], [], [], 0)[0]):
            self.eof = not reader.fill()
            frames += take_frames(reader.buf)
        if self.eof and reader.buf:
            logger.error("stdin closed inside a frame: %d bytes dropped", len(reader.buf))
            reader.buf.clear()
        return frames


def _run(fn: Callable[[Sequence], Sequence], frames: list) -> list[tuple[int, list]]:
    """One call of `fn` for every query of `frames`; (seq, results) per frame."""
    queries = [q for _, _, qs in frames for q in qs]
    try:
        results = list(fn(queries))
        if len(results) != len(queries):
            raise RuntimeError(f"batch function returned {len(results)} results for {len(queries)}")
    except Exception as err:  # noqa: BLE001 - every query of the call gets the error
        log_failed_batch(logger, f"batch of {len(queries)}", err)
        results = [err] * len(queries)
    out, at = [], 0
    for seq, _, qs in frames:
        out.append((seq, results[at:at + len(qs)]))
        at += len(qs)
    return out


def _portable(answer: tuple[int, list]) -> bytes:
    """The answer's frame. A result that would not come back out of pickle is replaced by an
    error with its message (and its gRPC status, for a domain error)."""
    try:  # the usual case: the whole answer pickles, and comes back out
        data = frame(answer)
        pickle.loads(data[HEADER.size:])
        return data
    except Exception:  # noqa: BLE001 - whatever pickling raises; find the results at fault
        pass
    seq, results = answer
    return frame((seq, [r if _round_trips(r) else _stand_in(r) for r in results]))


def _round_trips(obj) -> bool:
    try:
        pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))
        return True
    except Exception:  # noqa: BLE001 - whatever pickling raises
        return False


def _stand_in(obj) -> Exception:
    message = f"{type(obj).__name__}: {obj}"
    if isinstance(obj, TailorError):
        err = TailorError(message)
        err.status = obj.status
        return err
    return RuntimeError(message)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _unknown(function: str, factory: str) -> Callable[[Sequence], Sequence]:
    def fail(queries):
        raise KeyError(f"{factory} has no batch function {function!r}")
    return fail


def main(argv: Sequence[str]) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # stop when the server closes stdin, not before
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)  # a reload is the server's, not this process's
    out = os.dup(1)
    os.dup2(2, 1)  # a stray print goes to stderr, never into the frames
    configure_logging()
    from ..store import Store

    factory, store_args = argv
    module, _, attr = factory.partition(":")
    functions = getattr(importlib.import_module(module), attr)(Store(**json.loads(store_args)))
    try:
        _write_all(out, frame((READY, None)))
    except BrokenPipeError:  # the server gave up on this child before it was ready, or died
        return
    inbox, waiting = _Inbox(sys.stdin.fileno()), Waiting(functions)
    while True:
        waiting.add(inbox.take(wait=not waiting))
        if not waiting:
            break  # stdin closed and every frame answered
        run = waiting.take()
        function = run[0][1]
        answers = _run(functions.get(function) or _unknown(function, factory), run)
        _write_all(out, b"".join(_portable(a) for a in answers))


if __name__ == "__main__":
    main(sys.argv[1:])

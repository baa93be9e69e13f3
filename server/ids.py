"""Random ids (request ids, decision ids) without a system call for each one."""
from __future__ import annotations

import os
import threading
import weakref

__all__ = ["RandomIds"]

_LIVE: weakref.WeakSet[RandomIds] = weakref.WeakSet()


class RandomIds:
    """Hex ids of `nbytes` random bytes each, cut from one `os.urandom` call per `batch` ids.

    `os.urandom` releases the GIL: on the event loop under load, each call can wait up to a
    switch interval to win it back from a batch thread. A forked process (a writer child,
    forked from `server.batching.zygote_process`) drops the buffer it inherited, so no two
    processes hand out the same ids.
    """

    def __init__(self, nbytes: int, batch: int = 256):
        self._width = 2 * nbytes
        self._draw = nbytes * batch
        self._lock = threading.Lock()
        self._buf = ""
        self._pos = 0
        _LIVE.add(self)

    def __call__(self) -> str:
        with self._lock:
            if self._pos >= len(self._buf):
                self._buf, self._pos = os.urandom(self._draw).hex(), 0
            start = self._pos
            self._pos += self._width
            return self._buf[start:self._pos]


def _forget_after_fork() -> None:
    for ids in list(_LIVE):
        ids._lock = threading.Lock()  # a thread of the parent may have held it
        ids._buf, ids._pos = "", 0


os.register_at_fork(after_in_child=_forget_after_fork)
